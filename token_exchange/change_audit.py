"""Audit rows for every change to impersonator grants, client keys, client policies and the
security-relevant fields of applications.

(Filled in by the trust work: see docs/admin.md.)
"""

from __future__ import annotations


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""

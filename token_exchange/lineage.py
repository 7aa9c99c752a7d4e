"""Which actor authorization each impersonated token descends from, and what ends with it.

(Filled in by the trust work: see docs/impersonation.md.)
"""

from __future__ import annotations


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""

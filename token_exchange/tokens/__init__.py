"""Readers for incoming tokens.

Each reader takes the raw parameter value and returns a :class:`VerifiedToken`, or raises a
``Refusal`` with a reason code. Nothing downstream ever sees the raw token again.
"""

from __future__ import annotations

from .access_token import load_access_token
from .base import VerifiedToken, access_token_claims
from .registry import read_token

__all__ = ["VerifiedToken", "access_token_claims", "load_access_token", "read_token"]

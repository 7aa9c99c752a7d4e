"""Readers for incoming tokens.

Each reader takes the raw parameter value and returns a :class:`VerifiedToken`, or raises a
``Refusal`` with a reason code. Nothing downstream ever sees the raw token again.
"""

from __future__ import annotations

from token_exchange.tokens.access_token import load_access_token
from token_exchange.tokens.base import VerifiedToken, access_token_claims
from token_exchange.tokens.registry import read_token

__all__ = ["VerifiedToken", "access_token_claims", "load_access_token", "read_token"]

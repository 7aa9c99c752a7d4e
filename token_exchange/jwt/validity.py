"""When a JWT may be used: its ``exp``, ``iat`` and ``nbf`` (RFC 7519 §4.1.4-4.1.6), the same for
every JWT this server reads (a client's, a trusted issuer's). Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def numeric_date(value: object) -> float | None:
    """RFC 7519 §2 NumericDate: a finite JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an int beyond 1e308 overflows
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def refusal(
    claims: Mapping[str, Any], *, now: float, leeway: int, max_lifetime: float
) -> tuple[str | None, float, float]:
    """Why ``claims`` are not usable at ``now`` (within ``leeway``), or None; with ``exp`` and
    ``iat`` (0 when refused before they were read). ``exp`` and ``iat`` present, ``exp`` not
    passed, ``iat`` and ``nbf`` not in the future, ``exp - iat`` positive and at most
    ``max_lifetime``."""
    exp = numeric_date(claims.get("exp"))
    iat = numeric_date(claims.get("iat"))
    if exp is None or iat is None:
        return "missing_exp_or_iat", 0.0, 0.0
    if exp <= now - leeway:
        return "expired", exp, iat
    if iat > now + leeway:
        return "issued_in_the_future", exp, iat
    if "nbf" in claims:
        nbf = numeric_date(claims["nbf"])
        if nbf is None or nbf > now + leeway:
            return "not_yet_valid", exp, iat
    if exp <= iat or exp - iat > max_lifetime:
        return "lifetime_too_long", exp, iat
    return None, exp, iat

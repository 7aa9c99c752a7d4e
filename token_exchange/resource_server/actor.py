"""Who is acting behind a bearer token, as a resource server verifies it (the guard's view there).

On an authorization server the guard looks ``act`` up in the token tables. A resource server has
none to look in: when no class of ours authenticated the request (DOT's ``OAuth2TokenMiddleware``
with its ``OAuth2Backend``, ``ProtectedResourceView``, ``protected_resource``, a guard placed
before the authentication), the empty tables would say "nobody is acting" about every token.
So here each bearer value is verified the way this resource server verifies tokens: offline
against the JWKS for RFC 9068 JWTs, and by introspection (its cached answer first) when DOT's
validator is the ``IntrospectionValidator``. Then:

- a valid token answers its ``act`` (``None``: nobody acts for its subject);
- a token that cannot be verified now (the authorization server or its JWKS unreachable, the
  resource server misconfigured) answers :data:`UNVERIFIED_ACTOR`: it may be impersonated, so
  the guard refuses it (fail closed);
- a token that is simply invalid (expired, revoked, forged, for another audience) authenticates
  nobody and answers ``None``: the authentication refuses it, not the guard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from token_exchange.resource_server.site import introspection_validator_configured
from token_exchange.resource_server.tokens import UNVERIFIABLE, InvalidToken, VerifiedAccessToken

UNVERIFIED_ACTOR: dict[str, Any] = {"sub": None, "unverified": True}


def unverified_actor() -> dict[str, Any]:
    """What the guard reads as ``act`` of a token it could not verify: not ``None``, so every
    check written as ``get_actor(request) is not None`` (or as its truth) refuses. A new dict
    each time, so no view can change what the next request reads."""
    return dict(UNVERIFIED_ACTOR)


def _verifiers() -> list[Callable[[str], VerifiedAccessToken]]:
    verifiers: list[Callable[[str], VerifiedAccessToken]] = []
    try:
        from token_exchange.resource_server.jwt_access_token import verify_jwt_access_token
    except ImportError:  # no PyJWT (the extra): this site verifies no JWTs offline
        pass
    else:
        # First: its header is read without any request, so only at+jwt tokens cost a signature
        # check (and the JWKS fetch of its interval), and a valid one needs no introspection.
        verifiers.append(verify_jwt_access_token)
    if introspection_validator_configured():
        from token_exchange.resource_server.introspection import introspect

        verifiers.append(introspect)
    return verifiers


def bearer_actor(value: str) -> dict[str, Any] | None:
    """``act`` of the bearer token ``value`` as this resource server verifies it (module docs)."""
    unverifiable = False
    for verify in _verifiers():
        try:
            return verify(value).act
        except InvalidToken as refusal:
            unverifiable = unverifiable or refusal.description == UNVERIFIABLE
    return unverified_actor() if unverifiable else None

"""What a separate resource server installs: docs/resource-servers.md.

Two ways to verify the bearer tokens this package's authorization server issues, each ending in
the same :class:`VerifiedAccessToken` (with ``act``) and :class:`TokenUser`:

- ``IntrospectionValidator``: DOT's introspection mode (``RESOURCE_SERVER_INTROSPECTION_URL``),
  asking the authorization server (RFC 7662), answers cached for seconds;
- ``verify_jwt_access_token`` (DRF: ``token_exchange.contrib.rest_framework.JWTAccessTokenAuthentication``,
  plain views: ``jwt_access_token_required``): RFC 9068 JWT access tokens verified offline
  against the issuer's JWKS. Needs the ``resource_server`` extra (PyJWT).

Names are imported on first use (PEP 562), so an authorization server without PyJWT can import
this package, and its system checks run, without the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from token_exchange.resource_server.decorators import (
        introspected_access_token_required,
        jwt_access_token_required,
    )
    from token_exchange.resource_server.introspection import IntrospectionValidator, introspect
    from token_exchange.resource_server.jwt_access_token import verify_jwt_access_token
    from token_exchange.resource_server.tokens import InvalidToken, TokenUser, VerifiedAccessToken

__all__ = [
    "IntrospectionValidator",
    "InvalidToken",
    "TokenUser",
    "VerifiedAccessToken",
    "introspect",
    "introspected_access_token_required",
    "jwt_access_token_required",
    "verify_jwt_access_token",
]

_MODULES = {
    "IntrospectionValidator": "introspection",
    "introspect": "introspection",
    "InvalidToken": "tokens",
    "TokenUser": "tokens",
    "VerifiedAccessToken": "tokens",
    "introspected_access_token_required": "decorators",
    "jwt_access_token_required": "decorators",
    "verify_jwt_access_token": "jwt_access_token",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

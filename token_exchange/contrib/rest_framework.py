"""Django REST framework helpers: keep impersonated tokens out, read who is acting, and verify
RFC 9068 JWT access tokens on a separate resource server.

    from oauth2_provider.contrib.rest_framework import OAuth2Authentication
    from token_exchange.contrib.rest_framework import NotImpersonated, get_actor

    class SettingsView(APIView):
        authentication_classes = [OAuth2Authentication]
        permission_classes = [IsAuthenticated, NotImpersonated]

On a resource server in another process, ``JWTAccessTokenAuthentication`` (offline, against
the issuer's JWKS) or DOT's ``OAuth2Authentication`` with
``token_exchange.resource_server.IntrospectionValidator`` (introspection): ``NotImpersonated``
works on both (docs/resource-servers.md).

Requires the ``rest_framework`` extra (``pip install django-token-exchange[rest_framework]``);
``JWTAccessTokenAuthentication`` also the ``resource_server`` extra (PyJWT), imported only when
it authenticates.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from token_exchange.impersonation.guard import REFUSAL, get_actor
from token_exchange.resource_server.decorators import REALM, bearer_token, challenge
from token_exchange.resource_server.site import introspection_validator_configured
from token_exchange.resource_server.tokens import (
    INVALID,
    InvalidToken,
    TokenUser,
    VerifiedAccessToken,
    token_user,
)

__all__ = ["JWTAccessTokenAuthentication", "NotImpersonated", "get_actor"]


class NotImpersonated(BasePermission):  # type: ignore[misc]
    """Refuses (403) requests whose OAuth2 access token carries an ``act`` claim."""

    message = REFUSAL["error_description"]
    code = REFUSAL["error"]

    def has_permission(self, request: Any, view: Any) -> bool:
        return get_actor(request) is None


class JWTAccessTokenAuthentication(OAuth2Authentication):  # type: ignore[misc]
    """``Authorization: Bearer <RFC 9068 JWT access token>``, verified offline.

    Authenticates as ``(TokenUser, VerifiedAccessToken)``: ``request.user.pk`` is ``sub``,
    ``request.auth`` has ``scope``, ``client_id``, ``aud`` and ``act``. It is an
    ``OAuth2Authentication`` (with its own ``authenticate``), because that is how DOT's
    permissions tell an OAuth2 request: ``IsAuthenticatedOrTokenHasScope`` checks the token's
    scope only for those, and would let any other authenticated request through unchecked.
    DOT's ``TokenHasScope`` and ``TokenHasReadWriteScope`` work on it too.

    No ``Authorization: Bearer`` header: ``None``, so the next authentication class may try. A
    token refused for any reason: 401 with ``WWW-Authenticate: Bearer error="invalid_token",
    error_description="..."`` (RFC 6750 §3), never a 500. A token an authentication class before
    this one already refused (DOT's ``OAuth2Authentication`` with the ``IntrospectionValidator``
    leaves its refusal in ``request.oauth2_error``): refused here as well, since the
    authorization server's "not active" (revoked, ended) outranks a signature that still verifies.
    With DOT's own validator an earlier refusal only says DOT has no row for the token, and this
    class verifies it as usual.
    """

    www_authenticate_realm = REALM

    def authenticate(self, request: Any) -> tuple[TokenUser | None, VerifiedAccessToken] | None:
        value = bearer_token(request)
        if value is None:
            return None
        earlier = getattr(request, "oauth2_error", None)
        # Only the IntrospectionValidator's refusal is the authorization server's word; DOT's own
        # validator refuses every JWT it has no row for, which says nothing about this one.
        if isinstance(earlier, dict) and earlier.get("error") and introspection_validator_configured():
            # Fail closed: no second opinion on a token the authorization server turned down.
            raise AuthenticationFailed(earlier.get("error_description") or INVALID, code=earlier["error"])
        from token_exchange.resource_server.jwt_access_token import verify_jwt_access_token

        try:
            if not value:
                raise InvalidToken(description=INVALID)
            token = verify_jwt_access_token(value)
        except InvalidToken as refusal:
            # DOT's name: OAuth2Authentication.authenticate_header reads it too, should it come first.
            request.oauth2_error = OrderedDict(
                [("error", refusal.error), ("error_description", refusal.description)]
            )
            raise AuthenticationFailed(refusal.description, code=refusal.error) from None
        return token_user(token), token

    def authenticate_header(self, request: Any) -> str:
        error = getattr(request, "oauth2_error", None) or {}
        return challenge(error.get("error"), error.get("error_description"))

"""Plain Django views of a resource server: the bearer token verified, or an RFC 6750 §3 answer.

    @jwt_access_token_required(scopes=["read"])
    @refuse_impersonated
    def settings_view(request): ...

The decorator goes outside ``refuse_impersonated``: it authenticates first, and the guard then
reads the verified token's ``act``. Missing token: 401 with a bare ``Bearer`` challenge (RFC 6750
§3.1: no error code); a token refused: 401 ``invalid_token``; a valid token without a required
scope: 403 ``insufficient_scope``. The challenge is also what DRF answers, so clients see one
format.

Behind DOT's own ``protected_resource`` (which does not hand the view the verified token), or
placed outside these decorators, ``refuse_impersonated`` verifies the token itself
(``resource_server.actor``): it refuses all the same, at the cost of a second verification
(a cache hit for introspection, a signature check offline).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from token_exchange.resource_server.tokens import INVALID, InvalidToken, VerifiedAccessToken, token_user

View = Callable[..., HttpResponse]
REALM = "api"


def _quoted(value: str) -> str:
    """An RFC 7230 quoted-string: no way out of the quotes, no header injection."""
    value = value.replace("\r", "").replace("\n", "")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    """The ``WWW-Authenticate`` value of RFC 6750 §3."""
    params = [("realm", REALM)]
    if error:
        params.append(("error", error))
    if description:
        params.append(("error_description", description))
    if scope:
        params.append(("scope", scope))
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params)


def bearer_token(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1); ``None`` without one,
    ``""`` for a malformed one. Only the header: a token in a URL ends up in logs."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    parts = header.split()
    if not parts or parts[0].lower() != "bearer":
        return None
    return parts[1] if len(parts) == 2 else ""


def unauthorized(refusal: InvalidToken | None) -> HttpResponse:
    if refusal is None:
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = challenge()
        return response
    response = JsonResponse({"error": refusal.error, "error_description": refusal.description}, status=401)
    response["WWW-Authenticate"] = challenge(refusal.error, refusal.description)
    return response


def insufficient_scope(scopes: Collection[str]) -> HttpResponse:
    description = "The access token lacks a scope this resource requires."
    scope = " ".join(scopes)
    response = JsonResponse(
        {"error": "insufficient_scope", "error_description": description, "scope": scope}, status=403
    )
    response["WWW-Authenticate"] = challenge("insufficient_scope", description, scope)
    return response


def _required(
    verify: Callable[[str], VerifiedAccessToken], view: View | None, scopes: Collection[str] | None
) -> Any:
    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            value = bearer_token(request)
            if value is None:
                return unauthorized(None)
            try:
                if not value:
                    raise InvalidToken(description=INVALID)
                token = verify(value)
            except InvalidToken as refusal:
                return unauthorized(refusal)
            if scopes and not token.allow_scopes(scopes):
                return insufficient_scope(scopes)
            # What DRF and DOT name them, so get_actor, NotImpersonated and views find them.
            request.auth = token  # type: ignore[attr-defined]
            request.access_token = token  # type: ignore[attr-defined]
            request.user = token_user(token)  # type: ignore[assignment]
            return view(request, *args, **kwargs)

        # A bearer token is no ambient credential a browser sends by itself: CSRF does not apply,
        # and a request without one is refused above.
        return csrf_exempt(wrapped)

    return decorate(view) if view is not None else decorate


def jwt_access_token_required(view: View | None = None, *, scopes: Collection[str] | None = None) -> Any:
    """Verify an RFC 9068 JWT access token offline (``verify_jwt_access_token``) before the view."""
    from token_exchange.resource_server.jwt_access_token import verify_jwt_access_token

    return _required(verify_jwt_access_token, view, scopes)


def introspected_access_token_required(
    view: View | None = None, *, scopes: Collection[str] | None = None
) -> Any:
    """Ask the authorization server about the token (``IntrospectionValidator``'s way) before the view."""
    from token_exchange.resource_server.introspection import introspect

    return _required(introspect, view, scopes)

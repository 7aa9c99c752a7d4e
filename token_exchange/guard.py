"""Keeping impersonated tokens out of privileged places.

ZITADEL refuses impersonated tokens on its own API, so an impersonator can never act as an
instance owner there. Sites do the same for their privileged views with the
``refuse_impersonated`` decorator, DRF's ``token_exchange.contrib.rest_framework.NotImpersonated``
permission, or, for whole URL prefixes (default: the admin), ``ImpersonationGuardMiddleware``.
Each answers 403 to a bearer token carrying ``act``. ``get_actor(request)`` tells any view who is
acting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse

from .conf import token_exchange_settings
from .tokens import access_token_claims, load_access_token

REFUSAL = {
    "error": "access_denied",
    "error_description": "Impersonated tokens cannot be used here.",
}


def bearer_token(request: Any) -> Any:
    """The request's access token row: the one DOT or DRF already loaded, else the bearer header."""
    for attribute in ("auth", "access_token"):
        token = getattr(request, attribute, None)
        if token is not None and hasattr(token, "token_checksum"):
            return token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return load_access_token(value.strip())


def token_actor(token: Any) -> dict[str, Any] | None:
    """The ``act`` claim of an access token row, or ``None``."""
    if token is None:
        return None
    act: dict[str, Any] | None = access_token_claims(token)["act"]
    return act


def get_actor(request: Any) -> dict[str, Any] | None:
    """Who is acting behind the request's bearer token (its ``act`` claim), or ``None``."""
    if not hasattr(request, "_token_exchange_actor"):
        request._token_exchange_actor = token_actor(bearer_token(request))
    return request._token_exchange_actor  # type: ignore[no-any-return]


def forbidden() -> JsonResponse:
    return JsonResponse(REFUSAL, status=403)


def refuse_impersonated(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """View decorator: 403 for a request whose bearer token carries ``act``."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if get_actor(request) is not None:
            return forbidden()
        return view(request, *args, **kwargs)

    return wrapped


def privileged_prefixes() -> tuple[str, ...]:
    configured = token_exchange_settings.PRIVILEGED_URL_PREFIXES
    if configured is not None:
        return configured
    try:
        return (reverse("admin:index"),)
    except NoReverseMatch:
        return ()


class ImpersonationGuardMiddleware:
    """403 for impersonated bearer tokens under ``PRIVILEGED_URL_PREFIXES`` (default: the admin).

    Matters wherever a bearer token can log a user in, e.g. with DOT's ``OAuth2TokenMiddleware``:
    without this guard an impersonator's token for a staff customer would open the admin.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(privileged_prefixes()) and get_actor(request) is not None:
            return forbidden()
        return self.get_response(request)

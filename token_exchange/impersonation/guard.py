"""Keeping impersonated tokens out of privileged places.

ZITADEL refuses impersonated tokens on its own API, so an impersonator can never act as an
instance owner there. Sites do the same for their privileged views with the
``refuse_impersonated`` decorator, DRF's ``token_exchange.contrib.rest_framework.NotImpersonated``
permission, or, for whole URL prefixes (default: the admin), ``ImpersonationGuardMiddleware``.
Each answers 403 to a bearer token carrying ``act``. ``get_actor(request)`` tells any view who is
acting.

The guard looks wherever DOT and oauthlib look for a bearer token, and fails closed: the
``Authorization`` header (any whitespace after ``Bearer``), an ``access_token`` query or form
parameter, and ID tokens as well as access tokens (DOT accepts ID tokens as bearer tokens
when OpenID Connect is on). If any of them carries ``act``, the request is impersonated. On a
separate resource server the tokens are verified as it verifies them (introspection or the
issuer's JWKS): there a token that cannot be verified now counts as impersonated too.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, get_script_prefix, reverse
from oauth2_provider.models import get_id_token_model

from token_exchange.conf import token_exchange_settings
from token_exchange.jwt import jose
from token_exchange.models import ExchangedToken
from token_exchange.resource_server.actor import bearer_actor, unverified_actor
from token_exchange.resource_server.site import is_resource_server, resource_server_only
from token_exchange.resource_server.tokens import VerifiedAccessToken
from token_exchange.tokens import access_token_claims, load_access_token

REFUSAL = {
    "error": "access_denied",
    "error_description": "Impersonated tokens cannot be used here.",
}


_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


# A request names one bearer token (RFC 6750 §2); the guard looks at no more than this many
# different ones. One with more counts as impersonated, so a thousand query or form values cost
# neither a thousand lookups here nor, on a resource server, a thousand introspection requests.
MAX_BEARER_VALUES = 3


def header_bearer(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), or None."""
    parts = request.headers.get("Authorization", "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return str(parts[1])
    return None


def bearer_values(request: Any) -> list[str]:
    """Every place a bearer token can travel in, as oauthlib reads them (RFC 6750 §2), each
    different value once."""
    values: list[str] = []
    header = header_bearer(request)
    if header:
        values.append(header)
    values.extend(request.GET.getlist("access_token"))
    # DOT reads the form body of any POST (urlencoded or multipart) for oauthlib.
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        values.extend(request.POST.getlist("access_token"))
    return list(dict.fromkeys(value for value in values if value))


def _id_token_act(value: str) -> dict[str, Any] | None:
    """``act`` recorded for an ID token, found by its (unverified) ``jti``.

    No signature check is needed to refuse: a forged token that names an impersonated ID
    token's ``jti`` is refused too, which is what failing closed means.
    """
    try:
        _header, claims = jose.peek(value)
        jti = uuid.UUID(str(claims.get("jti", "")))
    except (jose.JoseError, ValueError, TypeError):
        return None
    return token_actor(get_id_token_model().objects.filter(jti=jti).first())


def token_actor(token: Any) -> dict[str, Any] | None:
    """The ``act`` of an access token row or an ID token row (what DOT authenticated), or of a
    resource server's :class:`~token_exchange.resource_server.VerifiedAccessToken`; or ``None``."""
    if token is None:
        return None
    if isinstance(token, VerifiedAccessToken):
        return token.act
    if hasattr(token, "token_checksum"):
        act: dict[str, Any] | None = access_token_claims(token)["act"]
        return act
    if isinstance(token, get_id_token_model()):
        record = ExchangedToken.objects.filter(id_token=token).only("act").first()
        return record.act if record is not None else None
    return None


def value_actor(value: str) -> dict[str, Any] | None:
    """The ``act`` of a bearer token value: an access token (opaque or JWT) or an ID token."""
    token = load_access_token(value)
    if token is not None:
        return token_actor(token)
    if value.count(".") == 2:
        return _id_token_act(value)
    return None


def get_actor(request: Any) -> dict[str, Any] | None:
    """Who is acting behind the request's bearer token (its ``act`` claim), or ``None``.

    Looks at the token DOT or DRF already authenticated (``request.auth``,
    ``request.access_token``) and at every bearer token the request carries; the first ``act``
    found wins. A resource server's ``VerifiedAccessToken`` there is authoritative: its ``act``
    is the answer. Otherwise, on an authorization server, each token is looked up in its token
    tables; on a resource server (``resource_server.site.is_resource_server``), each is verified
    as the resource server verifies tokens (``resource_server.actor``): a token that cannot be
    verified now counts as impersonated. A site that is both does both.
    """
    # The verified token is all there is to know: its act decides, even when a middleware
    # looked earlier, before authentication.
    for attribute in ("auth", "access_token"):
        verified = getattr(request, attribute, None)
        if isinstance(verified, VerifiedAccessToken):
            return verified.act
    if hasattr(request, "_token_exchange_actor"):
        return request._token_exchange_actor  # type: ignore[no-any-return]
    act = None
    values = bearer_values(request)
    for attribute in ("auth", "access_token"):
        # What DOT authenticated: a row already loaded (no query for anything else).
        act = act or token_actor(getattr(request, attribute, None))
    if len(values) > MAX_BEARER_VALUES:
        act = act or unverified_actor()
        values = []
    if is_resource_server():
        # A resource server authenticates the Authorization header only: a token anywhere else is
        # one it never verifies, so it is not asked about (no request to the authorization
        # server) and counts as impersonated.
        header = header_bearer(request)
        if any(value != header for value in values):
            act = act or unverified_actor()
        elif header:
            act = act or bearer_actor(header)
    # A resource server only has no token rows (and may have no tables at all): nothing to ask.
    if not resource_server_only():
        for value in values:
            act = act or value_actor(value)
    request._token_exchange_actor = act
    return act


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
    """Prefixes of ``request.path_info``: the site's own paths, below the script name a proxy or
    WSGI server mounts it at (``/app/`` of ``/app/admin/``), as ``urls.py`` writes them."""
    configured = token_exchange_settings.PRIVILEGED_URL_PREFIXES
    if configured is not None:
        return configured
    try:
        admin = reverse("admin:index")  # with the script prefix of the running request
    except NoReverseMatch:
        return ()
    script_prefix = get_script_prefix()
    return ("/" + admin.removeprefix(script_prefix) if admin.startswith(script_prefix) else admin,)


class ImpersonationGuardMiddleware:
    """403 for impersonated bearer tokens under ``PRIVILEGED_URL_PREFIXES`` (default: the admin).

    Matters wherever a bearer token can log a user in, e.g. with DOT's ``OAuth2TokenMiddleware``:
    without this guard an impersonator's token for a staff customer would open the admin. Place
    it before the authentication middlewares, so it answers before they act on the token. On a
    resource server it verifies the tokens itself (``get_actor``); there name the prefixes in
    ``PRIVILEGED_URL_PREFIXES``, as a resource server usually has no admin.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(privileged_prefixes()) and get_actor(request) is not None:
            return forbidden()
        return self.get_response(request)

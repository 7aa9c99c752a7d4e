"""DOT's introspection mode, with the answers a token exchange needs kept: ``act`` and ``aud``.

DOT's own ``OAuth2Validator`` in resource-server mode stores every active answer as a local
``AccessToken`` row for up to ``RESOURCE_SERVER_TOKEN_CACHING_SECONDS`` (ten hours by default),
keeping the scope and the audience but dropping ``act`` and ``iss``: behind it no guard can tell
an impersonated token, and a token revoked at the authorization server works on for hours.

:class:`IntrospectionValidator` replaces only the public ``validate_bearer_token`` of oauthlib's
``RequestValidator``: it POSTs the token to ``RESOURCE_SERVER_INTROSPECTION_URL`` (RFC 7662
§2.1) with ``RESOURCE_SERVER_INTROSPECTION_CREDENTIALS`` or ``RESOURCE_SERVER_AUTH_TOKEN``,
accepts only ``"active": true`` answers of our ``ISSUER`` naming our ``RESOURCE_URI`` in
``aud``, unexpired, and keeps them in Django's cache (never the database) for at most
``INTROSPECTION_CACHE_SECONDS``, under the SHA-256 of the token, never the token itself. That
is also how long a revoked token can still pass here. The POST is :mod:`.download`'s: no
redirect followed, ``TIMEOUT_SECONDS`` for the whole answer, at most 1 MB of it read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote_plus

from django.core.cache import caches
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings

from token_exchange.conf import ResourceServerSettings, token_exchange_settings
from token_exchange.resource_server import download
from token_exchange.resource_server.tokens import (
    EXPIRED,
    INVALID,
    NOT_FOR_US,
    UNVERIFIABLE,
    InvalidToken,
    VerifiedAccessToken,
    from_claims,
    token_user,
)

logger = logging.getLogger("token_exchange")

CACHE_KEY_PREFIX = "token_exchange.resource_server.introspection:"


def cache_key(token: str) -> str:
    """Where an answer about ``token`` is cached: a hash, so the cache holds no usable token."""
    return CACHE_KEY_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def _headers() -> dict[str, str] | None:
    """DOT's settings for how a resource server authenticates to the introspection endpoint."""
    bearer = oauth2_settings.RESOURCE_SERVER_AUTH_TOKEN
    if bearer:
        return {"Authorization": f"Bearer {bearer}"}
    credentials = oauth2_settings.RESOURCE_SERVER_INTROSPECTION_CREDENTIALS
    if credentials:
        # RFC 6749 §2.3.1: each part form-urlencoded, then joined and base64-encoded.
        client_id, secret = (quote_plus(str(part)) for part in credentials)
        encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}
    return None


def _ask(token: str, config: ResourceServerSettings) -> Any:
    """The authorization server's answer about ``token`` (RFC 7662 §2.2), or InvalidToken."""
    url = oauth2_settings.RESOURCE_SERVER_INTROSPECTION_URL
    headers = _headers()
    if not url or headers is None:
        logger.error(
            "Access token refused: RESOURCE_SERVER_INTROSPECTION_URL and its credentials are not set"
        )
        raise InvalidToken(description=UNVERIFIABLE)
    try:
        body = download.fetch(
            "POST",
            url,
            data={"token": token},
            headers={**headers, "Accept": "application/json"},
            timeout=config["TIMEOUT_SECONDS"],
        )
    except download.DownloadError as error:
        logger.warning("Introspection at %s %s", url, error)
        raise InvalidToken(description=UNVERIFIABLE) from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        logger.warning("Introspection at %s answered something that is not JSON", url)
        raise InvalidToken(description=UNVERIFIABLE) from None


def verified(answer: Any, config: ResourceServerSettings) -> VerifiedAccessToken:
    """An introspection answer checked as a JWT access token would be: active, our issuer, our
    audience, unexpired. Applied to cached answers too."""
    if not isinstance(answer, dict) or answer.get("active") is not True:
        logger.info("Access token refused: introspection says it is not active")
        raise InvalidToken(description=INVALID)
    if answer.get("iss") != config["ISSUER"]:
        logger.info("Access token refused: introspection names issuer %.100r", answer.get("iss"))
        raise InvalidToken(description=NOT_FOR_US)
    aud = answer.get("aud")
    audience = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if config["RESOURCE_URI"] not in audience:
        logger.info("Access token refused: %s is not in its audience", config["RESOURCE_URI"])
        raise InvalidToken(description=NOT_FOR_US)
    exp = answer.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        # Without exp nothing bounds how long the answer holds.
        logger.info("Access token refused: introspection answer without exp")
        raise InvalidToken(description=INVALID)
    if int(time.time()) >= exp + config["LEEWAY_SECONDS"]:  # integers: an exp of 10**400 is no float
        raise InvalidToken(description=EXPIRED)
    return from_claims(answer, leeway=config["LEEWAY_SECONDS"])


def _cache(config: ResourceServerSettings) -> Any:
    return caches[config["CACHE"]]


def introspect(token: str) -> VerifiedAccessToken:
    """The verified token, from the cache or from the authorization server; or InvalidToken."""
    config = token_exchange_settings.RESOURCE_SERVER
    if not config["ISSUER"] or not config["RESOURCE_URI"]:
        logger.error("Access token refused: TOKEN_EXCHANGE['RESOURCE_SERVER'] lacks ISSUER or RESOURCE_URI")
        raise InvalidToken(description=UNVERIFIABLE)
    key = cache_key(token)
    seconds = config["INTROSPECTION_CACHE_SECONDS"]
    cached = None
    if seconds:
        try:
            cached = _cache(config).get(key)
        except Exception:  # a cache that is down is a miss, not a 500
            logger.warning("Introspection cache %r could not be read", config["CACHE"], exc_info=True)
    if cached is not None:
        return verified(cached, config)
    answer = _ask(token, config)
    token_value = verified(answer, config)
    # Active answers only, never past the token's exp: an inactive one is asked again (it costs
    # the attacker of a token flood a request each, as it costs us).
    timeout = min(seconds, token_value.exp - int(time.time()))  # from_claims bounds exp
    if timeout > 0:
        try:
            _cache(config).set(key, answer, timeout)
        except Exception:
            logger.warning("Introspection cache %r could not be written", config["CACHE"], exc_info=True)
    return token_value


HEADER_ONLY = "The access token must be sent in the Authorization header."


def authorization_header_token(request: Any) -> str | None:
    """The token of oauthlib's request's ``Authorization: Bearer`` header, or ``None``: read as
    oauthlib's ``get_token_from_header`` reads it, without its parameter fallback."""
    headers = getattr(request, "headers", None) or {}
    parts = str(headers.get("Authorization", "")).split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


class IntrospectionValidator(OAuth2Validator):  # type: ignore[misc]
    """``OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"]`` of a resource server in DOT's introspection mode.

    DOT's ``OAuth2Authentication`` (DRF) and ``protected_resource`` reach here through oauthlib:
    a token this validator refuses is a 401 with ``WWW-Authenticate: Bearer
    error="invalid_token"`` (``request.oauth2_error``); one it accepts gives the view
    ``request.auth``/``request.access_token`` (a :class:`VerifiedAccessToken` with ``act``) and
    ``request.user`` (a :class:`TokenUser`).
    """

    def validate_bearer_token(self, token: str | None, scopes: Any, request: Any) -> bool:
        if not token:
            return False
        if token != authorization_header_token(request):
            # oauthlib falls back to an access_token query or form parameter (RFC 6750 §2.2,
            # §2.3) when the header has none: a token in a URL ends up in logs and histories,
            # and a form body is what a cross-site form posts. Only the header, as the offline
            # mode and the decorators read it.
            logger.info("Access token refused: not in the Authorization header")
            request.oauth2_error = OrderedDict(
                [("error", "invalid_request"), ("error_description", HEADER_ONLY)]
            )
            return False
        try:
            access_token = introspect(token)
        except InvalidToken as refusal:
            request.oauth2_error = OrderedDict(
                [("error", refusal.error), ("error_description", refusal.description)]
            )
            return False
        if not access_token.allow_scopes(scopes):
            request.oauth2_error = OrderedDict(
                [
                    ("error", "insufficient_scope"),
                    ("error_description", "The access token lacks a scope this resource requires."),
                    ("scope", " ".join(scopes)),
                ]
            )
            return False
        request.client = None  # no Application row here: the client is access_token.client_id
        request.client_id = access_token.client_id
        request.user = token_user(access_token)
        request.scopes = list(access_token.scopes)
        request.access_token = access_token
        return True

    def validate_jwt_bearer_token(self, token: str | None, scopes: Any, request: Any) -> bool:
        """With ``OIDC_ENABLED``, oauthlib hands every JWT-shaped bearer token here instead of to
        ``validate_bearer_token``; DOT's own would look for an ID token in this site's (empty)
        tables. A resource server asks the authorization server about it all the same."""
        return self.validate_bearer_token(token, scopes, request)

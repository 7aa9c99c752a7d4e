"""A trusted issuer's public keys: pasted into its row, or fetched from its ``jwks_uri``.

The fetch is the one place federation makes a request leave this server, and an attacker
controls when it happens (any token naming a trusted ``iss``) but never where: only the URI an
admin set, HTTPS (plain HTTP on loopback only where ``FEDERATION_ALLOW_HTTP_LOOPBACK`` says so),
through ``resource_server.download.fetch`` (no redirect followed, ``FEDERATION_TIMEOUT_SECONDS``
for the whole answer, at most :data:`MAX_JWKS_BYTES`). A token's ``jku``, ``x5u``, ``jwk`` and
``x5c`` are never read (``rules.header_refusal`` refuses them).

The keys live in Django's cache (``FEDERATION_CACHE``), shared by every process when the cache
is (Redis, Memcached), for :data:`JWKS_LIFESPAN_SECONDS`. Three more entries keep the issuer from
being asked too often, whatever the tokens say:

* ``…:kid``: a token naming a ``kid`` the cached set lacks (the issuer rotated its keys) makes
  one refetch, then no other for :data:`UNKNOWN_KID_REFETCH_SECONDS` (``cache.add``: one process
  wins). A flood of made-up ``kid`` values costs the issuer one request per interval.
* ``…:failed``: after a fetch that failed, none for :data:`FAILURE_BACKOFF_SECONDS`.
* ``…:fetching``: with nothing cached, one process fetches; the others wait for its answer, at
  most the fetch's timeout.

Any failure (no answer, a redirect, not 200, too big, too slow, not a key set, a cache that does
not answer) is a reason code, and the token is refused: never a 500, never another key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from django.core.cache import caches
from jwcrypto import jwk

from token_exchange.conf import token_exchange_settings
from token_exchange.models import TrustedIssuer
from token_exchange.resource_server import download
from token_exchange.trusted_issuers import PRIVATE_MEMBERS, fetchable, usable_public_key

logger = logging.getLogger("token_exchange")

JWKS_LIFESPAN_SECONDS = 300
UNKNOWN_KID_REFETCH_SECONDS = 30
FAILURE_BACKOFF_SECONDS = 30
# A key set of a few keys is a few kilobytes.
MAX_JWKS_BYTES = 256 * 1024
# How often a process waiting for another's fetch looks at the cache.
_WAIT_STEP_SECONDS = 0.05

# The key type (and curve) each algorithm signs with.
_KEY_TYPE = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}

UNAVAILABLE = "jwks_unavailable"
UNKNOWN_KID = "unknown_kid"
AMBIGUOUS_KEY = "ambiguous_key"


class _CacheDown(Exception):
    pass


def _cache_key(uri: str) -> str:
    return "te:federation:jwks:" + hashlib.sha256(uri.encode("utf-8")).hexdigest()


def public_keys(value: Any) -> list[dict[str, Any]]:
    """The public signing keys of a JWK Set (RSA of 2048 bits or more, and EC; a key that does not
    parse, has a private member, is too small or is for encryption is left out), as JWK dicts."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        return []
    keys = []
    for item in value["keys"]:
        if not isinstance(item, dict) or item.get("use") not in (None, "sig"):
            continue
        if item.get("kty") not in ("RSA", "EC") or set(item) & PRIVATE_MEMBERS:
            continue
        try:
            key = jwk.JWK(**item)
            usable = usable_public_key(key)
        except (jwk.InvalidJWKValue, ValueError, TypeError):
            continue
        if usable:
            keys.append(key.export_public(as_dict=True))
    return keys


def select(keys: list[dict[str, Any]], *, kid: str | None, alg: str) -> dict[str, Any] | str:
    """The key a token with this ``kid`` and ``alg`` is verified with, or why there is none. Pure.

    A key names its type (and curve) for ``alg``, and its own ``alg`` when it has one must be
    ``alg``. With a ``kid`` the key of that ``kid``; without one, the only fitting key."""
    kty, crv = _KEY_TYPE.get(alg, (None, None))
    fitting = [
        key
        for key in keys
        if key.get("kty") == kty and (crv is None or key.get("crv") == crv) and key.get("alg") in (None, alg)
    ]
    if kid is not None:
        named = [key for key in fitting if key.get("kid") == kid]
        return named[0] if named else UNKNOWN_KID
    if len(fitting) != 1:
        return AMBIGUOUS_KEY if fitting else UNKNOWN_KID
    return fitting[0]


def key_for(trust: TrustedIssuer, *, kid: str | None, alg: str) -> jwk.JWK | str:
    """The public key of ``trust`` to verify a token with (``kid``, ``alg`` from its header), or
    a reason code."""
    if trust.jwks is not None:
        found = select(public_keys(trust.jwks), kid=kid, alg=alg)
    else:
        try:
            found = _fetched_key(trust.jwks_uri, kid=kid, alg=alg)
        except _CacheDown:
            logger.warning("Trusted issuer %s: the federation cache does not answer", trust.issuer)
            return UNAVAILABLE
    if isinstance(found, str):
        return found
    return jwk.JWK(**found)


def _cache() -> Any:
    return caches[token_exchange_settings.FEDERATION_CACHE]


def _call(method: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(_cache(), method)(*args, **kwargs)
    except Exception as error:  # Redis down, a missing alias: a refusal, never a 500
        raise _CacheDown(type(error).__name__) from None


def _fetched_key(uri: str, *, kid: str | None, alg: str) -> dict[str, Any] | str:
    base = _cache_key(uri)
    cached = _call("get", base)
    if isinstance(cached, list):
        found = select(cached, kid=kid, alg=alg)
        if found != UNKNOWN_KID or kid is None:
            return found
        # A kid the cached set lacks: the issuer may have rotated. One refetch per interval.
        if _call("get", base + ":failed") or not _call("add", base + ":kid", 1, UNKNOWN_KID_REFETCH_SECONDS):
            return UNKNOWN_KID
        keys = _fetch(uri, base)
        return select(keys, kid=kid, alg=alg) if keys is not None else UNKNOWN_KID
    if _call("get", base + ":failed"):
        return UNAVAILABLE
    timeout = token_exchange_settings.FEDERATION_TIMEOUT_SECONDS
    if _call("add", base + ":fetching", 1, timeout + 1):
        keys = _fetch(uri, base)
        _call("delete", base + ":fetching")
    else:
        keys = _wait_for(base, timeout + 1)
    return select(keys, kid=kid, alg=alg) if keys is not None else UNAVAILABLE


def _wait_for(base: str, seconds: float) -> list[dict[str, Any]] | None:
    """Another process fetches: its answer, once in the cache, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(_WAIT_STEP_SECONDS)
        cached = _call("get", base)
        if isinstance(cached, list):
            return cached
        if _call("get", base + ":failed"):
            return None
    return None


def _fetch(uri: str, base: str) -> list[dict[str, Any]] | None:
    """Fetch, parse and cache the key set; None (and the backoff set) when it fails."""
    if not fetchable(uri, allow_http_loopback=token_exchange_settings.FEDERATION_ALLOW_HTTP_LOOPBACK):
        why = "the URI is not fetchable (https, or http on loopback where allowed)"
        keys = None
    else:
        try:
            body = download.fetch(
                "GET",
                uri,
                headers={"Accept": "application/jwk-set+json, application/json"},
                timeout=token_exchange_settings.FEDERATION_TIMEOUT_SECONDS,
                max_bytes=MAX_JWKS_BYTES,
            )
            keys = public_keys(_json(body)) or None
            why = "the answer holds no usable public signing key"
        except download.DownloadError as error:
            why, keys = str(error), None
    if keys is None:
        logger.warning("Trusted issuer JWKS %s not fetched: %s", uri, why)
        _call("set", base + ":failed", 1, FAILURE_BACKOFF_SECONDS)
        return None
    _call("set", base, keys, JWKS_LIFESPAN_SECONDS)
    return keys


def _json(body: bytes) -> Mapping[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None

"""RFC 9068 JWT access tokens, verified offline against the issuer's JWKS.

The checks of RFC 9068 §4, in the order that costs an attacker most and us least: the header
first (``typ`` ``at+jwt``, ``alg`` one of ``ALGORITHMS``, a ``kid``), before any key is fetched;
then the signature with the issuer's key of that ``kid``; then ``iss`` (exact), ``aud`` (must
name this service's ``RESOURCE_URI``), ``exp``/``nbf``/``iat`` within ``LEEWAY_SECONDS``, and
the claims RFC 9068 §2.2 requires. Any failure, a JWKS endpoint that does not answer included,
is :class:`InvalidToken`: a 401 for the client, never a 500.

Keys come from PyJWT's ``PyJWKClient`` (its public ``get_signing_keys``, ``match_kid`` and
``fetch_data``), which parses the JWKS and caches it for :data:`JWKS_LIFESPAN_SECONDS`.
:class:`JWKSClient` replaces only the fetch, the one place a request leaves this process: with
``requests``, no redirects followed, ``TIMEOUT_SECONDS`` for the whole answer, at most
:data:`MAX_JWKS_BYTES`, and nothing cached that is not a JSON object with usable signing keys.
:class:`KeySet` decides when to fetch: a token naming a ``kid`` the cached set lacks (the
issuer rotated its key) makes one forced refetch, and then no other for
:data:`UNKNOWN_KID_REFETCH_SECONDS`; after a fetch that failed, no fetch at all for
:data:`FAILURE_BACKOFF_SECONDS`. So whatever the tokens and whatever the endpoint answers, the
issuer is asked at most once per interval (PyJWT 2.8 refetches on every unknown ``kid`` and wipes
its cache when a fetch fails; later releases differ, and we depend on neither).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

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
)

logger = logging.getLogger("token_exchange")

# RFC 9068 §4: "typ" is "at+jwt" or, with the optional prefix, "application/at+jwt" (media
# types compare case-insensitively).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# RFC 9068 §2.2: every JWT access token carries these.
REQUIRED_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
# How long a fetched JWKS is used before it is fetched again: a key the issuer withdrew is
# accepted this long at most (rotation adds keys before it uses them; a withdrawn key is
# compromised only in an emergency, and then the issuer revokes its tokens too).
JWKS_LIFESPAN_SECONDS = 300
# At most one refetch per this interval for tokens whose kid is not in the cached JWKS.
UNKNOWN_KID_REFETCH_SECONDS = 30
# After a fetch that failed (no answer, not 200, not a JWKS), no fetch for this long: tokens
# whose key is not in a fresh cached JWKS are refused as unverifiable meanwhile.
FAILURE_BACKOFF_SECONDS = 30
# A JWKS of a few keys is a few kilobytes; more is no JWKS, and is not read into memory.
MAX_JWKS_BYTES = download.MAX_ANSWER_BYTES


@dataclass(frozen=True)
class FetchedKeys:
    """One good fetch of the JWKS: its signing keys by ``kid``, the ``alg`` values each ``kid``'s
    JWKs name (``None``: names none), and when it was made (``time.monotonic``)."""

    keys: dict[str, PyJWK]
    published: dict[str, set[str | None]]
    at: float


class JWKSClient(PyJWKClient):
    """PyJWT's client with a fetch this package can vouch for on every PyJWT release it supports.

    ``fetch_data`` is PyJWKClient's public hook for getting the JWKS, called for every fetch
    (the first, after the cache expired, and forced); everything else (parsing, the cache of
    :data:`JWKS_LIFESPAN_SECONDS`, ``match_kid``) stays PyJWT's. Any failure is a
    ``PyJWKClientError`` (a ``PyJWTError``), so the caller refuses the token and never answers
    500; the cache keeps what it had (PyJWT 2.8's own fetch wipes it on failure); and for
    :data:`FAILURE_BACKOFF_SECONDS` after a failure no request is made at all.
    """

    def __init__(self, uri: str, *, timeout: int) -> None:
        self.lifespan_seconds: float = JWKS_LIFESPAN_SECONDS
        super().__init__(uri, cache_jwk_set=True, lifespan=self.lifespan_seconds, timeout=timeout)
        # The last good fetch, replaced whole (one assignment) by the next: what KeySet reads
        # without the lock.
        self.fetched: FetchedKeys | None = None
        self.failed_at: float | None = None

    def fetch_data(self) -> Any:
        if self.failed_at is not None and time.monotonic() - self.failed_at < FAILURE_BACKOFF_SECONDS:
            raise PyJWKClientConnectionError("Not fetched: the last fetch failed moments ago")
        try:
            data, keys = self._jwk_set()
        except Exception as error:
            self.failed_at = time.monotonic()
            if isinstance(error, jwt.PyJWTError):
                raise
            raise PyJWKClientError(f"The JWKS could not be read: {type(error).__name__}") from None
        self.failed_at = None
        algorithms: dict[str, set[str | None]] = {}
        for jwk in data["keys"]:
            if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
                alg = jwk.get("alg")
                algorithms.setdefault(jwk["kid"], set()).add(alg if isinstance(alg, str) else None)
        signing: dict[str, PyJWK] = {}
        for key in keys:  # as PyJWKClient.get_signing_keys filters, the first of a kid as match_kid
            if key.public_key_use in ("sig", None) and key.key_id:
                signing.setdefault(key.key_id, key)
        self.fetched = FetchedKeys(keys=signing, published=algorithms, at=time.monotonic())
        if self.jwk_set_cache is not None:
            # PyJWT 2.8 caches only what fetch_data puts there; later releases also cache the
            # set they parse from it. Either way the cache holds this answer, and only this one.
            self.jwk_set_cache.put(data)
        return data

    def _jwk_set(self) -> tuple[dict[str, Any], list[PyJWK]]:
        """The JWK Set at ``uri``, checked: JSON, an object with ``keys``, a usable signing key."""
        try:
            data = json.loads(self._download())
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
            raise PyJWKClientError("The JWKS endpoint did not answer JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise PyJWKClientError("The JWKS endpoint did not answer a JWK Set")
        # Parsed here too, so a set without usable signing keys is a failed fetch, not an answer
        # cached for minutes that refuses every token (PyJWKSetError when none is usable).
        keys = PyJWKSet.from_dict(data).keys
        if not any(key.public_key_use in ("sig", None) and key.key_id for key in keys):
            raise PyJWKClientError("The JWKS endpoint did not contain any signing keys")
        return data, keys

    def _download(self) -> bytes:
        try:
            return download.fetch(
                "GET",
                self.uri,
                headers={**self.headers, "Accept": "application/json"},
                timeout=self.timeout,
                max_bytes=MAX_JWKS_BYTES,
            )
        except download.DownloadError as error:
            raise PyJWKClientConnectionError(f"The JWKS endpoint {error}") from None


class KeySet:
    """The issuer's signing keys at one JWKS URI, shared by the threads of a process.

    A token whose ``kid`` is in the last good fetch, while that is younger than
    :data:`JWKS_LIFESPAN_SECONDS`, gets its key without any lock: a fetch under way, however
    slow, never holds up a token the cached keys verify. Every other token needs the lock, which
    covers every use of the client: at most one fetch runs at a time (and it ends within
    ``TIMEOUT_SECONDS``, see :mod:`.download`), and requests that need the keys while it runs
    wait for it, then use its result or its failure without fetching again. None waits longer
    than ``TIMEOUT_SECONDS`` in all: whoever cannot have the lock by then is refused as "cannot
    be verified now" rather than queued.
    """

    def __init__(self, uri: str, *, timeout: int) -> None:
        self.uri = uri
        self.timeout = timeout
        self.client = JWKSClient(uri, timeout=timeout)
        self._lock = threading.Lock()
        self._refetched_at: float | None = None

    def signing_key(self, kid: str, alg: str) -> Any:
        """The public key of ``kid`` for a token signed with ``alg``, or :class:`InvalidToken`."""
        fetched = self.client.fetched  # read once: a fetch replaces it whole
        key = None
        if fetched is not None and time.monotonic() - fetched.at < self.client.lifespan_seconds:
            key = fetched.keys.get(kid)
        if key is None:
            key, fetched = self._fetched_key(kid)
        published = fetched.published.get(kid, set()) if fetched is not None else set()
        if key is None:
            logger.info("Access token refused: kid %.64r is not in the JWKS at %s", kid, self.uri)
            raise InvalidToken(description=INVALID)
        if published - {None, alg}:
            # RFC 8725 §3.1: a key is used only with the algorithm its JWK names, where it names one.
            logger.info("Access token refused: alg %.32r, the JWK of kid %.64r: %s", alg, kid, published)
            raise InvalidToken(description=INVALID)
        return key.key

    def _fetched_key(self, kid: str) -> tuple[Any, FetchedKeys | None]:
        """The key of ``kid`` under the lock: from PyJWT's cache, else from a fetch if one is due."""
        if not self._lock.acquire(timeout=self.timeout):
            logger.warning("JWKS at %s: a fetch has been under way for %s s", self.uri, self.timeout)
            raise InvalidToken(description=UNVERIFIABLE)
        try:
            key = self.client.match_kid(self.client.get_signing_keys(), kid)
            if key is None and self._may_refetch():
                # Counted before the fetch: an endpoint that fails is not asked again sooner.
                self._refetched_at = time.monotonic()
                key = self.client.match_kid(self.client.get_signing_keys(refresh=True), kid)
            return key, self.client.fetched
        except Exception as error:  # whatever a fetch met is a refusal, never a 500
            logger.warning("JWKS at %s could not be read: %s", self.uri, error)
            raise InvalidToken(description=UNVERIFIABLE) from None
        finally:
            self._lock.release()

    def _may_refetch(self) -> bool:
        return (
            self._refetched_at is None or time.monotonic() - self._refetched_at >= UNKNOWN_KID_REFETCH_SECONDS
        )


_key_sets: dict[tuple[str, int], KeySet] = {}
_key_sets_lock = threading.Lock()


def key_set(uri: str, *, timeout: int) -> KeySet:
    """One :class:`KeySet` per JWKS URI and timeout for the life of the process."""
    with _key_sets_lock:
        found = _key_sets.get((uri, timeout))
        if found is None:
            found = _key_sets[(uri, timeout)] = KeySet(uri, timeout=timeout)
        return found


def jwks_uri(config: ResourceServerSettings) -> str:
    return config["JWKS_URI"] or f"{config['ISSUER']}/.well-known/jwks.json"


def verify_jwt_access_token(value: str) -> VerifiedAccessToken:
    """The verified claims of an RFC 9068 access token meant for this resource server.

    Raises :class:`InvalidToken` with a description fit for ``WWW-Authenticate``.
    """
    config = token_exchange_settings.RESOURCE_SERVER
    issuer, resource = config["ISSUER"], config["RESOURCE_URI"]
    if not issuer or not resource:
        # token_exchange.E015 says so at startup; refusing is all that is safe at request time.
        logger.error("Access token refused: TOKEN_EXCHANGE['RESOURCE_SERVER'] lacks ISSUER or RESOURCE_URI")
        raise InvalidToken(description=UNVERIFIABLE)
    algorithms = list(config["ALGORITHMS"])
    try:
        header = jwt.get_unverified_header(value)
    except jwt.PyJWTError:
        logger.info("JWT access token refused: not a JWS")
        raise InvalidToken(description=INVALID) from None
    typ, alg, kid = header.get("typ"), header.get("alg"), header.get("kid")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        logger.info("JWT access token refused: typ %.32r is not at+jwt (RFC 9068 §4)", typ)
        raise InvalidToken(description=INVALID)
    if alg not in algorithms:
        logger.info("JWT access token refused: alg %.32r is not one of %s", alg, algorithms)
        raise InvalidToken(description=INVALID)
    if not isinstance(kid, str) or not kid:
        logger.info("JWT access token refused: no kid")
        raise InvalidToken(description=INVALID)
    key = key_set(jwks_uri(config), timeout=config["TIMEOUT_SECONDS"]).signing_key(kid, alg)
    leeway = config["LEEWAY_SECONDS"]
    try:
        claims: dict[str, Any] = jwt.decode(
            value,
            key=key,
            algorithms=algorithms,
            audience=resource,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
        )
    except jwt.ExpiredSignatureError:
        logger.info("JWT access token refused: expired")
        raise InvalidToken(description=EXPIRED) from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as error:
        logger.info("JWT access token refused: %s", error)
        raise InvalidToken(description=NOT_FOR_US) from None
    except (jwt.PyJWTError, ValueError, TypeError) as error:
        # Bad signature, nbf/iat in the future, a missing claim, a key of another type.
        logger.info("JWT access token refused: %s", error)
        raise InvalidToken(description=INVALID) from None
    if not claims["sub"] or not claims["client_id"]:
        logger.info("JWT access token refused: empty sub or client_id")
        raise InvalidToken(description=INVALID)
    iat = claims["iat"]
    if not isinstance(iat, (int, float)) or iat > time.time() + leeway:
        # PyJWT checks this itself from 2.10 on; 2.8 only checks that iat is a number.
        logger.info("JWT access token refused: iat is in the future")
        raise InvalidToken(description=INVALID)
    return from_claims(claims, leeway=leeway)

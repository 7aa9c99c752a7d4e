"""RFC 9068 JWT access tokens, verified offline against the issuer's JWKS.

The checks of RFC 9068 §4, in the order that costs an attacker most and us least: the header
first (``typ`` ``at+jwt``, ``alg`` one of ``ALGORITHMS``, a ``kid``), before any key is fetched;
then the signature with the issuer's key of that ``kid``; then ``iss`` (exact), ``aud`` (must
name this service's ``RESOURCE_URI``), ``exp``/``nbf``/``iat`` within ``LEEWAY_SECONDS``, and
the claims RFC 9068 §2.2 requires. Any failure, a JWKS endpoint that does not answer included,
is :class:`InvalidToken`: a 401 for the client, never a 500.

Keys come from PyJWT's ``PyJWKClient`` (its public ``get_signing_keys`` and ``match_kid``): it
fetches the JWKS and caches it for :data:`JWKS_LIFESPAN_SECONDS`. A token naming a ``kid`` the
cached set lacks (the issuer rotated its key) makes one forced refetch, and then no other for
:data:`UNKNOWN_KID_REFETCH_SECONDS`: otherwise every forged token with a random ``kid`` would be
a request to the issuer (PyJWT 2.8's ``get_signing_key`` refetches on every unknown ``kid``;
later releases add a cooldown we do not depend on).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
from jwt import PyJWKClient

from ..conf import ResourceServerSettings, token_exchange_settings
from .tokens import EXPIRED, INVALID, NOT_FOR_US, UNVERIFIABLE, InvalidToken, VerifiedAccessToken, from_claims

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


class KeySet:
    """The issuer's signing keys at one JWKS URI, shared by the threads of a process."""

    def __init__(self, uri: str, *, timeout: int) -> None:
        self.uri = uri
        self.client = PyJWKClient(uri, cache_jwk_set=True, lifespan=JWKS_LIFESPAN_SECONDS, timeout=timeout)
        self._lock = threading.Lock()
        self._refetched_at: float | None = None

    def signing_key(self, kid: str) -> Any:
        """The public key of ``kid``, or :class:`InvalidToken`."""
        with self._lock:  # one fetch at a time, and one decision about refetching
            try:
                key = self.client.match_kid(self.client.get_signing_keys(), kid)
                if key is None and self._may_refetch():
                    # Counted before the fetch: an endpoint that fails is not asked again sooner.
                    self._refetched_at = time.monotonic()
                    key = self.client.match_kid(self.client.get_signing_keys(refresh=True), kid)
            except jwt.PyJWTError as error:  # PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError
                logger.warning("JWKS at %s could not be read: %s", self.uri, error)
                raise InvalidToken(description=UNVERIFIABLE) from None
        if key is None:
            logger.info("Access token refused: kid %.64r is not in the JWKS at %s", kid, self.uri)
            raise InvalidToken(description=INVALID)
        return key.key

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
    key = key_set(jwks_uri(config), timeout=config["TIMEOUT_SECONDS"]).signing_key(kid)
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

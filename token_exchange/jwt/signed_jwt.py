"""JWTs a client signs with one of its ``ClientKey`` rows (RFC 7523).

Two kinds reach the token endpoint: the ``client_assertion`` that authenticates the client
(RFC 7523 §2.2) and the self-signed ``subject_token`` of an impersonation (RFC 8693 token type
``jwt``). Both are checked here the same way, in this order:

1. the header (``header_refusal``, pure): an allowed asymmetric ``alg``, no header that names a
   key or a place to fetch one, no ``crit``, an expected ``typ``;
2. the key: chosen among the issuing client's usable keys only (``client_keys.choose_key``);
3. the signature, under exactly the key's algorithm (RFC 8725 §3.1);
4. the claims (``claims_refusal``, pure): ``iss``, ``aud``, ``exp``, ``iat``, ``nbf``, ``jti``;
5. the ``jti``, usable once (``replay.consume``), last, so that only a JWT that passed
   everything else can use up its ``jti``. Being last also means only a JWT signed with one of
   the client's keys ever reaches the replay store: a stranger cannot learn from the answers
   whether the store is up (``ReplayStoreUnavailable``, 503) or down.

What each kind requires of ``sub`` is the caller's business.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from django.utils import timezone

from token_exchange.client_keys import InvalidKey, choose_key, jwks, parse_public_key
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import CLIENT_KEY_ALGORITHMS
from token_exchange.db.lookups import PreparedLookup
from token_exchange.jwt import jose, replay, validity
from token_exchange.models import ClientKey
from token_exchange.parameters import encodable

# RFC 7523 §3 lets the server bound how long it accepts a JWT; one hour, as ZITADEL's keys.
MAX_LIFETIME_SECONDS = 3600
MAX_JTI_LENGTH = 255
# Headers that carry a key or say where to fetch one (RFC 7515 §4.1.2-4.1.6). The key is
# chosen by the server among the client's registered keys; these are refused, never followed.
KEY_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})


class JWTRefusal(Exception):
    """A client-signed JWT that is not accepted, with the reason code for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def media_type(typ: str) -> str:
    """RFC 7515 §4.1.9: ``typ`` is a media type, compared case-insensitively, without ``application/``."""
    typ = typ.lower()
    return typ[len("application/") :] if typ.startswith("application/") else typ


def header_refusal(header: Mapping[str, Any], *, allowed_typ: Collection[str]) -> str | None:
    """Why this JOSE header is refused, or None. ``allowed_typ``: media types, lowercase."""
    if header.get("alg") not in CLIENT_KEY_ALGORITHMS:
        return "unsupported_alg"
    if KEY_HEADERS & header.keys():
        return "key_in_header"
    if "crit" in header:
        return "crit_header"
    if "kid" in header and not (isinstance(header["kid"], str) and header["kid"]):
        # RFC 7515 §4.1.4: a string. A null kid is no kid, which would pick the only key.
        return "malformed_kid"
    if "typ" in header and not (isinstance(header["typ"], str) and media_type(header["typ"]) in allowed_typ):
        return "wrong_typ"
    return None


def audience_matches(aud: object, accepted: Collection[str]) -> bool:
    """``aud`` names this server and nothing else: a string, or a list of only accepted values.

    RFC 7523 §3 needs our identifier among the values; accepting a list that also names
    another party would accept a JWT that party may have seen first.
    """
    values = [aud] if isinstance(aud, str) else aud
    return (
        isinstance(values, list)
        and bool(values)
        and all(isinstance(value, str) and value in accepted for value in values)
    )


def claims_refusal(
    claims: Mapping[str, Any],
    *,
    client_id: str,
    audiences: Collection[str],
    now: float,
    leeway: int,
) -> str | None:
    """Why these claims of a JWT signed by ``client_id`` are refused, or None. Pure."""
    if claims.get("iss") != client_id:
        return "wrong_issuer"
    if not audience_matches(claims.get("aud"), audiences):
        return "wrong_audience"
    reason, _exp, _iat = validity.refusal(claims, now=now, leeway=leeway, max_lifetime=MAX_LIFETIME_SECONDS)
    if reason is not None:
        return reason
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH or not encodable(jti):
        return "missing_jti"
    return None


def _usable(keys: Iterable[ClientKey]) -> list[ClientKey]:
    """The active, unexpired keys among a client's (a handful: filtered here, not in SQL, so that
    the statement reading them does not change with the time and can be prepared)."""
    now = timezone.now()
    return [key for key in keys if key.active and (key.expires_at is None or key.expires_at > now)]


def usable_keys(application: Any) -> list[ClientKey]:
    return _usable(ClientKey.objects.filter(application=application))


_KEYS_OF_CLIENT = PreparedLookup(
    lambda: ClientKey.objects.select_related("application__token_exchange_policy"), "application__client_id"
)


def application_jwks(application: Any) -> dict[str, list[dict[str, Any]]]:
    """The JWK Set of ``application``'s usable keys (active, unexpired), as DOT's ``client_jwks``
    field holds it (``json.dumps`` it): the data migration from ``ClientKey`` rows, under the one
    rule for a usable key (``usable_keys``)."""
    return jwks(usable_keys(application))


def keys_of(client_id: str) -> tuple[Any, list[ClientKey]]:
    """The client named ``client_id`` (None if it has no keys) and its usable keys, each key with
    the client and its token exchange policy: one query authenticates a client by its assertion."""
    keys = _KEYS_OF_CLIENT.rows(client_id)
    return (keys[0].application if keys else None), _usable(keys)


def verify(
    token: str,
    *,
    application: Any,
    audiences: Collection[str],
    allowed_typ: Collection[str],
    keys: list[ClientKey] | None = None,
) -> dict[str, Any]:
    """The claims of ``token``, a JWT ``application`` signed, or :class:`JWTRefusal`.

    ``keys``: the application's usable keys, if already read (``keys_of``).

    :class:`~token_exchange.exceptions.ReplayStoreUnavailable` goes through as it is: a JWT whose
    ``jti`` could not be checked is not accepted, but it is no refusal of the JWT either, and the
    callers answer it as the server's trouble (503), never as bad credentials.
    """
    try:
        header, _unverified = jose.peek(token)
    except jose.JoseError as exc:
        raise JWTRefusal("malformed_jwt") from exc
    reason = header_refusal(header, allowed_typ=allowed_typ)
    if reason is not None:
        raise JWTRefusal(reason)
    key = choose_key(usable_keys(application) if keys is None else keys, kid=header.get("kid"))
    if isinstance(key, str):
        raise JWTRefusal(key)
    if header["alg"] != key.algorithm:
        raise JWTRefusal("alg_mismatch")
    try:
        public_key = parse_public_key(key.public_key, key.algorithm)
        _header, claims = jose.verify(token, public_key, key.algorithm)
    except InvalidKey as exc:
        raise JWTRefusal("unusable_key") from exc
    except jose.JoseError as exc:
        raise JWTRefusal("bad_signature") from exc
    reason = claims_refusal(
        claims,
        client_id=application.client_id,
        audiences=audiences,
        now=time.time(),
        leeway=token_exchange_settings.JWT_LEEWAY_SECONDS,
    )
    if reason is not None:
        raise JWTRefusal(reason)
    expires_at = math.ceil(claims["exp"])
    # Last, after the signature and every claim (see the module docstring).
    if not replay.consume(client_id=application.client_id, jti=claims["jti"], expires_at=expires_at):
        raise JWTRefusal("replayed_jti")
    return claims

"""Pure decisions about a trusted issuer's token: its header, its kind and its claims.

Each returns None when the token passes, else the reason code for the log and the audit row. No
database, no clock, no settings: the caller passes the issuer's rules and ``now`` in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from token_exchange.constants import ACCESS_TOKEN_TYPE, CLIENT_KEY_ALGORITHMS, ID_TOKEN_TYPE, JWT_TYPE
from token_exchange.jwt import validity
from token_exchange.parameters import storable

# Headers that carry a key or say where to fetch one (RFC 7515 §4.1.2-4.1.6). The issuer's keys
# are the ones its row names; a token that offers its own is refused, never followed
# (RFC 8725 §3.10 warns against them; jku and x5u would also make this server fetch any URL).
KEY_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})
# RFC 9068 §4 (explicit typing, RFC 8725 §3.11): an access token says so; anything else does not.
ACCESS_TOKEN_TYP = frozenset({"at+jwt", "application/at+jwt"})
# What a sub may be: RFC 7519 §4.1.2 says StringOrURI; OIDC Core §2 at most 255 ASCII characters.
MAX_SUBJECT_LENGTH = 255

# The kinds of token a trusted issuer may be allowed to present.
KIND_ID_TOKEN = "id_token"
KIND_ACCESS_TOKEN = "access_token"
KIND_JWT = "jwt"


def header_refusal(header: Mapping[str, Any], *, algorithms: Collection[str]) -> str | None:
    """Why a trusted issuer's JOSE header is refused, or None: an ``alg`` its row allows (and
    asymmetric, whatever the row says), no key or key location in the header, no ``crit``, a
    ``kid`` that is a string when there is one."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in CLIENT_KEY_ALGORITHMS or alg not in algorithms:
        return "unsupported_alg"
    if KEY_HEADERS & header.keys():
        return "key_in_header"
    if "crit" in header:
        return "crit_header"
    if "kid" in header and not (isinstance(header["kid"], str) and header["kid"]):
        return "malformed_kid"
    return None


def _is_access_token_typ(typ: object) -> bool:
    return isinstance(typ, str) and typ.lower() in ACCESS_TOKEN_TYP


def kind(*, presented_as: str, typ: object) -> str | None:
    """The kind of token this is, from how it was presented and its ``typ`` header, or None when
    the two disagree: an access token must say ``at+jwt``, and nothing else may (an access token
    presented as an ID token is the confusion RFC 8725 §3.11 is about)."""
    is_access_token = _is_access_token_typ(typ)
    if presented_as == ACCESS_TOKEN_TYPE:
        return KIND_ACCESS_TOKEN if is_access_token else None
    if presented_as == ID_TOKEN_TYPE:
        return None if is_access_token else KIND_ID_TOKEN
    if presented_as == JWT_TYPE:
        # The JWT authorization grant's assertion, or subject_token_type jwt: an access token
        # keeps its own kind, so an issuer trusted for "other JWTs" only does not let one in.
        return KIND_ACCESS_TOKEN if is_access_token else KIND_JWT
    return None


def kind_refusal(
    *, kind_presented: str | None, accept_id_tokens: bool, accept_access_tokens: bool, accept_jwts: bool
) -> str | None:
    """Why this kind of token is refused from this issuer, or None."""
    accepted = {
        KIND_ID_TOKEN: accept_id_tokens,
        KIND_ACCESS_TOKEN: accept_access_tokens,
        KIND_JWT: accept_jwts,
    }
    if kind_presented is None:
        return "wrong_typ"
    if not accepted.get(kind_presented, False):
        return "kind_not_accepted"
    return None


def audience_refusal(aud: object, *, accepted: Collection[str]) -> str | None:
    """``aud`` (a string or a list of strings) names at least one accepted audience."""
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        return "wrong_audience"
    return None if any(value in accepted for value in values) else "wrong_audience"


def required_claims_refusal(claims: Mapping[str, Any], required: Mapping[str, Collection[str]]) -> str | None:
    """Every required claim is there, a string, and one of its allowed values (compared exactly:
    a tenant id is no prefix, and ``["t1"]`` is not ``"t1"``)."""
    for name, allowed in required.items():
        value = claims.get(name)
        if not isinstance(value, str) or value not in allowed:
            return "required_claim_mismatch"
    return None


def claims_refusal(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Collection[str],
    required: Mapping[str, Collection[str]],
    now: float,
    leeway: int,
    max_age: int,
    max_lifetime: int,
    jti_required: bool = False,
    kind_presented: str | None = None,
) -> str | None:
    """Why a trusted issuer's (signature-verified) claims are refused, or None. Pure.

    ``iss`` exactly the issuer's; ``aud`` one of ``audiences``; ``exp`` and ``iat`` present,
    ``exp`` not passed, ``iat`` and ``nbf`` not in the future, ``iat`` at most ``max_age`` ago,
    ``exp - iat`` at most ``max_lifetime``; a ``sub``; every required claim; a ``jti`` when
    ``jti_required`` (the JWT authorization grant uses each once).
    """
    if claims.get("iss") != issuer:
        return "wrong_issuer"
    reason = audience_refusal(claims.get("aud"), accepted=audiences)
    if reason is not None:
        return reason
    reason, _exp, iat = validity.refusal(claims, now=now, leeway=leeway, max_lifetime=max_lifetime)
    if reason is None and now - iat > max_age + leeway:
        reason = "too_old"
    if reason is not None:
        return reason
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH or not storable(sub):
        return "malformed_subject"
    if jti_required:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_SUBJECT_LENGTH or not storable(jti):
            return "missing_jti"
    if kind_presented == KIND_ID_TOKEN and ("scope" in claims or "scp" in claims):
        # An access token without at+jwt (Entra ID, Keycloak and Auth0 write typ JWT) presented
        # as an ID token: ID tokens carry no scope (OIDC Core §2).
        return "access_token_as_id_token"
    if "act" in claims:
        # Delegation recorded by another domain: whose act it is cannot be checked here, and a
        # token issued for it would drop it. Refused rather than silently lost.
        return "external_act"
    return required_claims_refusal(claims, required)

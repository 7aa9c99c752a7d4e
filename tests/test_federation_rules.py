"""The pure decisions about a trusted issuer's tokens, as truth tables."""

from __future__ import annotations

from typing import Any

import pytest

from token_exchange import trusted_issuers
from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.federation import jwks, rules
from token_exchange.tokens.registry import EXTERNAL, OURS, route

NOW = 1_800_000_000.0
ISSUER = "https://idp.example"


def claims(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "aud": "app", "iat": NOW - 10, "exp": NOW + 290}
    value.update(changes)
    return {key: item for key, item in value.items() if item is not None}


def refusal(value: dict[str, Any], **rules_: Any) -> str | None:
    arguments: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": ("app",),
        "required": {},
        "now": NOW,
        "leeway": 60,
        "max_age": 3600,
        "max_lifetime": 7200,
        **rules_,
    }
    return rules.claims_refusal(value, **arguments)


@pytest.mark.parametrize(
    ("value", "extra", "expected"),
    [
        (claims(), {}, None),
        (claims(iss="https://idp.example/"), {}, "wrong_issuer"),  # exact, not a prefix
        (claims(aud=["other", "app"]), {}, None),  # any one accepted audience
        (claims(aud=["other"]), {}, "wrong_audience"),
        (claims(aud=[]), {}, "wrong_audience"),
        (claims(aud=[1]), {}, "wrong_audience"),
        (claims(aud=None), {}, "wrong_audience"),
        (claims(exp=None), {}, "missing_exp_or_iat"),
        (claims(iat=True), {}, "missing_exp_or_iat"),  # a boolean is no NumericDate
        (claims(exp=NOW - 61), {}, "expired"),
        (claims(exp=NOW - 59, iat=NOW - 300), {}, None),  # within the leeway
        (claims(iat=NOW + 61, exp=NOW + 300), {}, "issued_in_the_future"),
        (claims(nbf=NOW + 61), {}, "not_yet_valid"),
        (claims(nbf="soon"), {}, "not_yet_valid"),
        (claims(iat=NOW - 3700, exp=NOW + 100), {}, "too_old"),
        (claims(exp=NOW + 8000), {}, "lifetime_too_long"),
        (claims(exp=NOW + 100), {"max_lifetime": 60}, "lifetime_too_long"),
        (claims(sub=""), {}, "malformed_subject"),
        (claims(sub=42), {}, "malformed_subject"),
        (claims(sub="x" * 256), {}, "malformed_subject"),
        (claims(), {"jti_required": True}, "missing_jti"),
        (claims(jti="j"), {"jti_required": True}, None),
        (claims(act={"sub": "x"}), {}, "external_act"),
        (claims(tid="t1"), {"required": {"tid": ["t1"]}}, None),
        (claims(tid="t2"), {"required": {"tid": ["t1"]}}, "required_claim_mismatch"),
        (claims(tid=["t1"]), {"required": {"tid": ["t1"]}}, "required_claim_mismatch"),  # type-strict
        (claims(), {"required": {"tid": ["t1"]}}, "required_claim_mismatch"),
        (claims(hd="example.com"), {"required": {"hd": ["example.com", "example.org"]}}, None),
    ],
)
def test_claims(value, extra, expected):
    assert refusal(value, **extra) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"alg": "RS256", "kid": "k"}, None),
        ({"alg": "RS256"}, None),
        ({"alg": "ES256"}, "unsupported_alg"),  # not pinned for this issuer
        ({"alg": "HS256"}, "unsupported_alg"),  # never, whatever the row says
        ({"alg": "none"}, "unsupported_alg"),
        ({}, "unsupported_alg"),
        ({"alg": "RS256", "jku": "https://x"}, "key_in_header"),
        ({"alg": "RS256", "jwk": {}}, "key_in_header"),
        ({"alg": "RS256", "x5u": "https://x"}, "key_in_header"),
        ({"alg": "RS256", "x5c": []}, "key_in_header"),
        ({"alg": "RS256", "crit": ["b64"]}, "crit_header"),
        ({"alg": "RS256", "kid": None}, "malformed_kid"),
        ({"alg": "RS256", "kid": ""}, "malformed_kid"),
    ],
)
def test_headers(header, expected):
    assert rules.header_refusal(header, algorithms=("RS256", "HS256")) == expected


@pytest.mark.parametrize(
    ("presented_as", "typ", "kind"),
    [
        (ACCESS_TOKEN_TYPE, "at+jwt", rules.KIND_ACCESS_TOKEN),
        (ACCESS_TOKEN_TYPE, "application/AT+JWT", rules.KIND_ACCESS_TOKEN),
        (ACCESS_TOKEN_TYPE, "JWT", None),
        (ACCESS_TOKEN_TYPE, None, None),
        (ID_TOKEN_TYPE, "JWT", rules.KIND_ID_TOKEN),
        (ID_TOKEN_TYPE, None, rules.KIND_ID_TOKEN),
        (ID_TOKEN_TYPE, "at+jwt", None),
        (JWT_TYPE, None, rules.KIND_JWT),
        (JWT_TYPE, "at+jwt", rules.KIND_ACCESS_TOKEN),
        (USER_ID_TYPE, None, None),
    ],
)
def test_kind(presented_as, typ, kind):
    assert rules.kind(presented_as=presented_as, typ=typ) == kind


@pytest.mark.parametrize(
    ("kind", "accepted", "expected"),
    [
        (None, (True, True, True), "wrong_typ"),
        (rules.KIND_ID_TOKEN, (True, False, False), None),
        (rules.KIND_ID_TOKEN, (False, True, True), "kind_not_accepted"),
        (rules.KIND_ACCESS_TOKEN, (False, True, False), None),
        (rules.KIND_ACCESS_TOKEN, (True, False, True), "kind_not_accepted"),
        (rules.KIND_JWT, (False, False, True), None),
        (rules.KIND_JWT, (True, True, False), "kind_not_accepted"),
    ],
)
def test_kind_accepted(kind, accepted, expected):
    id_tokens, access_tokens, jwts = accepted
    assert (
        rules.kind_refusal(
            kind_presented=kind,
            accept_id_tokens=id_tokens,
            accept_access_tokens=access_tokens,
            accept_jwts=jwts,
        )
        == expected
    )


OUR = "https://id.example.com/o"


@pytest.mark.parametrize(
    ("token_type", "iss", "beside_actor", "expected"),
    [
        (ID_TOKEN_TYPE, OUR, False, OURS),  # ours is never read as external
        (ACCESS_TOKEN_TYPE, OUR, False, OURS),
        (ACCESS_TOKEN_TYPE, None, False, OURS),  # an opaque token
        (ID_TOKEN_TYPE, ISSUER, False, EXTERNAL),
        (ACCESS_TOKEN_TYPE, ISSUER, False, EXTERNAL),
        (ID_TOKEN_TYPE, ISSUER, True, EXTERNAL),  # and then refused: no actor for external subjects
        (JWT_TYPE, ISSUER, False, EXTERNAL),
        (JWT_TYPE, ISSUER, True, OURS),  # beside an actor: the client's own subject JWT
        (JWT_TYPE, "portal", False, OURS),  # the client's own
        (ACCESS_TOKEN_TYPE, "portal", False, OURS),  # the client's JWT as another type: refused there
        (JWT_TYPE, OUR, False, OURS),
        (USER_ID_TYPE, ISSUER, False, OURS),
    ],
)
def test_route(token_type, iss, beside_actor, expected):
    assert (
        route(token_type=token_type, iss=iss, issuer=OUR, client_id="portal", beside_actor=beside_actor)
        == expected
    )


@pytest.mark.parametrize(
    ("uri", "loopback_allowed", "expected"),
    [
        ("https://idp.example/jwks", False, True),
        ("http://idp.example/jwks", True, False),
        ("http://127.0.0.1:9000/jwks", False, False),
        ("http://127.0.0.1:9000/jwks", True, True),
        ("http://localhost/jwks", True, True),
        ("http://[::1]/jwks", True, True),
        ("http://10.0.0.1/jwks", True, False),
        ("https://user:pw@idp.example/jwks", False, False),
        ("https://idp.example/jwks#x", False, False),
        ("file:///etc/passwd", True, False),
        ("https://[::1", False, False),
    ],
)
def test_fetchable(uri, loopback_allowed, expected):
    assert trusted_issuers.fetchable(uri, allow_http_loopback=loopback_allowed) is expected


RSA_A = {"kty": "RSA", "kid": "a", "n": "x", "e": "AQAB"}
RSA_B = {"kty": "RSA", "kid": "b", "n": "y", "e": "AQAB", "alg": "RS256"}
EC = {"kty": "EC", "kid": "e", "crv": "P-256", "x": "x", "y": "y"}


@pytest.mark.parametrize(
    ("keys", "kid", "alg", "expected"),
    [
        ([RSA_A, RSA_B], "a", "RS256", RSA_A),
        ([RSA_A, RSA_B], "b", "PS256", jwks.UNKNOWN_KID),  # the key says RS256
        ([RSA_A, RSA_B], "c", "RS256", jwks.UNKNOWN_KID),
        ([RSA_A, EC], "e", "RS256", jwks.UNKNOWN_KID),  # an EC key signs no RS256
        ([RSA_A, EC], "e", "ES256", EC),
        ([RSA_A, EC], "e", "ES384", jwks.UNKNOWN_KID),  # another curve
        ([RSA_A], None, "RS256", RSA_A),  # no kid: the only fitting key
        ([RSA_A, RSA_B], None, "RS256", jwks.AMBIGUOUS_KEY),
        ([], None, "RS256", jwks.UNKNOWN_KID),
    ],
)
def test_select(keys, kid, alg, expected):
    assert jwks.select(keys, kid=kid, alg=alg) == expected

"""Incoming JWTs, attacked over real HTTP as an attacker's client would.

A JWT enters the token endpoint in three places, and each is attacked the same ways:

* the ``client_assertion`` of ``private_key_jwt`` (RFC 7523 §2.2): whatever is wrong with it, the
  client is not authenticated: 401 ``invalid_client``, and no audit row (nobody to attribute it to);
* the self-signed ``subject_token`` of type ``jwt`` beside an actor token (ZITADEL's
  "impersonation by JWT profile"): 400 ``invalid_request`` and one refusal row with the reason;
* an ID token this server issued, as the ``subject_token`` or the ``actor_token``: likewise.

The attacks follow RFC 8725: ``alg: none``, HMAC keyed with a public key, another algorithm than
the key's, an edited payload under the old signature, keys that are not the client's, ``crit``,
keys or key URLs in the header, hostile ``kid`` values, bad times, look-alike ``iss`` and
``aud``, a replayed ``jti``, one kind of token presented as another, and absurd ``act`` claims.

Each attack is one reported case, a subtest (pytest's ``subtests``) of a test per place and kind
of attack: on PostgreSQL every live-server test costs a flush of every table, too slow for one
test per attack. Every family of attacks starts with a positive control, the same request built
correctly, which gets a 200: the refusals that follow are for the attack, not for something else.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import get_id_token_model
from oauth2_provider.settings import oauth2_settings

from token_exchange.client_keys import KeyPair, generate_key_pair
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TYPE,
    REFRESH_TOKEN_TYPE,
    USER_ID_TYPE,
)
from token_exchange.jwt import jose
from token_exchange.models import ClientKey

from . import client_jwt
from .adversarial import (
    CLIENT_AUTHENTICATION_FAILED,
    REFUSED,
    TOKEN_FIELDS,
    TOKEN_REFUSED,
    TokenClient,
    audit_rows_after,
    last_audit_pk,
    refused,
    token_rows,
)
from .client_jwt import (
    ISSUER,
    TOKEN_ENDPOINT,
    KeyFile,
    assertion_claims,
    assertion_form,
    hmac_signed,
    subject_claims,
    unsigned,
)
from .conftest import CRM, make_app
from .jwt_helpers import verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

IDToken = get_id_token_model()
INVALID_REQUEST = {"status": 400, "error": "invalid_request", "description": TOKEN_REFUSED}
INVALID_CLIENT = {"status": 401, "error": "invalid_client", "description": CLIENT_AUTHENTICATION_FAILED}
# Refused for their shape (parse_parameters), before any token is read: the client is told what.
SHAPE_DESCRIPTIONS = {
    REFRESH_TOKEN_TYPE: "Refresh tokens cannot be exchanged; use the refresh_token grant.",
    JWT_TYPE: "Unsupported actor_token_type.",
}


class Case(NamedTuple):
    id: str
    forge: Callable[..., Any]
    reason: str  # the audit reason where the client is authenticated


# The parties, their keys and the client ------------------------------------------------------


@pytest.fixture(scope="module")
def key_pairs() -> dict[str, KeyPair]:
    """Generated once: an RSA key costs tens of milliseconds."""
    return {
        "portal": generate_key_pair("RS256"),
        "mallory-app": generate_key_pair("RS256"),
        "rogue": generate_key_pair("RS256"),
        "rogue-ec": generate_key_pair("ES256"),
    }


def registered(app: Any, pair: KeyPair) -> KeyFile:
    """What ``manage.py createclientkey`` does: the public key in a ClientKey row, the key file out."""
    ClientKey.objects.create(application=app, kid=pair.kid, public_key=pair.public_pem, algorithm="RS256")
    return KeyFile(app.client_id, pair.kid, pair.private_pem, "RS256", pair.public_pem)


@dataclass
class Keys:
    """The portal's key, which signs right, and the keys an attacker holds or can make."""

    portal: KeyFile  # registered for the portal
    mallory_app: KeyFile  # registered, but for another client: the attacker's own
    rogue: KeyFile  # an RSA key registered nowhere
    rogue_ec: KeyFile  # an ES256 key registered nowhere
    someone_else: str  # the pk of a user the attacker would rather be (Mallory)


@pytest.fixture
def keys(portal: Any, mallory: Any, key_pairs: dict[str, KeyPair]) -> Keys:
    rogue, rogue_ec = key_pairs["rogue"], key_pairs["rogue-ec"]
    return Keys(
        portal=registered(portal, key_pairs["portal"]),
        mallory_app=registered(make_app("mallory-app"), key_pairs["mallory-app"]),
        rogue=KeyFile("portal", rogue.kid, rogue.private_pem, "RS256", rogue.public_pem),
        rogue_ec=KeyFile("portal", rogue_ec.kid, rogue_ec.private_pem, "ES256", rogue_ec.public_pem),
        someone_else=str(mallory.pk),
    )


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def impersonation(
    impersonation_allowed: Any, support: Any, support_tokens: dict[str, Any], end_user_in_acme: Any
) -> dict[str, Any]:
    """The switch on, support (an impersonator of ACME) logged in, the customer in ACME."""
    return support_tokens


# Building tokens ----------------------------------------------------------------------------


@functools.lru_cache
def private_key(pem: str) -> Any:
    """Parsed once: loading an RSA private key checks it, 30 ms a time."""
    return serialization.load_pem_private_key(pem.encode(), password=None)


def sign(key_file: KeyFile, claims: dict[str, Any], **headers: Any) -> str:
    """As the client would sign (``client_jwt.sign``), with the key file's key parsed once."""
    return client_jwt.sign(dataclasses.replace(key_file, key=private_key(key_file.key)), claims, **headers)


def b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def header_of(token: str) -> dict[str, Any]:
    return jose.peek(token)[0]


def claims_of(token: str) -> dict[str, Any]:
    return jose.peek(token)[1]


def edited(token: str, **changes: Any) -> str:
    """The payload segment replaced by one with ``changes``; header and signature kept."""
    head, _payload, signature = token.split(".")
    return f"{head}.{b64json({**claims_of(token), **changes})}.{signature}"


def signed(key: Any, header: dict[str, Any], payload: str) -> str:
    """A JWS over ``payload`` (JSON text) really signed with ``key`` under ``header["alg"]``."""
    algorithm = jwt.get_algorithm_by_name(header["alg"])
    signing_input = f"{b64json(header)}.{b64(payload.encode())}"
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key))}"


def by_key(key_file: KeyFile, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return signed(private_key(key_file.key), {"alg": key_file.algorithm, **header}, json.dumps(claims))


def by_server(token: str, header: dict[str, Any] | None = None, **changes: Any) -> str:
    """``token`` re-signed by the server's own OIDC key, with changes: what only a holder of
    that key could make. Proves the ID token reader checks what it says it checks."""
    private = jose.server_key(oauth2_settings.OIDC_RSA_PRIVATE_KEY).get_op_key("sign")
    return signed(
        private, {**header_of(token), **(header or {})}, json.dumps({**claims_of(token), **changes})
    )


def public_key_forms(public_key: Any) -> dict[str, bytes]:
    """A public key (pyca) as an attacker would feed it to HMAC: SPKI PEM, PKCS#1 PEM, JWK JSON."""
    return {
        "spki-pem": public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "pkcs1-pem": public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "jwk-json": jwk.JWK.from_pyca(public_key).export_public().encode(),
    }


def jwk_of(key_file: KeyFile) -> dict[str, Any]:
    return json.loads(jwk.JWK.from_pem(key_file.public_key.encode()).export_public())


NONE_SPELLINGS = ["none", "None", "NONE", "nOnE", "none ", " none", "none\x00", "", None]
JUNK_SIGNATURE = b"\x00" * 32 + b"junk"
SIGNATURES = {"empty": b"", "junk": JUNK_SIGNATURE}


# 1-8: forgeries of a JWT a client signs -------------------------------------------------------
#
# A forgery takes the keys and the claims a client would sign (an assertion's or a
# subject JWT's) and returns the token sent; the reason is the subject JWT's audit reason.


def _none(alg: str | None, signature: bytes) -> Callable[[Keys, dict[str, Any]], str]:
    def forge(k: Keys, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "kid": k.portal.kid} | ({} if alg is None else {"alg": alg})
        return unsigned(header, claims, signature)

    return forge


def _hmac(alg: str, form: str) -> Callable[[Keys, dict[str, Any]], str]:
    def forge(k: Keys, claims: dict[str, Any]) -> str:
        public_key = serialization.load_pem_public_key(k.portal.public_key.encode())
        return hmac_signed({"alg": alg, "kid": k.portal.kid}, claims, public_key_forms(public_key)[form])

    return forge


def _edited(**changes: Any) -> Callable[[Keys, dict[str, Any]], str]:
    def forge(k: Keys, claims: dict[str, Any]) -> str:
        values = {name: value(k) if callable(value) else value for name, value in changes.items()}
        return edited(sign(k.portal, claims), **values)

    return forge


def _portal_header(**header: Any) -> Callable[[Keys, dict[str, Any]], str]:
    """Validly signed by the portal's registered key, under this header."""

    def forge(k: Keys, claims: dict[str, Any]) -> str:
        return by_key(k.portal, {"typ": "JWT", "kid": k.portal.kid, **header}, claims)

    return forge


def _stripped(k: Keys, claims: dict[str, Any]) -> str:
    head, payload, _signature = sign(k.portal, claims).split(".")
    return f"{head}.{payload}."


def _signature_of_another(k: Keys, claims: dict[str, Any]) -> str:
    head, payload, _signature = sign(k.portal, claims).split(".")
    return f"{head}.{payload}.{sign(k.portal, {**claims, 'jti': uuid.uuid4().hex}).split('.')[2]}"


CLIENT_JWT_FORGERIES = {
    "alg-none": [
        Case(f"alg={alg!r}-{name}-signature", _none(alg, signature), "unsupported_alg")
        for alg in NONE_SPELLINGS
        for name, signature in SIGNATURES.items()
    ],
    "hmac-keyed-with-our-public-key": [
        Case(f"{alg}-{form}", _hmac(alg, form), "unsupported_alg")
        for alg in ("HS256", "HS384", "HS512")
        for form in ("spki-pem", "pkcs1-pem", "jwk-json")
    ],
    "another-alg-than-the-keys": [
        Case("PS256-by-the-RS256-key", lambda k, c: sign(k.portal, c, alg="PS256"), "alg_mismatch"),
        Case("RS512-by-the-RS256-key", lambda k, c: sign(k.portal, c, alg="RS512"), "alg_mismatch"),
        Case("ES256-naming-the-RSA-kid", lambda k, c: sign(k.rogue_ec, c, kid=k.portal.kid), "alg_mismatch"),
    ],
    "edited-payload": [
        Case("exp-extended", _edited(exp=int(time.time()) + 3000), "bad_signature"),
        Case("sub-another-user", _edited(sub=lambda k: k.someone_else), "bad_signature"),
        Case("jti-changed", _edited(jti="a-fresh-jti-for-a-replay"), "bad_signature"),
        Case("aud-changed", _edited(aud="https://evil.example/"), "bad_signature"),
        Case("signature-stripped", _stripped, "bad_signature"),
        Case("signature-of-another-jwt", _signature_of_another, "bad_signature"),
    ],
    "foreign-keys": [
        Case("unregistered-key-its-kid", lambda k, c: sign(k.rogue, c), "unknown_kid"),
        Case("unregistered-key-our-kid", lambda k, c: sign(k.rogue, c, kid=k.portal.kid), "bad_signature"),
        Case("unregistered-key-no-kid", lambda k, c: sign(k.rogue, c, kid=None), "bad_signature"),
        Case("another-clients-key-its-kid", lambda k, c: sign(k.mallory_app, c), "unknown_kid"),
        Case(
            "another-clients-key-our-kid",
            lambda k, c: sign(k.mallory_app, c, kid=k.portal.kid),
            "bad_signature",
        ),
        Case("another-clients-key-no-kid", lambda k, c: sign(k.mallory_app, c, kid=None), "bad_signature"),
    ],
    "crit-validly-signed": [
        Case("crit-exp", _portal_header(crit=["exp"]), "crit_header"),
        Case("crit-b64", _portal_header(crit=["b64"], b64=False), "crit_header"),
        Case("crit-unknown-extension", _portal_header(crit=["x-ours"], **{"x-ours": 1}), "crit_header"),
        Case("crit-empty", _portal_header(crit=[]), "crit_header"),
    ],
    "key-in-header": [
        Case("jku-validly-signed", _portal_header(jku="https://evil.example/jwks.json"), "key_in_header"),
        Case("x5u-validly-signed", _portal_header(x5u="https://evil.example/cert.pem"), "key_in_header"),
        Case("x5c-validly-signed", _portal_header(x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOC"]), "key_in_header"),
        Case("jwk-validly-signed", lambda k, c: sign(k.portal, c, jwk=jwk_of(k.portal)), "key_in_header"),
        Case(
            "attackers-key-in-jwk",
            lambda k, c: sign(k.rogue, c, kid=None, jwk=jwk_of(k.rogue)),
            "key_in_header",
        ),
        Case(
            "attackers-key-in-jwk-our-kid",
            lambda k, c: sign(k.rogue, c, kid=k.portal.kid, jwk=jwk_of(k.rogue)),
            "key_in_header",
        ),
        Case(
            "attackers-key-jku-at-our-jwks",
            lambda k, c: sign(k.rogue, c, jku=f"{ISSUER}/.well-known/jwks.json"),
            "key_in_header",
        ),
    ],
    "hostile-kid-validly-signed": [
        Case("path-traversal", _portal_header(kid="../../../../etc/passwd"), "unknown_kid"),
        Case("sql-injection", _portal_header(kid="' OR '1'='1' --"), "unknown_kid"),
        Case("10KB", _portal_header(kid="k" * 10_000), "unknown_kid"),
        Case("NUL-byte", _portal_header(kid="kid\x00"), "unknown_kid"),
        Case("unicode", _portal_header(kid="\u043a\u043b\u044e\u0447-\U0001f511"), "unknown_kid"),
        Case("empty-string", _portal_header(kid=""), "malformed_kid"),
        Case("numeric", _portal_header(kid=7), "malformed_kid"),
        Case("object", _portal_header(kid={"kid": "x"}), "malformed_kid"),
        Case("list", _portal_header(kid=["x"]), "malformed_kid"),
    ],
}


def assertion_request(user_tokens: dict[str, Any], client_assertion: str) -> dict[str, Any]:
    """The portal exchanges the customer's token, authenticated by a client assertion."""
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": user_tokens["access_token"],
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **assertion_form(client_assertion),
    }


def jwt_profile_request(support_tokens: dict[str, Any], subject_jwt: str, **params: Any) -> dict[str, Any]:
    """Support acts for the customer the portal names in a JWT it signed (client secret auth)."""
    return {
        "subject_token": subject_jwt,
        "subject_token_type": JWT_TYPE,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }


def test_forged_client_assertion(http, subtests, keys, user_tokens):
    for family, cases in CLIENT_JWT_FORGERIES.items():
        with subtests.test(f"{family}/positive-control"):
            control = sign(keys.portal, assertion_claims("portal"))
            response = http.post(assertion_request(user_tokens, control))
            assert response.status_code == 200, response.text
        for case in cases:
            with subtests.test(f"{family}/{case.id}"):
                token = case.forge(keys, assertion_claims("portal"))
                refused(
                    lambda token=token: http.post(assertion_request(user_tokens, token)),
                    **INVALID_CLIENT,
                    reasons=[],
                    secrets=[token, keys.portal.key, user_tokens["access_token"]],
                )


def test_forged_subject_jwt(http, subtests, portal, keys, impersonation, end_user_in_acme):
    for family, cases in CLIENT_JWT_FORGERIES.items():
        with subtests.test(f"{family}/positive-control"):
            control = sign(keys.portal, subject_claims("portal", end_user_in_acme))
            response = http.exchange(portal, **jwt_profile_request(impersonation, control))
            assert response.status_code == 200, response.text
        for case in cases:
            with subtests.test(f"{family}/{case.id}"):
                token = case.forge(keys, subject_claims("portal", end_user_in_acme))
                refused(
                    lambda token=token: http.exchange(portal, **jwt_profile_request(impersonation, token)),
                    **INVALID_REQUEST,
                    reasons=[case.reason],
                    secrets=[token, keys.portal.key, portal.plain_secret, impersonation["access_token"]],
                )


@pytest.mark.parametrize("where", ["client_assertion", "subject_jwt"])
def test_kid_null(http, portal, keys, impersonation, user_tokens, end_user_in_acme, where):
    """``"kid": null`` is not a kid (it must be a string), nor the absence of one."""
    if where == "client_assertion":
        token = _portal_header(kid=None)(keys, assertion_claims("portal"))
        refused(
            lambda: http.post(assertion_request(user_tokens, token)),
            **INVALID_CLIENT,
            secrets=[token, keys.portal.key, user_tokens["access_token"]],
        )
    else:
        token = _portal_header(kid=None)(keys, subject_claims("portal", end_user_in_acme))
        refused(
            lambda: http.exchange(portal, **jwt_profile_request(impersonation, token)),
            **INVALID_REQUEST,
            reasons=["malformed_kid"],
            secrets=[token, keys.portal.key, portal.plain_secret, impersonation["access_token"]],
        )


# 9-10: claims a client signs that are not acceptable ------------------------------------------

LOOK_ALIKE_ISSUERS = [
    ("trailing-slash", f"{ISSUER}/"),
    ("different-case", "http://127.0.0.1:8000/O"),
    ("scheme-in-capitals", "HTTP://127.0.0.1:8000/o"),
    ("extra-path", f"{ISSUER}/token"),
    ("suffix-host", "http://127.0.0.1:8000/o.evil.example"),
    ("userinfo", "http://127.0.0.1:8000@evil.example/o"),
    ("list-with-another-audience", [ISSUER, "https://evil.example/"]),
    ("list-with-the-token-endpoint-and-another", [ISSUER, TOKEN_ENDPOINT, CRM]),
    ("empty-list", []),
    ("cyrillic-o-homoglyph", "http://127.0.0.1:8000/\u043e"),
    ("zero-width-space", f"{ISSUER}\u200b"),
    ("token-endpoint-without-slash", TOKEN_ENDPOINT.rstrip("/")),
    ("https", ISSUER.replace("http:", "https:")),
]
LOOK_ALIKE_CLIENT_IDS = [
    ("capitalised", "Portal"),
    ("trailing-space", "portal "),
    ("trailing-slash", "portal/"),
    ("cyrillic-o-homoglyph", "p\u043ertal"),
    ("another-client", "crm"),
]
TIMES: list[tuple[str, Callable[[int], dict[str, Any]], str]] = [
    ("expired", lambda now: {"iat": now - 600, "exp": now - 300}, "expired"),
    ("nbf-in-the-future", lambda now: {"nbf": now + 600, "exp": now + 900}, "not_yet_valid"),
    ("iat-in-the-future", lambda now: {"iat": now + 600, "exp": now + 900}, "issued_in_the_future"),
    ("lifetime-over-an-hour", lambda now: {"exp": now + 3700}, "lifetime_too_long"),
    ("issued-two-hours-ago", lambda now: {"iat": now - 7200, "exp": now + 300}, "lifetime_too_long"),
    ("exp-as-a-string", lambda now: {"exp": str(now + 300)}, "missing_exp_or_iat"),
]


def claim_attacks(issuer_claims: Callable[[str], dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """(id, claim overrides, subject JWT reason) of every claim attack, times taken now."""
    now = int(time.time())
    return [
        *((f"aud-{name}", {"aud": aud}, "wrong_audience") for name, aud in LOOK_ALIKE_ISSUERS),
        *(
            (f"iss-{name}", issuer_claims(client_id), "wrong_issuer")
            for name, client_id in LOOK_ALIKE_CLIENT_IDS
        ),
        *((name, overrides(now), reason) for name, overrides, reason in TIMES),
    ]


def test_client_assertion_claims(http, subtests, keys, user_tokens):
    with subtests.test("positive-control"):
        token = sign(keys.portal, assertion_claims("portal"))
        assert http.post(assertion_request(user_tokens, token)).status_code == 200
    # An assertion's iss and sub both name the client: a look-alike issuer changes both.
    for name, overrides, _reason in claim_attacks(lambda client_id: {"iss": client_id, "sub": client_id}):
        with subtests.test(name):
            token = sign(keys.portal, assertion_claims("portal", **overrides))
            refused(
                lambda token=token: http.post(assertion_request(user_tokens, token)),
                **INVALID_CLIENT,
                secrets=[token, keys.portal.key, user_tokens["access_token"]],
            )


def test_subject_jwt_claims(http, subtests, portal, keys, impersonation, end_user_in_acme):
    with subtests.test("positive-control"):
        token = sign(keys.portal, subject_claims("portal", end_user_in_acme))
        assert http.exchange(portal, **jwt_profile_request(impersonation, token)).status_code == 200
    for name, overrides, reason in claim_attacks(lambda client_id: {"iss": client_id}):
        with subtests.test(name):
            token = sign(keys.portal, subject_claims("portal", end_user_in_acme, **overrides))
            refused(
                lambda token=token: http.exchange(portal, **jwt_profile_request(impersonation, token)),
                **INVALID_REQUEST,
                reasons=[reason],
                secrets=[token, keys.portal.key, portal.plain_secret, impersonation["access_token"]],
            )


# 11: a jti is usable once ---------------------------------------------------------------------


def test_a_client_assertion_replayed(http, keys, user_tokens):
    token = sign(keys.portal, assertion_claims("portal"))
    assert http.post(assertion_request(user_tokens, token)).status_code == 200
    refused(
        lambda: http.post(assertion_request(user_tokens, token)),
        **INVALID_CLIENT,
        secrets=[token, keys.portal.key, user_tokens["access_token"]],
    )


def test_a_subject_jwt_replayed(http, portal, keys, impersonation, end_user_in_acme):
    token = sign(keys.portal, subject_claims("portal", end_user_in_acme))
    assert http.exchange(portal, **jwt_profile_request(impersonation, token)).status_code == 200
    refused(
        lambda: http.exchange(portal, **jwt_profile_request(impersonation, token)),
        **INVALID_REQUEST,
        reasons=["replayed_jti"],
        secrets=[token, keys.portal.key, portal.plain_secret, impersonation["access_token"]],
    )


# 1-10 again: ID tokens this server issued, as the subject or the actor token -------------------
#
# The reader never takes the key from the token: the jti finds the IDToken row, and the row's
# application key verifies under its algorithm alone. So every forgery an attacker can make is a
# bad signature. The last family is re-signed by the server's own key, which no attacker holds:
# it proves the claim checks behind the signature (defence in depth).


@dataclass
class IDTokens:
    genuine: str  # the ID token attacked, as this server issued it
    other: str  # another user's genuine ID token (Mallory's)
    oidc_key: dict[str, Any]  # the server's public key, as its JWKS publishes it
    keys: Keys


def _id_none(alg: str | None, signature: bytes) -> Callable[[IDTokens], str]:
    def forge(t: IDTokens) -> str:
        header = {name: value for name, value in header_of(t.genuine).items() if name != "alg"}
        return unsigned(header | ({} if alg is None else {"alg": alg}), claims_of(t.genuine), signature)

    return forge


def _id_hmac(alg: str, form: str) -> Callable[[IDTokens], str]:
    def forge(t: IDTokens) -> str:
        forms = public_key_forms(jwk.JWK(**t.oidc_key).get_op_key("verify"))
        forms["jwks-json-as-published"] = json.dumps(t.oidc_key).encode()
        return hmac_signed({**header_of(t.genuine), "alg": alg}, claims_of(t.genuine), forms[form])

    return forge


def _id_by(key: Callable[[Keys], KeyFile], **header: Any) -> Callable[[IDTokens], str]:
    """The genuine claims, signed by a key the attacker holds, under the genuine header (+ changes)."""

    def forge(t: IDTokens) -> str:
        key_file = key(t.keys)
        values = {name: value(t.keys) if callable(value) else value for name, value in header.items()}
        return by_key(
            key_file, {**header_of(t.genuine), "alg": key_file.algorithm, **values}, claims_of(t.genuine)
        )

    return forge


def _id_edited(**changes: Callable[[IDTokens], Any] | Any) -> Callable[[IDTokens], str]:
    def forge(t: IDTokens) -> str:
        return edited(
            t.genuine, **{name: value(t) if callable(value) else value for name, value in changes.items()}
        )

    return forge


def _id_by_server(header: dict[str, Any] | None = None, **changes: Any) -> Callable[[IDTokens], str]:
    def forge(t: IDTokens) -> str:
        values = {name: value(t) if callable(value) else value for name, value in changes.items()}
        return by_server(t.genuine, header, **values)

    return forge


def _id_row_expired(t: IDTokens) -> str:
    """The genuine token, once its row has expired (time passing, as far as the server knows)."""
    jti = claims_of(t.genuine)["jti"]
    IDToken.objects.filter(jti=jti).update(expires=timezone.now() - timezone.timedelta(seconds=1))
    return t.genuine


ID_TOKEN_FORGERIES = {
    "alg-none": [
        Case(f"alg={alg!r}-{name}-signature", _id_none(alg, signature), "bad_signature")
        for alg in NONE_SPELLINGS
        for name, signature in SIGNATURES.items()
    ],
    "hmac-keyed-with-the-oidc-public-key": [
        Case(f"{alg}-{form}", _id_hmac(alg, form), "bad_signature")
        for alg in ("HS256", "HS384", "HS512")
        for form in ("spki-pem", "pkcs1-pem", "jwk-json", "jwks-json-as-published")
    ],
    "another-alg-than-the-keys": [
        Case("PS256-by-the-servers-own-key", _id_by_server({"alg": "PS256"}), "bad_signature"),
        Case("RS512-by-the-servers-own-key", _id_by_server({"alg": "RS512"}), "bad_signature"),
        Case("ES256-by-an-ec-key", _id_by(lambda k: k.rogue_ec), "bad_signature"),
    ],
    "edited-payload": [
        Case("sub-another-user", _id_edited(sub=lambda t: t.keys.someone_else), "bad_signature"),
        Case("exp-extended", _id_edited(exp=int(time.time()) + 86_400), "bad_signature"),
        Case("aud-another-client", _id_edited(aud=CRM), "bad_signature"),
        Case("may_act-added", _id_edited(may_act=lambda t: {"sub": t.keys.someone_else}), "bad_signature"),
        Case("jti-of-another-id-token", _id_edited(jti=lambda t: claims_of(t.other)["jti"]), "bad_signature"),
        Case("signature-stripped", lambda t: t.genuine.rsplit(".", 1)[0] + ".", "bad_signature"),
        Case(
            "signature-of-another-id-token",
            lambda t: t.genuine.rsplit(".", 1)[0] + "." + t.other.rsplit(".", 1)[1],
            "bad_signature",
        ),
    ],
    "foreign-keys": [
        Case("attackers-key-servers-kid", _id_by(lambda k: k.rogue), "bad_signature"),
        Case("the-clients-own-registered-key", _id_by(lambda k: k.portal), "bad_signature"),
        Case("another-clients-registered-key", _id_by(lambda k: k.mallory_app), "bad_signature"),
    ],
    "header": [
        Case("crit-by-the-servers-own-key", _id_by_server({"crit": ["exp"]}), "bad_signature"),
        Case(
            "attackers-key-in-jwk",
            _id_by(lambda k: k.rogue, jwk=lambda k: jwk_of(k.rogue)),
            "bad_signature",
        ),
        Case(
            "attackers-jku",
            _id_by(lambda k: k.rogue, jku="https://evil.example/jwks.json"),
            "bad_signature",
        ),
        Case(
            "attackers-x5u",
            _id_by(lambda k: k.rogue, x5u="https://evil.example/cert.pem"),
            "bad_signature",
        ),
        Case(
            "attackers-kid-path-traversal",
            _id_by(lambda k: k.rogue, kid="../../etc/passwd"),
            "bad_signature",
        ),
        Case("attackers-kid-sql-injection", _id_by(lambda k: k.rogue, kid="' OR 1=1 --"), "bad_signature"),
        Case("attackers-kid-numeric", _id_by(lambda k: k.rogue, kid=7), "bad_signature"),
    ],
    "claims-behind-the-servers-own-signature": [
        *(Case(f"iss-{name}", _id_by_server(iss=iss), "wrong_issuer") for name, iss in LOOK_ALIKE_ISSUERS),
        *(
            Case(f"aud-{name}", _id_by_server(aud=aud), "wrong_audience")
            for name, aud in [*LOOK_ALIKE_CLIENT_IDS, ("empty-list", []), ("list-of-another", [CRM])]
        ),
        Case("sub-another-user", _id_by_server(sub=lambda t: t.keys.someone_else), "wrong_subject"),
        Case(
            "jti-of-another-users-token",
            _id_by_server(jti=lambda t: claims_of(t.other)["jti"]),
            "wrong_subject",
        ),
        Case("exp-in-the-past", _id_by_server(exp=int(time.time()) - 60), "expired_token"),
        Case(
            "exp-as-a-string", _id_by_server(exp=lambda t: str(claims_of(t.genuine)["exp"])), "expired_token"
        ),
        Case("exp-true", _id_by_server(exp=True), "expired_token"),
        # Last: it expires the genuine token's row.
        Case("row-expired", _id_row_expired, "expired_token"),
    ],
}


@pytest.mark.parametrize("position", ["subject_token", "actor_token"])
def test_forged_id_token(
    http,
    subtests,
    live_server,
    portal,
    keys,
    impersonation,
    user_tokens,
    end_user_in_acme,
    login,
    mallory,
    position,
):
    oidc_key = requests.get(f"{live_server.url}/o/.well-known/jwks.json", timeout=10).json()["keys"][0]
    other = login(mallory)["id_token"]
    if position == "subject_token":
        # The customer's own ID token, exchanged by the portal.
        genuine = user_tokens["id_token"]

        def send(token: str) -> Any:
            return http.exchange(portal, subject_token=token, subject_token_type=ID_TOKEN_TYPE)

    else:
        # Support's ID token, acting for the customer.
        genuine = impersonation["id_token"]
        customer = str(end_user_in_acme.pk)

        def send(token: str) -> Any:
            return http.exchange(
                portal,
                subject_token=customer,
                subject_token_type=USER_ID_TYPE,
                actor_token=token,
                actor_token_type=ID_TOKEN_TYPE,
            )

    tokens = IDTokens(genuine=genuine, other=other, oidc_key=oidc_key, keys=keys)
    for family, cases in ID_TOKEN_FORGERIES.items():
        with subtests.test(f"{family}/positive-control"):
            assert send(genuine).status_code == 200
        for case in cases:
            with subtests.test(f"{family}/{case.id}"):
                token = case.forge(tokens)
                refused(
                    lambda token=token: send(token),
                    **INVALID_REQUEST,
                    reasons=[case.reason],
                    secrets=[token, genuine, portal.plain_secret],
                )


# 12: one kind of token presented as another -------------------------------------------------


# (where, the token presented, the type it is presented as, the reason). "subject" exchanges the
# customer's token; "subject-jwt" presents it as the self-signed subject of an impersonation by
# support; "actor" presents support's token as the actor for the customer (by user id).
CONFUSIONS = [
    ("subject", "id-token", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("subject", "access-token", ID_TOKEN_TYPE, "malformed_id_token"),
    ("subject", "jwt-access-token", ID_TOKEN_TYPE, "unknown_token"),
    ("subject", "refresh-token", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("subject", "refresh-token", ID_TOKEN_TYPE, "malformed_id_token"),
    ("subject", "refresh-token", REFRESH_TOKEN_TYPE, "invalid_request"),
    ("subject", "self-signed-jwt", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("subject", "self-signed-jwt", ID_TOKEN_TYPE, "unknown_token"),
    ("subject", "client-assertion", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("subject-jwt", "id-token", JWT_TYPE, "unknown_kid"),
    ("subject-jwt", "jwt-access-token", JWT_TYPE, "wrong_typ"),
    ("actor", "id-token", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("actor", "access-token", ID_TOKEN_TYPE, "malformed_id_token"),
    ("actor", "jwt-access-token", ID_TOKEN_TYPE, "unknown_token"),
    ("actor", "refresh-token", ACCESS_TOKEN_TYPE, "unknown_token"),
    ("actor", "refresh-token", REFRESH_TOKEN_TYPE, "invalid_request"),
    ("actor", "self-signed-jwt", JWT_TYPE, "invalid_request"),
    ("actor", "self-signed-jwt", ACCESS_TOKEN_TYPE, "unknown_token"),
]
CONFUSION_CONTROLS = [
    ("subject", "access-token", ACCESS_TOKEN_TYPE),
    ("subject", "jwt-access-token", ACCESS_TOKEN_TYPE),
    ("subject", "id-token", ID_TOKEN_TYPE),
    ("subject-jwt", "self-signed-jwt", JWT_TYPE),
    ("actor", "access-token", ACCESS_TOKEN_TYPE),
    ("actor", "id-token", ID_TOKEN_TYPE),
]


def test_tokens_presented_as_another_type(
    http, subtests, portal, keys, impersonation, user_tokens, end_user_in_acme
):
    support_tokens = impersonation

    def as_jwt(tokens: dict[str, Any]) -> str:
        response = http.exchange(
            portal,
            subject_token=tokens["access_token"],
            subject_token_type=ACCESS_TOKEN_TYPE,
            requested_token_type=JWT_TYPE,
        )
        return str(response.json()["access_token"])

    def presented(tokens: dict[str, Any]) -> dict[str, str]:
        return {
            "access-token": tokens["access_token"],
            "jwt-access-token": as_jwt(tokens),
            "id-token": tokens["id_token"],
            "refresh-token": tokens["refresh_token"],
            "self-signed-jwt": sign(keys.portal, subject_claims("portal", end_user_in_acme)),
            "client-assertion": sign(keys.portal, assertion_claims("portal")),
        }

    customers, supports = presented(user_tokens), presented(support_tokens)

    def request(where: str, token: str, token_type: str) -> dict[str, str]:
        if where == "subject":
            return {"subject_token": customers[token], "subject_token_type": token_type}
        if where == "subject-jwt":
            return {**jwt_profile_request(support_tokens, customers[token]), "subject_token_type": token_type}
        return {
            "subject_token": str(end_user_in_acme.pk),
            "subject_token_type": USER_ID_TYPE,
            "actor_token": supports[token],
            "actor_token_type": token_type,
        }

    def name(where: str, token: str, token_type: str) -> str:
        return f"{where}/{token}-as-{token_type.rsplit(':', 1)[1]}"

    for where, token, token_type in CONFUSION_CONTROLS:
        with subtests.test(f"positive-control/{name(where, token, token_type)}"):
            response = http.exchange(portal, **request(where, token, token_type))
            assert response.status_code == 200, response.text
    for where, token, token_type, reason in CONFUSIONS:
        with subtests.test(name(where, token, token_type)):
            params = request(where, token, token_type)
            shape = reason == "invalid_request"
            refused(
                lambda params=params: http.exchange(portal, **params),
                status=400,
                error="invalid_request",
                description=SHAPE_DESCRIPTIONS[token_type] if shape else TOKEN_REFUSED,
                reasons=[reason],
                secrets=[value for key, value in params.items() if key.endswith("_token")],
            )


# 13: act and may_act a client signs, and the server's own act chain ---------------------------


def deep_act(depth: int) -> str:
    """JSON text of an ``act`` claim nested ``depth`` times: json.dumps would recurse too deep."""
    return '{"act":' * depth + '{"iss":"https://evil.example/","sub":"1"}' + "}" * depth


def with_claim(claims: dict[str, Any], name: str, json_text: str) -> str:
    """The claims as JSON text, with one more claim given as JSON text."""
    return json.dumps(claims)[:-1] + f', "{name}": {json_text}' + "}"


ABSURD_ACT = [
    ("act-string", "act", '"root"'),
    ("act-list", "act", '[{"sub": "1"}, {"sub": "2"}]'),
    ("act-naming-mallory", "act", None),  # filled in with Mallory's pk
    ("act-null", "act", "null"),
    ("act-huge-number", "act", "1e308"),
    ("act-50-deep", "act", deep_act(50)),
    ("may_act-naming-mallory", "may_act", None),
    ("may_act-string", "may_act", '"anyone"'),
    ("may_act-list", "may_act", '[{"sub": "1"}]'),
    ("may_act-200-deep", "may_act", deep_act(200)),
]


def absurd_claims(mallory: Any) -> list[tuple[str, str, str]]:
    naming_mallory = json.dumps({"iss": ISSUER, "sub": str(mallory.pk)})
    return [(name, claim, text or naming_mallory) for name, claim, text in ABSURD_ACT]


def refused_or_ignored(send: Callable[[], Any], *, reason: str, ignored: Callable[[Any], None]) -> None:
    """For JSON nested past the parser's recursion limit, which depends on the Python: refused
    as malformed (3.11), or read and then ``ignored`` must hold. Never a 5xx, nothing half done."""
    rows_before, audit_before = token_rows(), last_audit_pk()
    response = send()
    if response.status_code == 200:
        ignored(response)
        return
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request"), response.text
    assert not set(TOKEN_FIELDS) & response.json().keys()
    assert token_rows() == rows_before
    assert audit_rows_after(audit_before) == [(REFUSED, reason)]


def test_act_in_a_subject_jwt_is_ignored(
    http, subtests, portal, keys, impersonation, support, end_user_in_acme, mallory
):
    """The issued ``act`` names support, as the server computed it, whatever the client wrote."""
    server_act = {"iss": ISSUER, "sub": str(support.pk)}

    def subject_jwt(claim: str, json_text: str) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": keys.portal.kid}
        payload = with_claim(subject_claims("portal", end_user_in_acme), claim, json_text)
        return signed(private_key(keys.portal.key), header, payload)

    def send(token: str) -> Any:
        return http.exchange(
            portal, **jwt_profile_request(impersonation, token, requested_token_type=JWT_TYPE)
        )

    def has_the_server_act(response: Any) -> None:
        assert response.status_code == 200, response.text
        assert verify(response.json()["access_token"])[1]["act"] == server_act

    with subtests.test("positive-control"):
        has_the_server_act(send(sign(keys.portal, subject_claims("portal", end_user_in_acme))))
    with subtests.test("act-1000-deep"):
        token = subject_jwt("act", deep_act(1000))
        refused_or_ignored(lambda: send(token), reason="malformed_jwt", ignored=has_the_server_act)
    for name, claim, json_text in absurd_claims(mallory):
        with subtests.test(name):
            has_the_server_act(send(subject_jwt(claim, json_text)))


def test_act_in_a_client_assertion_is_ignored(http, subtests, keys, user_tokens, mallory):
    """An assertion authenticates the client; an act in it makes nothing an impersonation."""

    def client_assertion(claim: str, json_text: str) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": keys.portal.kid}
        payload = with_claim(assertion_claims("portal"), claim, json_text)
        return signed(private_key(keys.portal.key), header, payload)

    def send(token: str) -> Any:
        return http.post({**assertion_request(user_tokens, token), "requested_token_type": JWT_TYPE})

    def has_no_act(response: Any) -> None:
        assert response.status_code == 200, response.text
        assert "act" not in verify(response.json()["access_token"])[1]

    with subtests.test("positive-control"):
        has_no_act(send(sign(keys.portal, assertion_claims("portal"))))
    with subtests.test("act-1000-deep"):
        # Longer than any assertion is allowed to be (8 KB): refused before it is parsed.
        token = client_assertion("act", deep_act(1000))
        refused(
            lambda: send(token),
            **INVALID_CLIENT,
            secrets=[token, keys.portal.key, user_tokens["access_token"]],
        )
    for name, claim, json_text in [("act-500-deep", "act", deep_act(500)), *absurd_claims(mallory)]:
        with subtests.test(name):
            has_no_act(send(client_assertion(claim, json_text)))


def test_an_act_chain_deeper_than_max_act_depth(http, portal, keys, impersonation, support, end_user_in_acme):
    """Support acts again and again on the token it got: each exchange nests the act one deeper,
    until the chain would name more than MAX_ACT_DEPTH actors."""
    max_depth = token_exchange_settings.MAX_ACT_DEPTH
    support_act = {"iss": ISSUER, "sub": str(support.pk)}
    subject_jwt = sign(keys.portal, subject_claims("portal", end_user_in_acme))
    response = http.exchange(
        portal, **jwt_profile_request(impersonation, subject_jwt, requested_token_type=JWT_TYPE)
    )
    expected_act = support_act
    for depth in range(1, max_depth + 1):
        assert response.status_code == 200, (depth, response.text)
        token = response.json()["access_token"]
        assert verify(token)[1]["act"] == expected_act
        expected_act = {**support_act, "act": expected_act}
        if depth < max_depth:
            response = http.exchange(
                portal,
                subject_token=token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                actor_token=impersonation["access_token"],
                actor_token_type=ACCESS_TOKEN_TYPE,
                requested_token_type=JWT_TYPE,
            )
    refused(
        lambda: http.exchange(
            portal,
            subject_token=token,
            subject_token_type=ACCESS_TOKEN_TYPE,
            actor_token=impersonation["access_token"],
            actor_token_type=ACCESS_TOKEN_TYPE,
        ),
        **INVALID_REQUEST,
        reasons=["act_chain_too_deep"],
        secrets=[token, impersonation["access_token"]],
    )

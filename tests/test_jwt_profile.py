"""ZITADEL's "impersonation by JWT profile": private_key_jwt client authentication and a
self-signed subject JWT, and every way an attacker would bend either (RFC 7523, RFC 8725)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    GRANT_TYPE,
    JWT_TYPE,
    PRIVATE_KEY_JWT,
)
from token_exchange.models import AuditEvent

from .client_jwt import (
    ISSUER,
    TOKEN_ENDPOINT,
    KeyFile,
    assertion,
    assertion_claims,
    assertion_form,
    hmac_signed,
    register_key,
    sign,
    sign_any_header,
    subject_claims,
    unsigned,
)
from .conftest import basic, form_post, make_app, refusals, token_events
from .jwt_helpers import verify
from .test_exchange import introspect

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()
EventType = AuditEvent.EventType


def token_rows() -> tuple[int, int, int]:
    return AccessToken.objects.count(), RefreshToken.objects.count(), IDToken.objects.count()


@pytest.fixture
def portal_key(portal: Any) -> KeyFile:
    """The portal's key file, as `manage.py createclientkey portal` prints it."""
    return register_key(portal)


@pytest.fixture
def mallory_app(db: None) -> Any:
    """A client of the attacker's, with token exchange enabled and a key of its own."""
    return make_app("mallory-app")


@pytest.fixture
def mallory_key(mallory_app: Any) -> KeyFile:
    return register_key(mallory_app)


def post(form: dict[str, Any], **extra: Any) -> Any:
    return form_post(Client(), "/o/token/", form, **extra)


def jwt_profile_form(actor_tokens: dict[str, Any], subject_jwt: str, **params: Any) -> dict[str, Any]:
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": subject_jwt,
        "subject_token_type": JWT_TYPE,
        "actor_token": actor_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }


def assert_unauthenticated(response: Any, before: tuple[int, int, int]) -> None:
    """invalid_client (401), nothing issued, nothing written, nothing audited."""
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"] == "invalid_client"
    assert "access_token" not in body
    assert token_rows() == before
    assert not token_events().exists()


def assert_subject_refused(response: Any, before: tuple[int, int, int], reason: str) -> None:
    """invalid_request (400), nothing issued, one refusal row with the reason."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"] == "The request was refused."
    assert "access_token" not in body
    assert token_rows() == before
    assert [row.payload["reason"] for row in refusals()] == [reason]
    assert not token_events().exclude(event_type=EventType.TOKEN_EXCHANGE_REFUSED).exists()


# The guide's example ---------------------------------------------------------------------------


def test_impersonation_by_jwt_profile(
    portal, portal_key, aggregates, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme))
    response = post(
        jwt_profile_form(
            support_tokens,
            subject_jwt,
            requested_token_type=JWT_TYPE,
            scope="openid profile email",
            **assertion_form(assertion(portal_key)),
        )
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == JWT_TYPE
    assert set(body["scope"].split()) == {"openid", "profile", "email"}
    _header, claims = verify(body["access_token"])
    assert claims["sub"] == str(end_user_in_acme.pk)
    assert claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    # The subject JWT names this server as its audience; the token's audience is the actor's.
    assert claims["aud"] == introspect(support_tokens["access_token"], aggregates)["aud"]
    _header, id_claims = verify(body["id_token"])
    assert id_claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    assert id_claims["email"] == end_user_in_acme.email
    event = AuditEvent.objects.get(event_type=EventType.USER_IMPERSONATED)
    assert (event.actor, event.subject, event.application) == (support, end_user_in_acme, portal)
    assert subject_jwt not in json.dumps(event.payload)


def test_the_subject_jwt_works_with_a_client_secret_too(
    token_endpoint, portal, portal_key, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    form = jwt_profile_form(support_tokens, sign(portal_key, subject_claims("portal", end_user_in_acme)))
    response = post(form, HTTP_AUTHORIZATION=basic("portal", portal.plain_secret))
    assert response.status_code == 200, response.content
    assert AccessToken.objects.get(token_checksum__isnull=False, user=end_user_in_acme).exchanged.act


# private_key_jwt for DOT's own grants and endpoints ------------------------------------------


@pytest.fixture
def backend(db: None) -> Any:
    """A service with the client_credentials grant and a key instead of a shared secret."""
    app = make_app("backend", exchange=None, authorization_grant_type="client-credentials")
    return app


def test_client_credentials_with_private_key_jwt(backend):
    key = register_key(backend, "ES256")
    response = post({"grant_type": "client_credentials", **assertion_form(assertion(key))})
    assert response.status_code == 200, response.content
    assert AccessToken.objects.get().application == backend


def test_refresh_and_introspection_with_private_key_jwt(login, portal, portal_key, aggregates, end_user):
    tokens = login(end_user, scope="openid offline_access read")
    refreshed = post(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            **assertion_form(assertion(portal_key)),
        }
    )
    assert refreshed.status_code == 200, refreshed.content
    aggregates_key = register_key(aggregates, "PS256")
    introspection = Client().post(
        "/o/introspect/",
        {"token": refreshed.json()["access_token"], **assertion_form(assertion(aggregates_key))},
    )
    assert introspection.status_code == 200
    assert introspection.json()["active"] is True


def test_discovery_lists_private_key_jwt():
    for path in ("/o/.well-known/openid-configuration", "/o/.well-known/oauth-authorization-server"):
        metadata = Client().get(path).json()
        assert PRIVATE_KEY_JWT in metadata["token_endpoint_auth_methods_supported"], path
        assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"], path
        algorithms = metadata["token_endpoint_auth_signing_alg_values_supported"]
        assert {"RS256", "PS256", "ES256"} <= set(algorithms)
        assert not {"none", "HS256", "HS384", "HS512"} & set(algorithms)


# The assertion: every rule, each refused with invalid_client and nothing issued ---------------


@pytest.mark.parametrize(
    "aud",
    [ISSUER, [ISSUER], TOKEN_ENDPOINT, [TOKEN_ENDPOINT], [ISSUER, TOKEN_ENDPOINT]],
    ids=["issuer", "issuer-list", "token-endpoint", "token-endpoint-list", "both"],
)
def test_assertion_audiences_that_name_this_server(backend, aud):
    key = register_key(backend)
    response = post({"grant_type": "client_credentials", **assertion_form(assertion(key, aud=aud))})
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "aud",
    [
        None,
        "",
        ISSUER + "/",
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8000/o/token",
        "https://127.0.0.1:8000/o",
        "http://127.0.0.1:8000/o/introspect/",
        "HTTP://127.0.0.1:8000/o",
        "http://127.0.0.1:8000/o.evil.example",
        "http://evil.example/o",
        [],
        [ISSUER, "https://evil.example/"],
        [[ISSUER]],
        {"aud": ISSUER},
        1,
    ],
)
def test_assertion_audiences_refused(backend, aud):
    key = register_key(backend)
    before = token_rows()
    claims = assertion_claims("backend")
    claims["aud"] = aud
    response = post({"grant_type": "client_credentials", **assertion_form(sign(key, claims))})
    assert_unauthenticated(response, before)


def _now() -> int:
    return int(time.time())


class Later(int):
    """A time claim given as seconds from the moment the JWT is signed."""


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": None},
        {"iat": None},
        {"jti": None},
        {"jti": ""},
        {"jti": 12345},
        {"jti": "x" * 256},
        {"exp": "9999999999"},
        {"exp": True},
        {"iat": "now"},
        {"exp": -1},
        {"nbf": "soon"},
        {"sub": "someone-else"},
        {"sub": None},
        {"iss": "aggregates"},
    ],
    ids=lambda overrides: ",".join(f"{k}={v!r}"[:30] for k, v in overrides.items()),
)
def test_assertion_claims_refused(backend, overrides):
    key = register_key(backend)
    before = token_rows()
    response = post({"grant_type": "client_credentials", **assertion_form(assertion(key, **overrides))})
    assert_unauthenticated(response, before)


@pytest.mark.parametrize(
    ("iat", "exp", "nbf", "accepted"),
    [
        (-60, 240, None, True),
        (-300, -30, None, True),  # expired 30 s ago: within the 60 s leeway
        (-400, -90, None, False),  # expired beyond the leeway
        (30, 330, None, True),  # issued 30 s ahead: clock skew
        (120, 420, None, False),  # issued in the future
        (0, 3600, None, True),  # one hour exactly
        (0, 3601, None, False),  # too long-lived
        (-7200, 3000, None, False),  # lives 2h50 from iat
        (0, 0, None, False),  # exp not after iat
        (0, 300, 30, True),
        (0, 300, 120, False),  # not yet valid
    ],
)
def test_assertion_lifetime(backend, iat, exp, nbf, accepted):
    key = register_key(backend)
    now = _now()
    claims = {"iat": now + iat, "exp": now + exp, "nbf": None if nbf is None else now + nbf}
    before = token_rows()
    response = post({"grant_type": "client_credentials", **assertion_form(assertion(key, **claims))})
    if accepted:
        assert response.status_code == 200, response.content
    else:
        assert_unauthenticated(response, before)


def test_assertion_jti_is_usable_once(backend):
    key = register_key(backend)
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    assert post(form).status_code == 200
    before = token_rows()
    assert_unauthenticated(post(form), before)


def test_a_jti_is_usable_once_per_client_not_globally(backend, aggregates):
    backend_key, aggregates_key = register_key(backend), register_key(aggregates)
    shared = "the-same-jti"
    for key in (backend_key, aggregates_key):
        form = {"grant_type": "client_credentials", **assertion_form(assertion(key, jti=shared))}
        assert post(form).status_code == 200


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "", None])
def test_alg_none_in_every_spelling(backend, alg):
    key = register_key(backend)
    before = token_rows()
    header = {"typ": "JWT", "kid": key.kid} | ({} if alg is None else {"alg": alg})
    for token in (
        unsigned(header, assertion_claims("backend")),
        unsigned(header, assertion_claims("backend"), signature=b"\x00" * 32),
    ):
        assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def _public_key_forms(key: KeyFile) -> dict[str, bytes]:
    public = jwk.JWK.from_pem(key.public_key.encode())
    from cryptography.hazmat.primitives import serialization

    pkcs1 = public.get_op_key("verify").public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    return {
        "pem": key.public_key.encode(),
        "pem-stripped": key.public_key.strip().encode(),
        "pkcs1": pkcs1,
        "jwk": public.export_public().encode(),
    }


@pytest.mark.parametrize("form", ["pem", "pem-stripped", "pkcs1", "jwk"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key(backend, form, alg):
    """Algorithm confusion: the public key used as an HMAC secret (RFC 8725 §2.1)."""
    key = register_key(backend)
    before = token_rows()
    token = hmac_signed(
        {"alg": alg, "kid": key.kid}, assertion_claims("backend"), _public_key_forms(key)[form]
    )
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_another_algorithm_than_the_keys(backend):
    key = register_key(backend)  # registered for RS256
    before = token_rows()
    for alg in ("PS256", "RS512"):
        token = sign(key, assertion_claims("backend"), alg=alg)  # really signed by the key
        assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_edited_payload(backend):
    key = register_key(backend)
    before = token_rows()
    head, _payload, signature = assertion(key).split(".")
    forged = unsigned({}, assertion_claims("backend", exp=_now() + 600)).split(".")[1]
    token = f"{head}.{forged}.{signature}"
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_another_clients_key_cannot_sign_for_this_client(backend, mallory_key):
    register_key(backend)
    before = token_rows()
    claims = assertion_claims("backend")
    for kid in (mallory_key.kid, None):
        token = sign(mallory_key, claims | {"jti": f"jti-{kid}"}, kid=kid)
        assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


@pytest.mark.parametrize(
    "headers",
    [
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"x5c": ["MIIB"]},
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"typ": "at+jwt"},
        {"typ": "id_token+jwt"},
        {"typ": 7},
    ],
    ids=lambda headers: ",".join(headers),
)
def test_headers_that_are_refused(backend, headers):
    key = register_key(backend)
    before = token_rows()
    token = sign(key, assertion_claims("backend"), **headers)
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_a_key_embedded_in_the_header_is_not_trusted(backend, mallory_key):
    register_key(backend)
    before = token_rows()
    attacker_jwk = json.loads(jwk.JWK.from_pem(mallory_key.public_key.encode()).export_public())
    token = sign(mallory_key, assertion_claims("backend"), kid=None, jwk=attacker_jwk)
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", "client-authentication+jwt"])
def test_accepted_typ_values(backend, typ):
    key = register_key(backend)
    token = sign(key, assertion_claims("backend"), typ=typ)
    assert post({"grant_type": "client_credentials", **assertion_form(token)}).status_code == 200


@pytest.mark.parametrize(
    "kid",
    ["", "unknown", "../../../etc/passwd", "' OR '1'='1", "k" * 10_000, 7, ["kid"], {"kid": 1}, True],
    ids=["empty", "unknown", "path", "sql", "long", "int", "list", "object", "bool"],
)
def test_odd_kid_values(backend, kid):
    key = register_key(backend)
    before = token_rows()
    token = sign_any_header(key, {"kid": kid}, assertion_claims("backend"))
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_kid_chooses_among_several_keys_and_is_required_then(backend):
    first, second = register_key(backend), register_key(backend, "ES384")
    for key in (first, second):
        assert post({"grant_type": "client_credentials", **assertion_form(assertion(key))}).status_code == 200
    before = token_rows()
    token = sign(second, assertion_claims("backend"), kid=None)
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)


def test_without_kid_the_only_key_is_used(backend):
    key = register_key(backend)
    token = sign(key, assertion_claims("backend"), kid=None)
    assert post({"grant_type": "client_credentials", **assertion_form(token)}).status_code == 200


@pytest.mark.parametrize(
    "fields",
    [{"active": False}, {"expires_at": timezone.now() - timezone.timedelta(seconds=1)}],
    ids=["inactive", "expired"],
)
def test_retired_keys_verify_nothing(backend, fields):
    key = register_key(backend, **fields)
    before = token_rows()
    assert_unauthenticated(
        post({"grant_type": "client_credentials", **assertion_form(assertion(key))}), before
    )


def test_a_key_that_expires_later_verifies(backend):
    key = register_key(backend, expires_at=timezone.now() + timezone.timedelta(days=1))
    assert post({"grant_type": "client_credentials", **assertion_form(assertion(key))}).status_code == 200


def test_public_clients_cannot_authenticate_with_a_key(db):
    spa = make_app("spa", exchange=None, client_type="public")
    key = register_key(spa)
    before = token_rows()
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    assert_unauthenticated(post(form), before)


def test_unknown_client(backend):
    key = register_key(backend)
    before = token_rows()
    token = sign(key, assertion_claims("nobody"))
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(token)}), before)
    nul = sign(key, assertion_claims("back\x00end"))
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(nul)}), before)


def test_client_id_parameter_must_match(backend):
    key = register_key(backend)
    ok = {"grant_type": "client_credentials", "client_id": "backend", **assertion_form(assertion(key))}
    assert post(ok).status_code == 200
    before = token_rows()
    other = {"grant_type": "client_credentials", "client_id": "aggregates", **assertion_form(assertion(key))}
    assert_unauthenticated(post(other), before)


def test_one_authentication_method_per_request(backend):
    key = register_key(backend)
    before = token_rows()
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    assert_unauthenticated(post(form, HTTP_AUTHORIZATION=basic("backend", backend.plain_secret)), before)
    form = {"client_secret": backend.plain_secret, **form, **assertion_form(assertion(key))}
    assert_unauthenticated(post(form), before)


@pytest.mark.parametrize(
    "form",
    [
        {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"},
        {"client_assertion_type": ""},
        {"client_assertion_type": None},
        {"client_assertion": None},
        {"client_assertion": ""},
        {"client_assertion": "not.a.jwt"},
        {"client_assertion": "a" * 9000},
    ],
    ids=lambda form: ",".join(f"{k}={str(v)[:12]}" for k, v in form.items()),
)
def test_malformed_assertion_parameters(backend, form):
    key = register_key(backend)
    before = token_rows()
    params = {"grant_type": "client_credentials", **assertion_form(assertion(key)), **form}
    params = {name: value for name, value in params.items() if value is not None}
    assert_unauthenticated(post(params), before)


def test_assertion_in_the_query_string_is_refused(backend, aggregates):
    key = register_key(backend)
    before = token_rows()
    query = f"client_assertion_type={CLIENT_ASSERTION_TYPE}&client_assertion={assertion(key)}"
    # DOT refuses any query parameter at the token endpoint ...
    response = Client().post(f"/o/token/?{query}", {"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert token_rows() == before
    # ... and the introspection endpoint refuses credentials in a URL before reading them.
    response = Client().post(f"/o/introspect/?{query}", {"token": "anything"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_assertion_failures_on_the_exchange_grant_are_invalid_client(
    portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    before = token_rows()
    form = jwt_profile_form(
        support_tokens,
        sign(portal_key, subject_claims("portal", end_user_in_acme)),
        **assertion_form(assertion(portal_key, aud="https://evil.example/")),
    )
    assert_unauthenticated(post(form), before)


def raw_jwt(header: str, claims: str) -> str:
    """A JWT from JSON text, for what json.dumps cannot write (lone surrogates) or would refuse."""

    def segment(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return f"{segment(header)}.{segment(claims)}.AAAA"


DEEP = "[" * 2000 + "]" * 2000
HOSTILE_JWTS = {
    "deep-claims": raw_jwt('{"alg": "RS256"}', '{"iss": ' + DEEP + "}"),
    "deep-header": raw_jwt('{"alg": "RS256", "x": ' + DEEP + "}", "{}"),
    "lone-surrogate-iss": raw_jwt('{"alg": "RS256"}', '{"iss": "\\ud800", "sub": "\\ud800"}'),
    "long-iss": raw_jwt('{"alg": "RS256"}', json.dumps({"iss": "c" * 5000, "sub": "c" * 5000})),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_JWTS))
@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/o/token/", {"grant_type": "client_credentials"}),
        ("/o/revoke_token/", {"token": "anything"}),
        ("/o/introspect/", {"token": "anything"}),
    ],
    ids=["token", "revoke", "introspect"],
)
def test_hostile_json_in_an_assertion_never_gives_a_500(backend, name, path, form):
    """No key needed for these: they must fail before any signature is checked, cleanly."""
    before = token_rows()
    response = Client(raise_request_exception=False).post(
        path, {**form, **assertion_form(HOSTILE_JWTS[name])}
    )
    assert response.status_code in (400, 401, 403), response.content
    assert token_rows() == before


def test_numbers_beyond_a_double_are_refused_not_crashed(backend, jwt_profile, portal_key, end_user_in_acme):
    key = register_key(backend)
    before = token_rows()
    huge = sign_any_header(key, {"kid": key.kid}, assertion_claims("backend", exp=10**400))
    assert_unauthenticated(post({"grant_type": "client_credentials", **assertion_form(huge)}), before)
    subject_jwt = sign_any_header(
        portal_key, {"kid": portal_key.kid}, subject_claims("portal", end_user_in_acme, nbf=10**400)
    )
    assert_subject_refused(jwt_profile(subject_jwt), before, "not_yet_valid")


# The self-signed subject JWT: each rule refused with invalid_request and audited --------------


@pytest.fixture
def jwt_profile(portal, portal_key, impersonation_allowed, support, support_tokens, end_user_in_acme):
    """Post the guide's JWT-profile request (authenticated by the client secret) with a subject JWT."""

    def run(subject_jwt: str, **params: Any) -> Any:
        form = jwt_profile_form(support_tokens, subject_jwt, **params)
        return post(form, HTTP_AUTHORIZATION=basic("portal", portal.plain_secret))

    return run


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": TOKEN_ENDPOINT}, "wrong_audience"),
        ({"aud": [ISSUER, "https://crm.example.com/"]}, "wrong_audience"),
        ({"aud": None}, "wrong_audience"),
        ({"iss": "crm"}, "wrong_issuer"),
        ({"exp": None}, "missing_exp_or_iat"),
        ({"iat": None}, "missing_exp_or_iat"),
        ({"jti": None}, "missing_jti"),
        # Times relative to the signing (+N seconds), not to when the tests were collected.
        ({"iat": Later(-600), "exp": Later(-300)}, "expired"),
        ({"exp": Later(3700)}, "lifetime_too_long"),
        ({"nbf": Later(600)}, "not_yet_valid"),
        ({"sub": None}, "malformed_user_id"),
        ({"sub": 42}, "malformed_user_id"),
        ({"sub": "portal"}, "subject_is_client"),
        ({"sub": "999999"}, "unknown_user"),
        ({"sub": " 1"}, "malformed_user_id"),
        ({"sub": "1\x00"}, "malformed_user_id"),
    ],
    ids=lambda value: value if isinstance(value, str) else ",".join(value),
)
def test_subject_jwt_rules(jwt_profile, portal_key, end_user_in_acme, overrides, reason):
    before = token_rows()
    now = _now()
    overrides = {
        name: now + value if isinstance(value, Later) else value for name, value in overrides.items()
    }
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme, **overrides))
    assert_subject_refused(jwt_profile(subject_jwt), before, reason)


def test_subject_jwt_signed_by_another_client(jwt_profile, mallory_key, end_user_in_acme):
    before = token_rows()
    # Mallory's own client signs "portal says: act for the end user".
    subject_jwt = sign(mallory_key, subject_claims("portal", end_user_in_acme))
    assert_subject_refused(jwt_profile(subject_jwt), before, "unknown_kid")


def test_subject_jwt_of_another_client_presented_by_this_one(jwt_profile, mallory_key, end_user_in_acme):
    before = token_rows()
    subject_jwt = sign(mallory_key, subject_claims("mallory-app", end_user_in_acme), kid=None)
    assert_subject_refused(jwt_profile(subject_jwt), before, "bad_signature")


def test_subject_jwt_jti_is_usable_once(jwt_profile, portal_key, end_user_in_acme):
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme))
    assert jwt_profile(subject_jwt).status_code == 200
    before = token_rows()
    AuditEvent.objects.all().delete()
    assert_subject_refused(jwt_profile(subject_jwt), before, "replayed_jti")


@pytest.mark.parametrize("jti", ["a\x00b", "\u00fc" * 200, "\U0001f511", " "])
def test_any_jti_string_is_accepted_once(jwt_profile, portal_key, end_user_in_acme, jti):
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme, jti=jti))
    assert jwt_profile(subject_jwt).status_code == 200
    assert jwt_profile(subject_jwt).status_code == 400


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_subject_jwt_forgeries(jwt_profile, portal_key, end_user_in_acme, alg):
    before = token_rows()
    claims = subject_claims("portal", end_user_in_acme)
    header = {"alg": alg, "kid": portal_key.kid}
    token = (
        unsigned(header, claims)
        if alg == "none"
        else hmac_signed(header, claims, portal_key.public_key.encode())
    )
    assert_subject_refused(jwt_profile(token), before, "unsupported_alg")


def test_a_client_assertion_is_not_a_subject_token(
    portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    # Used for authentication and again as the subject: the jti is spent.
    client_assertion = assertion(portal_key)
    before = token_rows()
    response = post(jwt_profile_form(support_tokens, client_assertion, **assertion_form(client_assertion)))
    assert_subject_refused(response, before, "replayed_jti")
    # Never used: it names the client, not a user.
    AuditEvent.objects.all().delete()
    response = post(
        jwt_profile_form(support_tokens, assertion(portal_key)),
        HTTP_AUTHORIZATION=basic("portal", portal.plain_secret),
    )
    assert_subject_refused(response, before, "subject_is_client")
    # Typed as an assertion.
    AuditEvent.objects.all().delete()
    typed = sign(portal_key, subject_claims("portal", end_user_in_acme), typ="client-authentication+jwt")
    response = post(
        jwt_profile_form(support_tokens, typed), HTTP_AUTHORIZATION=basic("portal", portal.plain_secret)
    )
    assert_subject_refused(response, before, "wrong_typ")


def test_a_subject_jwt_is_not_a_client_assertion(portal, portal_key, support_tokens, end_user_in_acme):
    before = token_rows()
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme))
    form = jwt_profile_form(support_tokens, assertion(portal_key), **assertion_form(subject_jwt))
    assert_unauthenticated(post(form), before)


def test_a_subject_jwt_needs_an_actor(token_endpoint, portal, portal_key, impersonation_allowed, end_user):
    before = token_rows()
    response = token_endpoint.exchange(
        portal,
        subject_token=sign(portal_key, subject_claims("portal", end_user)),
        subject_token_type=JWT_TYPE,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert token_rows() == before


def test_the_subject_jwt_audience_is_not_the_issued_audience(jwt_profile, portal_key, end_user_in_acme):
    before = token_rows()
    response = jwt_profile(
        sign(portal_key, subject_claims("portal", end_user_in_acme)),
        audience=ISSUER,
        requested_token_type=JWT_TYPE,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"
    assert token_rows() == before


def test_impersonation_rules_apply_to_the_subject_jwt(
    portal, portal_key, impersonation_allowed, mallory, login, end_user_in_acme
):
    """Mallory holds no impersonator grant: a subject JWT signed by the client changes nothing."""
    before_login = login(mallory)
    before = token_rows()
    response = post(
        jwt_profile_form(before_login, sign(portal_key, subject_claims("portal", end_user_in_acme))),
        HTTP_AUTHORIZATION=basic("portal", portal.plain_secret),
    )
    assert response.status_code == 400
    assert token_rows() == before
    assert [row.payload["reason"] for row in refusals()] == ["actor_not_impersonator"]


def test_the_switch_off_refuses_before_reading_the_subject_jwt(
    jwt_profile, portal_key, impersonation_allowed, end_user_in_acme
):
    impersonation_allowed.allow_impersonation = False
    impersonation_allowed.save()
    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme))
    before = token_rows()
    assert jwt_profile(subject_jwt).status_code == 400
    assert token_rows() == before
    assert [row.payload["reason"] for row in refusals()] == ["impersonation_disabled"]
    # Its jti was never spent: it works once the switch is back on.
    impersonation_allowed.allow_impersonation = True
    impersonation_allowed.save()
    assert jwt_profile(subject_jwt).status_code == 200


# The replay store -----------------------------------------------------------------------------


def assert_store_unavailable(response: Any, before: tuple[int, int, int]) -> None:
    """503 temporarily_unavailable (the server's trouble, not the client's credentials): nothing
    issued, nothing audited. tests/test_replay_store_outage.py covers every endpoint."""
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "temporarily_unavailable"
    assert response["Retry-After"]
    assert token_rows() == before
    assert not token_events().exists()


@pytest.mark.parametrize(
    "replay_cache",
    [{"BACKEND": "django.core.cache.backends.dummy.DummyCache"}, None],
    ids=["dummy", "missing-alias"],
)
def test_a_cache_that_cannot_remember_refuses_every_assertion(backend, settings, replay_cache):
    caches_setting = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if replay_cache is not None:
        caches_setting["token_exchange_replay"] = replay_cache
    settings.CACHES = caches_setting
    key = register_key(backend)
    before = token_rows()
    assert_store_unavailable(
        post({"grant_type": "client_credentials", **assertion_form(assertion(key))}), before
    )


def test_a_cache_that_fails_refuses(backend, monkeypatch):
    from django.core.cache.backends.locmem import LocMemCache

    def down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("cache down")

    monkeypatch.setattr(LocMemCache, "add", down)
    key = register_key(backend)
    before = token_rows()
    assert_store_unavailable(
        post({"grant_type": "client_credentials", **assertion_form(assertion(key))}), before
    )


SHARED_REPLAY_CACHE = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "replay": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "te_replay"},
}


@override_settings(CACHES=SHARED_REPLAY_CACHE, TOKEN_EXCHANGE={"REPLAY_CACHE": "replay"})
def test_replay_protection_holds_across_processes_with_a_shared_cache(backend):
    """A second process has its own cache object, sharing only the backend's storage."""
    from django.core.cache import caches
    from django.core.management import call_command
    from django.db import router

    table_database = router.db_for_write(caches["replay"].cache_model_class)  # "default" unless routed
    call_command("createcachetable", "te_replay", verbosity=0, database=table_database)
    key = register_key(backend)
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    first_process = caches["replay"]
    assert post(form).status_code == 200
    del caches["replay"]  # what another process starts with: a cache object of its own
    before = token_rows()
    assert_unauthenticated(post(form), before)
    assert caches["replay"] is not first_process


def test_a_culling_replay_cache_forgets_live_jtis(backend):
    """Why W004 exists: Django's local-memory cache drops entries, live or not, past MAX_ENTRIES
    (300 by default), so another client's traffic can make a used assertion acceptable again.
    With an alias of its own and room for an hour of JWTs, it cannot."""
    from django.core.cache import caches

    key = register_key(backend)
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    small = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "small"}
    roomy = {**small, "LOCATION": "roomy", "OPTIONS": {"MAX_ENTRIES": 100_000}}
    for config, replay_accepted in ((small, True), (roomy, False)):
        caches_setting = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "replay": config,
        }
        with override_settings(CACHES=caches_setting, TOKEN_EXCHANGE={"REPLAY_CACHE": "replay"}):
            caches["replay"].clear()
            assert post(form).status_code == 200
            assert post(form).status_code == 401
            for _ in range(300):
                caches["replay"].add(f"other-client-{time.monotonic_ns()}", 1)
            assert (post(form).status_code == 200) is replay_accepted
        form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}

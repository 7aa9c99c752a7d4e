"""Ready for django-oauth-toolkit's own private_key_jwt (RFC 7523, DOT main after 3.4.1): one
setting says who verifies client assertions, the keys move to DOT's ``client_jwks``, and the
system checks refuse two verifiers, or none. See docs/dot-compatibility.md."""

from __future__ import annotations

import datetime
import json
from io import StringIO
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.models import get_access_token_model, get_application_model
from oauth2_provider.settings import oauth2_settings

from token_exchange import checks, client_keys
from token_exchange.constants import PRIVATE_KEY_JWT
from token_exchange.jwt import client_assertion, signed_jwt
from token_exchange.management.commands.export_client_jwks import changes, dot_has_client_jwks
from token_exchange.models import ClientKey

from .client_jwt import (
    ISSUER,
    assertion,
    assertion_claims,
    assertion_form,
    register_key,
    sign,
    subject_claims,
)
from .conftest import basic, form_post, make_app
from .test_checks import _reload_dot_settings, dot  # noqa: F401 (an autouse fixture)

AccessToken = get_access_token_model()
Application = get_application_model()
DISCOVERY = ("/o/.well-known/openid-configuration", "/o/.well-known/oauth-authorization-server")
# The installed DOT: 3.4.1 here, which has no JWT client authentication of its own.
DOT_HAS_IT = client_assertion.dot_client_authentication_installed()
needs_dot_without_it = pytest.mark.skipif(DOT_HAS_IT, reason="the installed DOT has RFC 7523 client auth")


def client_authentication(value: str) -> Any:
    return override_settings(TOKEN_EXCHANGE={**settings.TOKEN_EXCHANGE, "CLIENT_AUTHENTICATION": value})


def run_checks() -> list[str]:
    oauth2_settings.reload()
    return [message.id for message in checks.check_client_authentication()]


def post(form: dict[str, Any]) -> Any:
    return form_post(Client(), "/o/token/", form)


@pytest.fixture
def backend(db: None) -> Any:
    """A service with the client_credentials grant and a key instead of a shared secret."""
    return make_app("backend", exchange=None, authorization_grant_type="client-credentials")


# The seam: who verifies a client assertion -----------------------------------------------------


def test_by_default_this_package_verifies_assertions(backend):
    key = register_key(backend, "ES256")
    assert client_assertion.ours()
    response = post({"grant_type": "client_credentials", **assertion_form(assertion(key))})
    assert response.status_code == 200, response.content
    assert AccessToken.objects.get().application == backend


@needs_dot_without_it
@pytest.mark.parametrize("with_client_id", [False, True])
def test_with_oauth2_provider_our_code_verifies_no_assertion(backend, with_client_id):
    """DOT 3.4.1 alone knows no client_assertion: the client is not authenticated."""
    key = register_key(backend, "ES256")
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    if with_client_id:
        form["client_id"] = backend.client_id
    with client_authentication("oauth2_provider"):
        assert not client_assertion.ours()
        response = post(form)
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"
    assert not AccessToken.objects.exists()


def test_with_oauth2_provider_secrets_still_authenticate(backend):
    with client_authentication("oauth2_provider"):
        response = post(
            {
                "grant_type": "client_credentials",
                "client_id": backend.client_id,
                "client_secret": backend.plain_secret,
            }
        )
    assert response.status_code == 200, response.content


@needs_dot_without_it
def test_with_oauth2_provider_the_assertion_is_not_spent(backend):
    """Nothing of ours read it: switched back, the same assertion still authenticates once."""
    token = assertion(register_key(backend))
    with client_authentication("oauth2_provider"):
        assert post({"grant_type": "client_credentials", **assertion_form(token)}).status_code == 401
    assert post({"grant_type": "client_credentials", **assertion_form(token)}).status_code == 200


@needs_dot_without_it
@pytest.mark.parametrize("mode", ["oauth2_provider", "token_exchange"])
@pytest.mark.parametrize(
    ("endpoint", "form", "credentials"),
    [
        # A public client would need no secret: the assertion must not be skipped as noise.
        ("/o/token/", {"grant_type": "refresh_token", "refresh_token": "whatever"}, "public"),
        ("/o/revoke_token/", {"token": "whatever"}, "public"),
        # A valid secret beside it: one method per request (RFC 6749 §2.3), never the secret alone.
        ("/o/token/", {"grant_type": "client_credentials"}, "basic"),
        ("/o/introspect/", {"token": "whatever"}, "basic"),
    ],
)
def test_an_assertion_nobody_verifies_is_refused_not_ignored(backend, mode, endpoint, form, credentials):
    """With E011's configuration (DOT 3.4.1 has no verifier), a request carrying an assertion is
    refused even when it would pass without one; as it is when this package verifies it."""
    public = make_app("spa", exchange=None, client_type="public")
    form = {**form, "client_assertion_type": assertion_form("x")["client_assertion_type"]}
    form["client_assertion"] = "garbage"
    headers = {}
    if credentials == "public":
        form["client_id"] = public.client_id
    else:
        headers["HTTP_AUTHORIZATION"] = basic(backend.client_id, backend.plain_secret)
    with client_authentication(mode):
        response = form_post(Client(), endpoint, form, **headers)
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"
    assert not AccessToken.objects.exists()


def test_discovery_lists_our_private_key_jwt_by_default(db):
    for path in DISCOVERY:
        metadata = Client().get(path).json()
        assert PRIVATE_KEY_JWT in metadata["token_endpoint_auth_methods_supported"], path


def test_discovery_with_oauth2_provider_lists_what_dot_lists(db):
    with client_authentication("oauth2_provider"):
        for path in DISCOVERY:
            metadata = Client().get(path).json()
            for endpoint in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
                methods = metadata.get(f"{endpoint}_auth_methods_supported")
                if methods is None:
                    continue
                assert PRIVATE_KEY_JWT not in methods, (path, endpoint)
                if not DOT_HAS_IT:
                    assert f"{endpoint}_auth_signing_alg_values_supported" not in metadata, (path, endpoint)
            # The token exchange grant stays ours either way.
            assert "urn:ietf:params:oauth:grant-type:token-exchange" in metadata["grant_types_supported"]


def test_a_misspelt_value_keeps_our_verification(backend):
    key = register_key(backend)
    with client_authentication("dot"):
        assert client_assertion.ours()
        response = post({"grant_type": "client_credentials", **assertion_form(assertion(key))})
    assert response.status_code == 200, response.content


# System checks E010 and E011 --------------------------------------------------------------------


def test_no_message_by_default():
    assert run_checks() == []


@needs_dot_without_it
def test_dot_3_4_1_has_no_jwt_client_authentication():
    with dot(OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED=["client_secret_basic", PRIVATE_KEY_JWT]):
        oauth2_settings.reload()
        assert client_assertion.dot_advertised_jwt_methods() == [PRIVATE_KEY_JWT]
        assert not client_assertion.dot_client_authentication_enabled()
        assert run_checks() == []


def test_e010_both_would_verify_assertions(monkeypatch):
    monkeypatch.setattr(client_assertion, "dot_client_authentication_installed", lambda: True)
    assert run_checks() == []  # installed but not advertised: DOT's is off, ours answers
    with dot(OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED=["client_secret_basic", "client_secret_jwt"]):
        assert run_checks() == ["token_exchange.E010"]
        with client_authentication("oauth2_provider"):
            assert run_checks() == []
    assert checks.E010.msg == (
        "TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] is 'token_exchange' while django-oauth-toolkit's own JWT "
        "client authentication is enabled: this package would verify every client_assertion against "
        "ClientKey rows, and the clients' client_jwks would never be read."
    )
    assert "export_client_jwks --write" in checks.E010.hint


@needs_dot_without_it
def test_e011_dot_cannot_verify_assertions():
    with client_authentication("oauth2_provider"):
        assert run_checks() == ["token_exchange.E011"]
    assert checks.E011.msg == (
        "TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] is 'oauth2_provider', but the installed "
        "django-oauth-toolkit cannot authenticate clients by JWT assertion: every request carrying a "
        "client_assertion will be refused."
    )


def test_e011_not_when_dot_can(monkeypatch):
    monkeypatch.setattr(client_assertion, "dot_client_authentication_installed", lambda: True)
    with client_authentication("oauth2_provider"):
        assert run_checks() == []


def test_detection_needs_dot_code_as_well_as_the_field(monkeypatch):
    """The fields of a custom application model authenticate nobody without DOT's code."""
    monkeypatch.setattr(client_assertion, "_DOT_ASSERTION_MODULES", ("token_exchange.no_such_module",))
    assert not client_assertion.dot_client_authentication_installed()


# ClientKey rows as DOT's client_jwks ------------------------------------------------------------


def test_application_jwks_holds_the_usable_keys(portal):
    rsa = register_key(portal, "RS256", kid="rsa")
    ec = register_key(portal, "ES384", kid="ec", expires_at=timezone.now() + datetime.timedelta(days=1))
    register_key(portal, "RS256", kid="retired", active=False)
    register_key(portal, "ES256", kid="expired", expires_at=timezone.now() - datetime.timedelta(seconds=1))

    key_set = signed_jwt.application_jwks(portal)

    assert sorted(member["kid"] for member in key_set["keys"]) == ["ec", "rsa"]
    by_kid = {member["kid"]: member for member in key_set["keys"]}
    assert (by_kid["rsa"]["kty"], by_kid["rsa"]["alg"]) == ("RSA", "RS256")
    assert (by_kid["ec"]["kty"], by_kid["ec"]["crv"], by_kid["ec"]["alg"]) == ("EC", "P-384", "ES384")
    assert all(member["use"] == "sig" for member in key_set["keys"])
    # Public members only, and a set jwcrypto (DOT's library) reads as public keys.
    parsed = jwk.JWKSet.from_json(json.dumps(key_set))
    assert not any(key.has_private for key in parsed["keys"])
    # Each JWK verifies what the client signs with its key file.
    for key_file in (rsa, ec):
        token = sign(key_file, assertion_claims(portal.client_id))
        public = jwt.PyJWK(by_kid[key_file.kid])
        claims = jwt.decode(token, public.key, algorithms=[key_file.algorithm], audience=ISSUER)
        assert claims["sub"] == portal.client_id


def test_jwks_leaves_out_a_key_that_does_not_parse():
    broken = SimpleNamespace(kid="broken", public_key="-----BEGIN PUBLIC KEY-----\nxx", algorithm="RS256")
    assert client_keys.jwks([broken]) == {"keys": []}


def export(*args: str) -> tuple[Any, str]:
    out, err = StringIO(), StringIO()
    call_command("export_client_jwks", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


def test_export_prints_every_client_with_keys(portal, aggregates, backend):
    register_key(portal, kid="p1")
    register_key(backend, "ES256", kid="b1")
    printed, _ = export()
    assert list(printed) == sorted(["backend", portal.client_id])  # aggregates has no key
    assert [member["kid"] for member in printed["backend"]["keys"]] == ["b1"]
    assert printed[portal.client_id] == signed_jwt.application_jwks(portal)


def test_export_named_clients(portal, aggregates):
    register_key(portal, kid="p1")
    printed, _ = export("aggregates", portal.client_id)
    assert list(printed) == ["aggregates", portal.client_id]
    assert printed["aggregates"] == {"keys": []}


def test_export_unknown_client(db):
    with pytest.raises(CommandError, match="No application with client_id 'nobody'"):
        export("nobody")


@pytest.mark.skipif(dot_has_client_jwks(), reason="the installed DOT has client_jwks")
def test_export_write_needs_dot_fields(portal):
    register_key(portal)
    with pytest.raises(CommandError, match="no client_jwks field"):
        export("--write")


KEY_SET = {"keys": [{"kty": "EC", "kid": "k"}]}


def application(**fields: Any) -> Any:
    values = {
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "client_jwks": "",
        "client_jwks_uri": "",
        "token_endpoint_auth_method": "",
    }
    values.update(fields)
    return SimpleNamespace(CLIENT_CONFIDENTIAL=Application.CLIENT_CONFIDENTIAL, **values)


WRITTEN = {"client_jwks": json.dumps(KEY_SET), "token_endpoint_auth_method": PRIVATE_KEY_JWT}


@pytest.mark.parametrize(
    ("fields", "key_set", "expected"),
    [
        ({}, KEY_SET, WRITTEN),
        ({"token_endpoint_auth_method": "client_secret_basic"}, KEY_SET, WRITTEN),
        ({"token_endpoint_auth_method": "client_secret_post"}, KEY_SET, WRITTEN),
        ({"token_endpoint_auth_method": PRIVATE_KEY_JWT}, KEY_SET, WRITTEN),
        ({}, {"keys": []}, "no active, unexpired key"),
        ({"client_type": Application.CLIENT_PUBLIC}, KEY_SET, "not a confidential client"),
        (
            {"client_jwks_uri": "https://client.example/jwks"},
            KEY_SET,
            "it has a client_jwks_uri (DOT takes one key source only)",
        ),
        (
            {"token_endpoint_auth_method": "client_secret_jwt"},
            KEY_SET,
            "it is registered for client_secret_jwt",
        ),
        # Keys registered with DOT directly are not overwritten by accident; the same set is fine.
        ({"client_jwks": json.dumps(KEY_SET)}, KEY_SET, WRITTEN),
        (
            {"client_jwks": json.dumps({"keys": [{"kty": "RSA", "kid": "dcr"}]})},
            KEY_SET,
            "it already has other keys in client_jwks (--replace overwrites them)",
        ),
        (
            {"client_jwks": "not json"},
            KEY_SET,
            "it already has other keys in client_jwks (--replace overwrites them)",
        ),
    ],
)
def test_what_write_changes(fields, key_set, expected):
    assert changes(application(**fields), key_set) == expected


def test_replace_overwrites_other_keys():
    other = application(client_jwks=json.dumps({"keys": [{"kty": "RSA", "kid": "dcr"}]}))
    assert changes(other, KEY_SET, replace=True) == WRITTEN


# Self-signed subject JWTs stay ours: they can be checked against keys in DOT's client_jwks ------


def test_keys_in_exported_jwks_verify_a_subject_jwt(portal, end_user):
    """What export_client_jwks writes, read back, verifies as a ClientKey row does."""
    key_file = register_key(portal, "PS256", kid="k1")
    client_jwks = json.dumps(signed_jwt.application_jwks(portal))
    ClientKey.objects.all().delete()  # only DOT's field is left

    keys = client_keys.keys_in_jwks(client_jwks)

    assert [(key.kid, key.algorithm) for key in keys] == [("k1", "PS256")]
    subject_jwt = sign(key_file, subject_claims(portal.client_id, end_user))
    claims = signed_jwt.verify(
        subject_jwt, application=portal, audiences={ISSUER}, allowed_typ={"jwt"}, keys=keys
    )
    assert claims["sub"] == str(end_user.pk)
    other = sign(key_file, subject_claims(portal.client_id, end_user), alg="RS256")
    with pytest.raises(signed_jwt.JWTRefusal, match="alg_mismatch"):
        signed_jwt.verify(other, application=portal, audiences={ISSUER}, allowed_typ={"jwt"}, keys=keys)


def test_keys_in_jwks_leaves_out_what_our_rules_refuse():
    rsa = jwk.JWK.generate(kty="RSA", size=2048)
    public = rsa.export_public(as_dict=True)
    small = jwk.JWK.generate(kty="RSA", size=1024).export_public(as_dict=True)
    members = [
        {**public, "kid": "no-alg"},
        {**public, "alg": "RS256"},  # no kid
        {**public, "kid": "hmac", "alg": "HS256"},
        {**public, "kid": "enc", "alg": "RS256", "use": "enc"},
        {**public, "kid": "sign-only", "alg": "RS256", "key_ops": ["sign"]},
        {**public, "kid": "ops-as-text", "alg": "RS256", "key_ops": "unverifiable"},
        {**public, "kid": "twice", "alg": "RS256"},
        {
            **jwk.JWK.generate(kty="RSA", size=2048).export_public(as_dict=True),
            "kid": "twice",
            "alg": "RS256",
        },
        {**rsa.export_private(as_dict=True), "kid": "private", "alg": "RS256"},
        {**small, "kid": "small", "alg": "RS256"},
        {**public, "kid": "ec-alg", "alg": "ES256"},
        "not a key",
        {**public, "kid": "good", "alg": "RS256", "use": "sig"},
    ]
    assert [key.kid for key in client_keys.keys_in_jwks(json.dumps({"keys": members}))] == ["good"]
    assert client_keys.keys_in_jwks("") == []
    assert client_keys.keys_in_jwks('{"keys": 1}') == []

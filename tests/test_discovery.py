"""Discovery over HTTP: where the metadata documents are, what they say, and that it is true.

RFC 8414 §3.1 puts the metadata of the issuer ``http://127.0.0.1:8000/o`` at
``/.well-known/oauth-authorization-server/o``; OIDC Discovery §4 puts the OpenID Connect document
at ``/o/.well-known/openid-configuration``; both documents describe one server, so they agree
wherever both have a field, and every endpoint they name answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc8414 import get_well_known_url as rfc8414_well_known_url
from authlib.oidc.discovery import OpenIDProviderMetadata
from authlib.oidc.discovery import get_well_known_url as oidc_well_known_url
from django.conf import settings
from django.test import Client, override_settings
from oauth2_provider.settings import oauth2_settings

from token_exchange.constants import CLIENT_KEY_ALGORITHMS, GRANT_TYPE, PRIVATE_KEY_JWT

from .client_jwt import assertion, assertion_form, register_key
from .conftest import basic, form_post, make_app
from .test_checks import _reload_dot_settings, dot  # noqa: F401 (an autouse fixture)

ISSUER = settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"]
RFC8414 = urlsplit(rfc8414_well_known_url(ISSUER, external=True)).path
OIDC = urlsplit(oidc_well_known_url(ISSUER, external=True)).path
# The same documents at the other location each: under the issuer's path, and at the root.
RFC8414_UNDER_ISSUER = "/o/.well-known/oauth-authorization-server"
OIDC_AT_ROOT = "/.well-known/openid-configuration/o"
WITHOUT_OIDC: dict[str, Any] = {
    "OIDC_ENABLED": False,
    "OIDC_SERVER_CLASS": "oauthlib.openid.Server",
    "OAUTH2_SERVER_CLASS": "token_exchange.oauth.server.Server",
}


def get(path: str) -> Any:
    return Client(raise_request_exception=False).get(path)


def document(path: str) -> dict[str, Any]:
    response = get(path)
    assert response.status_code == 200, (path, response.content)
    return dict(response.json())


def client_authentication(value: str) -> Any:
    return override_settings(TOKEN_EXCHANGE={**settings.TOKEN_EXCHANGE, "CLIENT_AUTHENTICATION": value})


@pytest.fixture(autouse=True)
def _insecure_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authlib's models want an https issuer; the example project's is http (Authlib's own switch)."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


# Where the documents are ---------------------------------------------------------------------


def test_rfc8414_metadata_at_the_root_location():
    assert RFC8414 == "/.well-known/oauth-authorization-server/o"  # what Authlib computes
    response = get(RFC8414)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "public, max-age=3600"
    assert response["Access-Control-Allow-Origin"] == "*"
    metadata = response.json()
    assert metadata["issuer"] == ISSUER
    assert GRANT_TYPE in metadata["grant_types_supported"]
    assert PRIVATE_KEY_JWT in metadata["token_endpoint_auth_methods_supported"]
    AuthorizationServerMetadata(metadata).validate()


@pytest.mark.parametrize("path", [OIDC, OIDC_AT_ROOT])
def test_openid_configuration_at_both_locations(path):
    response = get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "public, max-age=3600"
    metadata = response.json()
    assert metadata["issuer"] == ISSUER
    OpenIDProviderMetadata(metadata).validate()


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",  # the issuer has a path
        "/.well-known/oauth-authorization-server/other",
        "/.well-known/oauth-authorization-server/o/",
        "/.well-known/oauth-authorization-server/o/other",
        "/.well-known/oauth-authorization-server/O",
        "/o/.well-known/oauth-authorization-server/o",  # the root form, under the issuer
        "/o/.well-known/oauth-authorization-server/other",
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/other",
    ],
)
def test_another_issuer_location_is_not_found(path):
    response = get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"other" not in response.content  # nothing of the request is echoed


@pytest.mark.parametrize(
    ("issuer", "location", "elsewhere"),
    [
        (
            "http://127.0.0.1:8000/tenant/o",
            "/.well-known/oauth-authorization-server/tenant/o",
            "/.well-known/oauth-authorization-server/o",
        ),
        ("http://127.0.0.1:8000", "/.well-known/oauth-authorization-server", RFC8414),
        ("http://127.0.0.1:8000/", "/.well-known/oauth-authorization-server", RFC8414),
        ("http://127.0.0.1:8000/o/", RFC8414, "/.well-known/oauth-authorization-server/o/"),
    ],
)
def test_the_root_location_follows_the_issuer(issuer, location, elsewhere):
    with dot(OIDC_ISS_ENDPOINT=issuer):
        oauth2_settings.reload()
        assert document(location)["issuer"] == issuer
        assert get(elsewhere).status_code == 404
        oidc = location.replace("oauth-authorization-server", "openid-configuration")
        assert document(oidc)["issuer"] == issuer


def test_without_a_configured_issuer_it_is_where_the_urls_are_mounted():
    with dot(OIDC_ISS_ENDPOINT=None):
        oauth2_settings.reload()
        metadata = document(RFC8414)
        assert metadata["issuer"] == "http://testserver/o"
        assert metadata["token_endpoint"] == "http://testserver/o/token/"
        assert document(OIDC_AT_ROOT) == document(OIDC)


# What they say --------------------------------------------------------------------------------

SETTINGS_VARIANTS = {
    "example project": {},
    "RP-initiated logout": {"OIDC_RP_INITIATED_LOGOUT_ENABLED": True},
    "RFC 9700 gates": {
        "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
        "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
        "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
        "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    },
    "OAuth and OIDC methods differ": {
        "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_basic"],
        "OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_post"],
    },
    "no signing key": {"OIDC_RSA_PRIVATE_KEY": ""},
    "dynamic client registration": {"DCR_ENABLED": True},
}


@pytest.mark.parametrize("changes", SETTINGS_VARIANTS.values(), ids=SETTINGS_VARIANTS.keys())
@pytest.mark.parametrize("verifier", ["token_exchange", "oauth2_provider"])
def test_both_documents_agree_field_for_field(changes, verifier):
    with dot(**changes), client_authentication(verifier):
        oauth2_settings.reload()
        rfc8414, oidc = document(RFC8414), document(OIDC)
        assert document(RFC8414_UNDER_ISSUER) == rfc8414
        assert document(OIDC_AT_ROOT) == oidc

    overlap = set(rfc8414) & set(oidc)
    assert {"issuer", "token_endpoint", "introspection_endpoint", "grant_types_supported"} <= overlap
    for key in sorted(overlap):
        assert rfc8414[key] == oidc[key], key


def test_oidc_discovery_lists_introspection_and_revocation():
    metadata = document(OIDC)

    assert metadata["introspection_endpoint"] == "http://127.0.0.1:8000/o/introspect/"
    assert metadata["revocation_endpoint"] == "http://127.0.0.1:8000/o/revoke_token/"
    confidential = ["client_secret_post", "client_secret_basic", PRIVATE_KEY_JWT]
    # Public clients use the token and revocation endpoints with their client_id alone ("none");
    # introspection is for confidential clients only.
    assert metadata["token_endpoint_auth_methods_supported"] == [*confidential, "none"]
    assert metadata["revocation_endpoint_auth_methods_supported"] == [*confidential, "none"]
    assert metadata["introspection_endpoint_auth_methods_supported"] == confidential
    for endpoint in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        assert metadata[f"{endpoint}_auth_signing_alg_values_supported"] == list(CLIENT_KEY_ALGORITHMS)


def test_jwt_methods_only_with_their_algorithms():
    """RFC 8414 §2: with DOT verifying assertions, DOT's algorithms, or no JWT method at all."""
    jwt_methods = {"private_key_jwt", "client_secret_jwt"}
    with (
        dot(OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED=[*jwt_methods, "client_secret_basic"]),
        client_authentication("oauth2_provider"),
    ):
        oauth2_settings.reload()
        for path in (RFC8414, OIDC):
            metadata = document(path)
            for endpoint in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
                methods = set(metadata[f"{endpoint}_auth_methods_supported"])
                algorithms = metadata.get(f"{endpoint}_auth_signing_alg_values_supported")
                assert bool(methods & jwt_methods) == bool(algorithms), (path, endpoint, methods, algorithms)


def test_end_session_endpoint_only_where_dot_serves_one():
    assert "end_session_endpoint" not in document(OIDC)
    with dot(OIDC_RP_INITIATED_LOGOUT_ENABLED=True):
        oauth2_settings.reload()
        assert document(OIDC)["end_session_endpoint"] == "http://127.0.0.1:8000/o/logout/"
        assert "end_session_endpoint" not in document(RFC8414)  # an OpenID Provider's field


def test_the_rfc8414_document_describes_the_openid_provider_dot_runs():
    """With OIDC on, DOT's server takes OIDC's response types and publishes a JWKS, also when
    there is no RSA key (an empty set: HS256 ID tokens only)."""
    metadata = document(RFC8414)
    assert metadata["response_types_supported"] == oauth2_settings.OIDC_RESPONSE_TYPES_SUPPORTED
    assert "code id_token" in metadata["response_types_supported"]
    with dot(OIDC_RSA_PRIVATE_KEY=""):
        oauth2_settings.reload()
        assert document(RFC8414)["jwks_uri"] == "http://127.0.0.1:8000/o/.well-known/jwks.json"
        assert document("/o/.well-known/jwks.json") == {"keys": []}


def test_every_advertised_grant_type_is_one_the_token_endpoint_knows(portal):
    """An advertised grant may be refused for a client, never unknown (implicit is not a token
    endpoint grant: its response type is advertised instead)."""
    metadata = document(RFC8414)
    assert ("implicit" in metadata["grant_types_supported"]) == (
        "token" in metadata["response_types_supported"]
    )
    for grant_type in metadata["grant_types_supported"]:
        if grant_type == "implicit":
            continue
        response = form_post(
            Client(),
            "/o/token/",
            {"grant_type": grant_type},
            HTTP_AUTHORIZATION=basic(portal.client_id, portal.plain_secret),
        )
        assert response.status_code in (400, 401), (grant_type, response.content)
        assert response.json()["error"] != "unsupported_grant_type", grant_type


def test_every_advertised_response_type_is_one_the_authorization_endpoint_knows(portal, end_user):
    """True before this package's discovery work too (DOT's OIDC list): kept so it stays true."""
    client = Client()
    client.force_login(end_user)
    for response_type in document(OIDC)["response_types_supported"]:
        query = {
            "client_id": portal.client_id,
            "response_type": response_type,
            "redirect_uri": portal.redirect_uris,
            "scope": "openid",
            "nonce": "n-0S6_WzA2Mj",
            "state": "af0ifjsldkj",
        }
        response = client.get(f"/o/authorize/?{urlencode(query)}")
        assert response.status_code in (200, 302), (response_type, response.status_code)
        location = response.get("Location", "")
        answer = parse_qs(urlsplit(location).query) | parse_qs(urlsplit(location).fragment)
        assert answer.get("error") != ["unsupported_response_type"], response_type


def _authenticated(method: str, client: Any, key: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(form fields, headers) that authenticate ``client`` by ``method``; a method this test does
    not know fails it, so nothing is advertised untried."""
    if method == "client_secret_basic":
        return {}, {"HTTP_AUTHORIZATION": basic(client.client_id, client.plain_secret)}
    if method == "client_secret_post":
        return {"client_id": client.client_id, "client_secret": client.plain_secret}, {}
    if method == PRIVATE_KEY_JWT:
        return {"client_id": client.client_id, **assertion_form(assertion(key))}, {}
    if method == "none":
        return {"client_id": client.client_id}, {}
    raise AssertionError(f"advertised but not tried: {method}")


@pytest.mark.parametrize(
    ("endpoint", "answer"),
    [("introspection_endpoint", {"active": False}), ("revocation_endpoint", None)],
)
def test_every_advertised_client_authentication_method_works(aggregates, endpoint, answer):
    metadata = document(OIDC)
    key = register_key(aggregates)
    path = urlsplit(metadata[endpoint]).path
    public = make_app("spa", client_type="public", exchange=None)
    for method in metadata[f"{endpoint}_auth_methods_supported"]:
        client = public if method == "none" else aggregates
        form, headers = _authenticated(method, client, key)
        response = form_post(Client(), path, {"token": "not-a-token", **form}, **headers)
        assert response.status_code == 200, (endpoint, method, response.content)
        if answer is not None:
            assert response.json() == answer
        if method == "none":
            continue
        # The same request without the credentials is refused: the method did the work.
        refused = form_post(Client(), path, {"token": "not-a-token", "client_id": aggregates.client_id})
        assert refused.status_code == 401, (endpoint, method)


# Every endpoint answers, over HTTP --------------------------------------------------------------


@pytest.fixture
def served_at(live_server: Any) -> Iterator[str]:
    """The live server as the issuer, RP-initiated logout on: every endpoint DOT can serve."""
    issuer = f"{live_server.url}/o"
    with dot(OIDC_ISS_ENDPOINT=issuer, OIDC_RP_INITIATED_LOGOUT_ENABLED=True):
        oauth2_settings.reload()
        yield issuer
    oauth2_settings.reload()


# Endpoints a client POSTs to; every other one is fetched.
POSTED = {"token_endpoint", "revocation_endpoint", "introspection_endpoint", "device_authorization_endpoint"}


@pytest.mark.django_db(transaction=True)
def test_every_advertised_endpoint_answers(served_at):
    discovered = {
        "RFC 8414": requests.get(rfc8414_well_known_url(served_at, external=True), timeout=10),
        "OIDC": requests.get(oidc_well_known_url(served_at, external=True), timeout=10),
    }
    urls: dict[str, str] = {}
    for name, response in discovered.items():
        assert response.status_code == 200, name
        assert response.headers["Content-Type"] == "application/json", name
        metadata = response.json()
        assert metadata["issuer"] == served_at, name
        urls |= {key: value for key, value in metadata.items() if key.endswith(("_endpoint", "_uri"))}

    assert {"end_session_endpoint", "jwks_uri", "userinfo_endpoint", "introspection_endpoint"} <= set(urls)
    for key, url in sorted(urls.items()):
        assert url.startswith(f"{served_at.rsplit('/', 1)[0]}/"), (key, url)  # absolute, this host
        if key in POSTED:
            response = requests.post(url, data={"token": "x"}, timeout=10, allow_redirects=False)
        else:
            response = requests.get(url, timeout=10, allow_redirects=False)
        assert response.status_code != 404, (key, url)
        assert response.status_code < 500, (key, url, response.status_code)


# A site without OpenID Connect ------------------------------------------------------------------


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("path", [OIDC, OIDC_AT_ROOT, "/o/.well-known/openid-configuration/"])
def test_without_oidc_the_openid_configuration_is_not_found(path, debug):
    with dot(**WITHOUT_OIDC), override_settings(DEBUG=debug):
        oauth2_settings.reload()
        response = get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == b"OpenID Connect is not enabled on this server."


@pytest.mark.parametrize("debug", [True, False])
def test_without_oidc_no_jwks_and_none_advertised(debug):
    with dot(**WITHOUT_OIDC), override_settings(DEBUG=debug):
        oauth2_settings.reload()
        assert get("/o/.well-known/jwks.json").status_code == 404
        metadata = document(RFC8414)

    assert "jwks_uri" not in metadata
    assert metadata["issuer"] == ISSUER
    assert GRANT_TYPE in metadata["grant_types_supported"]
    assert metadata["response_types_supported"] == ["code", "token"]


def test_the_documents_never_read_the_database():
    """Anyone may ask for them, as often as they like: they are built from settings alone.
    (No ``db`` fixture: pytest-django turns any query into an error, here a 500.)"""
    for path in (RFC8414, OIDC, OIDC_AT_ROOT, RFC8414_UNDER_ISSUER):
        assert get(path).status_code == 200, path


# Caching, encoded issuers, the device endpoint ---------------------------------------------------


def test_a_document_derived_from_the_request_is_never_stored():
    """Without OIDC_ISS_ENDPOINT the issuer follows the request (Host, X-Forwarded-Host): a shared
    cache keyed without those headers must not hand one request's document to every client."""
    assert get(RFC8414)["Cache-Control"] == "public, max-age=3600"  # a configured issuer
    with (
        dot(OIDC_ISS_ENDPOINT=None),
        override_settings(
            USE_X_FORWARDED_HOST=True, ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "elsewhere.example"]
        ),
    ):
        oauth2_settings.reload()
        for path in (RFC8414, OIDC, OIDC_AT_ROOT, RFC8414_UNDER_ISSUER):
            response = Client().get(path, HTTP_X_FORWARDED_HOST="elsewhere.example")
            assert response.status_code == 200, path
            assert response.json()["issuer"] == "http://elsewhere.example/o"
            assert response["Cache-Control"] == "no-store", path


@pytest.mark.parametrize(
    ("issuer", "location"),
    [
        ("http://127.0.0.1:8000/t%C3%A9/o", "/.well-known/oauth-authorization-server/t%C3%A9/o"),
        ("http://127.0.0.1:8000/a%20b", "/.well-known/oauth-authorization-server/a%20b"),
    ],
)
def test_an_issuer_with_an_encoded_path_is_served_at_its_location(issuer, location):
    with dot(OIDC_ISS_ENDPOINT=issuer):
        oauth2_settings.reload()
        assert document(location)["issuer"] == issuer


def test_the_advertised_device_authorization_endpoint_works(db):
    """RFC 8628: the endpoint discovery names issues a device code, which the token endpoint then
    knows (authorization_pending until the user approves)."""
    make_app(
        "tv",
        client_type="public",
        exchange=None,
        authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code",
    )
    metadata = document(RFC8414)
    assert "urn:ietf:params:oauth:grant-type:device_code" in metadata["grant_types_supported"]
    response = form_post(
        Client(), urlsplit(metadata["device_authorization_endpoint"]).path, {"client_id": "tv"}
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert {"device_code", "user_code", "verification_uri", "expires_in", "interval"} <= set(answer)
    polled = form_post(
        Client(),
        urlsplit(metadata["token_endpoint"]).path,
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": answer["device_code"],
            "client_id": "tv",
        },
    )
    assert polled.status_code == 400, polled.content
    assert polled.json()["error"] == "authorization_pending"

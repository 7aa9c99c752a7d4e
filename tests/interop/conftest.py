"""The interoperability suite: widely used client libraries against a live server, each used as
its own documentation shows, knowing nothing of this package but the issuer's URL.

Authlib's OAuth client discovers the server (RFC 8414, or OpenID Connect Discovery), then
exchanges, refreshes, introspects and revokes at the endpoints it discovered, authenticating
with a client secret or with a key made by ``manage.py createclientkey``. PyJWT's
``PyJWKClient`` verifies the JWTs the server issues against the discovered ``jwks_uri``.

The example project's issuer is fixed at ``http://127.0.0.1:8000/o``, where ``make demo``
listens; the live server listens elsewhere. Every test here runs with the issuer set to the live
server's own URL, as a deployment sets it to its public one: otherwise discovery would send the
clients to a server that is not there.

The token type identifiers are the RFCs' strings, written out: a client of this server does not
import its constants.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata, get_well_known_url
from authlib.oidc import discovery as oidc_discovery
from django.core.management import call_command

from example_project.demo import data
from token_exchange.models import ClientPolicy

# RFC 8693 §2.1 and §3, as a client writes them.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN = "urn:ietf:params:oauth:token-type:refresh_token"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
JWT = "urn:ietf:params:oauth:token-type:jwt"
# The guide's impersonation names the customer by user id, in this package's own namespace.
USER_ID = "urn:django-token-exchange:params:oauth:token-type:user_id"

TIMEOUT = 10  # seconds, for every HTTP request a client makes


@pytest.fixture(autouse=True)
def issuer(live_server: Any, settings: Any) -> str:
    """The live server's issuer identifier, as a deployment configures its public URL.

    pytest-django's ``settings`` sends ``setting_changed``, on which DOT reloads its settings;
    the live server's thread reads the same ``django.conf.settings``.
    """
    value = f"{live_server.url}/o"
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ISS_ENDPOINT": value}
    return value


def discover_by_rfc8414(issuer: str) -> AuthorizationServerMetadata:
    """RFC 8414 §3: GET the well-known URI made from the issuer, validate the document, and
    check (§3.3) that it names the very issuer it was fetched for."""
    response = requests.get(get_well_known_url(issuer, external=True), timeout=TIMEOUT)
    assert response.status_code == 200, f"GET {response.url}: {response.status_code}"
    metadata = AuthorizationServerMetadata(response.json())
    metadata.validate()
    assert metadata["issuer"] == issuer
    return metadata


def discover_by_oidc(issuer: str) -> oidc_discovery.OpenIDProviderMetadata:
    """OpenID Connect Discovery §4: the issuer followed by ``/.well-known/openid-configuration``;
    §4.3: the document's issuer is exactly the one the client asked for."""
    response = requests.get(oidc_discovery.get_well_known_url(issuer, external=True), timeout=TIMEOUT)
    assert response.status_code == 200, f"GET {response.url}: {response.status_code}"
    metadata = oidc_discovery.OpenIDProviderMetadata(response.json())
    metadata.validate()
    assert metadata["issuer"] == issuer
    return metadata


DISCOVERY: dict[str, Callable[[str], dict[str, Any]]] = {
    "rfc8414": discover_by_rfc8414,
    "oidc": discover_by_oidc,
}


@pytest.fixture(params=list(DISCOVERY))
def discovered(request: pytest.FixtureRequest, issuer: str) -> dict[str, Any]:
    """The server's metadata, found either way: every flow uses the endpoints found here."""
    return DISCOVERY[request.param](issuer)


@pytest.fixture
def aggregates_api(aggregates: Any) -> Any:
    """The aggregates API as ``seed_demo`` sets it up: it serves its resource URI and may
    introspect the tokens meant for it (RFC 7662 §4), and no others."""
    ClientPolicy.objects.filter(application=aggregates).update(
        introspection="audience", resource_uris=[data.AGGREGATES_URI]
    )
    return aggregates


def create_client_key(client_id: str, directory: Path) -> dict[str, Any]:
    """``manage.py createclientkey CLIENT_ID --output FILE``: the key file a client keeps."""
    path = directory / f"{client_id}-key.json"
    call_command("createclientkey", client_id, "--output", str(path), stderr=StringIO())
    key_file: dict[str, Any] = json.loads(path.read_text())
    return key_file


def secret_session(app: Any) -> OAuth2Session:
    """client_secret_basic: Authlib's default when given a secret, for every endpoint."""
    return OAuth2Session(app.client_id, app.plain_secret, default_timeout=TIMEOUT)


def private_key_jwt_session(key_file: dict[str, Any], token_endpoint: str) -> OAuth2Session:
    """private_key_jwt as Authlib's ``PrivateKeyJWT`` documents it, with two settings of ours:

    - ``PrivateKeyJWT(token_endpoint)``: the assertion's ``aud`` is the token endpoint at every
      endpoint. Without it, Authlib writes the URL it posts to (the introspection or revocation
      endpoint), which this server refuses: it accepts its issuer or its token endpoint.
    - ``revocation_endpoint_auth_method="private_key_jwt"``: Authlib's revocation defaults to
      client_secret_basic whenever a "secret" is set, and here the secret is the private key.

    The key file's ``keyId`` goes in the ``kid`` header, so the server picks the right key once
    the client has several (rotation).
    """
    session = OAuth2Session(
        key_file["clientId"],
        key_file["key"],
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
        default_timeout=TIMEOUT,
    )
    session.register_client_auth_method(
        PrivateKeyJWT(token_endpoint, headers={"kid": key_file["keyId"]}, alg=key_file["algorithm"])
    )
    return session


@pytest.fixture(params=["client_secret_basic", "private_key_jwt"])
def client_auth(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def oauth_client(
    client_auth: str, discovered: dict[str, Any], tmp_path: Path
) -> Iterator[Callable[[Any], OAuth2Session]]:
    """The Authlib session of a registered client (one per client), authenticating with
    ``client_auth``."""
    sessions: dict[str, OAuth2Session] = {}

    def make(app: Any) -> OAuth2Session:
        if app.client_id in sessions:
            return sessions[app.client_id]
        if client_auth == "client_secret_basic":
            session = secret_session(app)
        else:
            session = private_key_jwt_session(
                create_client_key(app.client_id, tmp_path), discovered["token_endpoint"]
            )
        sessions[app.client_id] = session
        return session

    yield make
    for session in sessions.values():
        session.close()

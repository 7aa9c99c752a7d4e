"""The example resource server as a separate process, driven over HTTP with tokens the live
authorization server issued: through introspection (DOT's mode, our validator) and through
offline RFC 9068 verification against the JWKS.

The resource server starts once per module (``runserver``, its own SQLite file, no tables: it
reads none at request time, which this proves), pointed at pytest-django's ``live_server``. Its
stderr is shown in every failed assertion about its answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    INTROSPECT_AUDIENCE,
    JWT_TYPE,
    USER_ID_TYPE,
)
from token_exchange.jwt import jose
from token_exchange.models import ClientPolicy

from .conftest import CRM

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
MODES = ("introspected", "jwt")
ISSUER = settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"]


class ResourceServer:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(f"{self.url}{path}", headers=headers, timeout=15)

    def expect(self, response: requests.Response, status: int) -> requests.Response:
        assert response.status_code == status, (
            f"{response.request.method} {response.url}: {response.status_code} {response.text[:500]}\n"
            f"--- resource server stderr ---\n{self.stderr()}"
        )
        return response


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the resource server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"the resource server did not listen on {port} within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def resource_server(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResourceServer]:
    directory = tmp_path_factory.mktemp("resource_server")
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_resource_server.settings",
        "RESOURCE_SERVER_DATABASE": str(directory / "db.sqlite3"),
        "AUTHORIZATION_SERVER": live_server.url,
        # The live server answers on its own port, but its tokens name the settings' issuer.
        "ISSUER": ISSUER,
        "JWKS_URI": f"{live_server.url}/o/.well-known/jwks.json",
        "INTROSPECTION_URL": f"{live_server.url}/o/introspect/",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DATABASE_URL", None)
    log = directory / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(port, process, log)
        yield ResourceServer(f"http://127.0.0.1:{port}", log)
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def aggregates_introspects(aggregates: Any) -> Any:
    """seed_demo's policy: the aggregates API learns about the tokens meant for it, and only those."""
    ClientPolicy.objects.filter(application=aggregates).update(
        introspection=INTROSPECT_AUDIENCE, resource_uris=[data.AGGREGATES_URI]
    )
    return aggregates


@pytest.fixture
def exchange(live_server: Any, portal: Any) -> Any:
    def post(**params: Any) -> dict[str, Any]:
        response = requests.post(
            f"{live_server.url}/o/token/",
            data={"grant_type": GRANT_TYPE, **params},
            auth=(portal.client_id, portal.plain_secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    return post


def _for_aggregates(exchange: Any, subject_token: str, mode: str) -> str:
    """An exchanged token for the aggregates API: opaque for introspection, a JWT for offline."""
    params = {"requested_token_type": JWT_TYPE} if mode == "jwt" else {}
    body = exchange(
        subject_token=subject_token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        audience=data.AGGREGATES_URI,
        scope="openid read",
        **params,
    )
    return str(body["access_token"])


def test_the_example_resource_server_defaults_are_the_demos():
    from example_resource_server import settings as rs_settings

    assert rs_settings.AGGREGATES_URI == data.AGGREGATES_URI
    assert rs_settings.AGGREGATES_CLIENT in data.APIS
    assert data.API_RESOURCES[rs_settings.AGGREGATES_CLIENT[0]] == data.AGGREGATES_URI


@pytest.mark.parametrize("mode", MODES)
def test_an_exchanged_token_for_the_aggregates_audience_is_accepted(
    mode, resource_server, aggregates_introspects, exchange, user_tokens, end_user
):
    token = _for_aggregates(exchange, user_tokens["access_token"], mode)
    for path in (f"/{mode}/aggregates/", f"/{mode}/settings/"):
        body = resource_server.expect(resource_server.get(path, token), 200).json()
        assert body == {
            "mode": "introspection" if mode == "introspected" else "jwt",
            "sub": str(end_user.pk),
            "client_id": "portal",
            "scope": "openid read",
            "aud": [data.AGGREGATES_URI],
            "act": None,
        }


@pytest.mark.parametrize("mode", MODES)
def test_an_impersonated_token_reads_aggregates_but_is_refused_at_settings(
    mode,
    resource_server,
    aggregates_introspects,
    exchange,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
):
    params = {"requested_token_type": JWT_TYPE} if mode == "jwt" else {}
    token = exchange(
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        audience=data.AGGREGATES_URI,
        scope="openid read",
        **params,
    )["access_token"]
    act = {"iss": ISSUER, "sub": str(support.pk)}

    body = resource_server.expect(resource_server.get(f"/{mode}/aggregates/", token), 200).json()
    assert (body["sub"], body["act"]) == (str(end_user_in_acme.pk), act)

    refused = resource_server.expect(resource_server.get(f"/{mode}/settings/", token), 403)
    assert refused.json() == {"detail": "Impersonated tokens cannot be used here."}


def test_the_plain_django_view_refuses_an_impersonated_jwt_too(
    resource_server, exchange, impersonation_allowed, support_tokens, end_user_in_acme, user_tokens, end_user
):
    impersonated = exchange(
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        audience=data.AGGREGATES_URI,
        requested_token_type=JWT_TYPE,
        scope="openid read",
    )["access_token"]
    refused = resource_server.expect(resource_server.get("/plain/jwt/settings/", impersonated), 403)
    assert refused.json()["error"] == "access_denied"
    own = _for_aggregates(exchange, user_tokens["access_token"], "jwt")
    assert resource_server.expect(resource_server.get("/plain/jwt/settings/", own), 200).json()["act"] is None


def _assert_invalid_token(response: requests.Response, description: str | None = None) -> None:
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api"')
    assert 'error="invalid_token"' in challenge
    if description is not None:
        assert f'error_description="{description}"' in challenge


@pytest.mark.parametrize("mode", MODES)
def test_a_token_for_another_audience_is_refused(
    mode, resource_server, aggregates_introspects, crm, exchange, login, end_user
):
    tokens = login(end_user, resources=[data.AGGREGATES_URI, CRM])
    params = {"requested_token_type": JWT_TYPE} if mode == "jwt" else {}
    token = exchange(
        subject_token=tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        audience=CRM,
        scope="openid read",
        **params,
    )["access_token"]
    refused = resource_server.expect(resource_server.get(f"/{mode}/aggregates/", token), 401)
    # Introspection: the aggregates client may not learn about a CRM token ({"active": false}).
    _assert_invalid_token(
        refused,
        "The access token is not meant for this resource server."
        if mode == "jwt"
        else "The access token is invalid.",
    )


def _expired_jwt(end_user: Any) -> str:
    """A token the issuer really signed, expired an hour ago (beyond any leeway)."""
    key = jose.server_key(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": str(end_user.pk),
        "aud": [data.AGGREGATES_URI],
        "exp": now - 3600,
        "iat": now - 7200,
        "nbf": now - 7200,
        "jti": "expired-at-the-resource-server",
        "client_id": "portal",
        "scope": "openid read",
    }
    return jose.sign(claims, key, "RS256", typ="at+jwt", kid=key.thumbprint())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", ["garbage", "a.b.c", "expired", ""])
def test_a_garbage_or_expired_token_is_401_with_a_challenge_never_500(
    mode, value, resource_server, aggregates_introspects, end_user
):
    token = _expired_jwt(end_user) if value == "expired" else value
    for path in (f"/{mode}/aggregates/", f"/{mode}/settings/"):
        response = resource_server.get(path, token)
        if value == "" and mode == "introspected":
            # "Bearer " with nothing after it: DOT finds no token at all, and asks for one.
            resource_server.expect(response, 401)
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')
            continue
        resource_server.expect(response, 401)
        _assert_invalid_token(
            response, "The access token has expired." if (value, mode) == ("expired", "jwt") else None
        )


@pytest.mark.parametrize("mode", MODES)
def test_no_token_is_401_with_a_bare_challenge(mode, resource_server):
    response = resource_server.expect(resource_server.get(f"/{mode}/aggregates/", None), 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'

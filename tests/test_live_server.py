"""The guide's walkthrough over real HTTP against a live server, as curl would do it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import jwt as pyjwt
import pytest
import requests
from django.core.cache import caches
from django.core.management import call_command
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data
from example_project.demo.management.commands.seed_demo import trust_partner_idp
from tests import external_idp as harness
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    INTROSPECT_AUDIENCE,
    JWT_BEARER_GRANT_TYPE,
    JWT_TYPE,
)
from token_exchange.models import ClientPolicy, FederatedIdentity

from .jwt_helpers import verify

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def test_walkthrough_over_http(live_server, portal, aggregates, user_tokens, end_user):
    # The aggregates API learns about tokens meant for it (seed_demo's policy).
    ClientPolicy.objects.update_or_create(
        application=aggregates,
        defaults={"introspection": INTROSPECT_AUDIENCE, "resource_uris": [data.AGGREGATES_URI]},
    )
    auth = ("portal", portal.plain_secret)
    token_url = f"{live_server.url}/o/token/"

    def exchange(**params):
        return requests.post(token_url, data={"grant_type": GRANT_TYPE, **params}, auth=auth, timeout=10)

    narrowed = exchange(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="openid",
        audience=data.AGGREGATES_URI,
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.headers["Cache-Control"] == "no-store"
    bearer = {"Authorization": f"Bearer {narrowed.json()['access_token']}"}
    assert requests.get(f"{live_server.url}/api/aggregates/", headers=bearer, timeout=10).status_code == 200
    assert requests.get(f"{live_server.url}/api/settings/", headers=bearer, timeout=10).status_code == 403
    introspection = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": narrowed.json()["access_token"]},
        auth=("aggregates", aggregates.plain_secret),
        timeout=10,
    ).json()
    assert introspection["aud"] == [data.AGGREGATES_URI]

    jwt = exchange(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid offline_access read",
    ).json()
    assert verify(jwt["access_token"])[1]["sub"] == str(end_user.pk)

    id_token = exchange(
        subject_token=jwt["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=ID_TOKEN_TYPE,
    ).json()
    assert id_token["token_type"] == "N_A"

    from_id_token = exchange(subject_token=user_tokens["id_token"], subject_token_type=ID_TOKEN_TYPE)
    assert from_id_token.status_code == 200, from_id_token.text

    refreshed = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": jwt["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text

    refused = exchange(subject_token="forged", subject_token_type=ACCESS_TOKEN_TYPE)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"


def test_impersonation_over_http(
    live_server, portal, aggregates, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    """The guide's impersonation examples, the switch and a refresh re-check, over real HTTP."""
    from token_exchange.constants import USER_ID_TYPE
    from token_exchange.models import AuditEvent, SecuritySettings

    auth = ("portal", portal.plain_secret)
    token_url = f"{live_server.url}/o/token/"
    actor = {"actor_token": support_tokens["access_token"], "actor_token_type": ACCESS_TOKEN_TYPE}
    by_user_id = {"subject_token": str(end_user_in_acme.pk), "subject_token_type": USER_ID_TYPE}

    def post(**params):
        return requests.post(token_url, data=params, auth=auth, timeout=10)

    impersonated = post(
        grant_type=GRANT_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid profile email offline_access read",
        **by_user_id,
        **actor,
    )
    assert impersonated.status_code == 200, impersonated.text
    body = impersonated.json()
    act = {"iss": "http://127.0.0.1:8000/o", "sub": str(support.pk)}
    assert verify(body["access_token"])[1]["act"] == act
    assert verify(body["id_token"])[1]["act"] == act
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(f"{live_server.url}/api/aggregates/", headers=bearer, timeout=10).json()["act"] == act
    assert requests.get(f"{live_server.url}/api/settings/", headers=bearer, timeout=10).status_code == 403

    refreshed = post(grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text

    switch = SecuritySettings.load()
    switch.allow_impersonation = False
    switch.save()
    assert post(grant_type="refresh_token", refresh_token=refreshed.json()["refresh_token"]).json() == {
        "error": "invalid_grant"
    }
    refused = post(grant_type=GRANT_TYPE, **by_user_id, **actor)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    reasons = AuditEvent.objects.filter(event_type="token.exchange_refused").values_list(
        "payload__reason", flat=True
    )
    assert sorted(reasons) == ["impersonation_disabled", "impersonation_disabled"]


def test_jwt_profile_with_the_walkthrough_script_over_http(
    live_server, portal, impersonation_allowed, support, support_tokens, end_user_in_acme, tmp_path
):
    """Steps 13-14 of the walkthrough: createclientkey, example_project/jwt_profile.py, curl."""
    key_path = tmp_path / "portal-key.json"
    call_command("createclientkey", "portal", "--output", str(key_path), stderr=StringIO())
    script = Path(__file__).resolve().parent.parent / "example_project" / "jwt_profile.py"
    printed = subprocess.run(
        [sys.executable, str(script), str(key_path), str(end_user_in_acme.pk)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    variables = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
    client_auth = {
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": variables["CLIENT_ASSERTION"],
    }
    response = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": GRANT_TYPE,
            "subject_token": variables["SUBJECT_JWT"],
            "subject_token_type": JWT_TYPE,
            "actor_token": support_tokens["access_token"],
            "actor_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": JWT_TYPE,
            "scope": "openid profile email",
            **client_auth,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    claims = verify(response.json()["access_token"])[1]
    assert claims["sub"] == str(end_user_in_acme.pk)
    assert claims["act"] == {"iss": "http://127.0.0.1:8000/o", "sub": str(support.pk)}

    replayed = requests.post(
        f"{live_server.url}/o/token/", data={"grant_type": "client_credentials", **client_auth}, timeout=10
    )
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_client"


@pytest.fixture(scope="module")
def partner_idp() -> Iterator[harness.ExternalIdP]:
    """The partner's provider of `make partner-idp`, on a free port: its access tokens live five
    minutes, so that each can be a JWT authorization grant."""
    idp = harness.ExternalIdP.start(keys=[harness.new_rsa_jwk("partner-1")], access_token_ttl=300)
    yield idp
    idp.stop()


def partner_login(issuer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m example_project.partner_idp login alice …``, as the walkthrough runs it."""
    env = {key: value for key, value in os.environ.items() if key != "PARTNER_ORIGIN"}
    return subprocess.run(
        [sys.executable, "-m", "example_project.partner_idp", "login", "alice", "--issuer", issuer, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tokens_of_the_partners_provider_with_the_walkthrough_over_http(
    live_server, settings, portal, aggregates, end_user, partner_idp
):
    """Steps 18-20 of the walkthrough: alice signs in at the partner (the login command), her ID
    token becomes a token of ours for the aggregates API, and her access token a JWT
    authorization grant, once."""
    # The partner publishes its keys on plain http, on loopback (settings.py: with DEBUG on).
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "FEDERATION_ALLOW_HTTP_LOOPBACK": True}
    caches["default"].clear()  # the keys of an earlier provider, cached under the same row id
    ClientPolicy.objects.filter(application=aggregates).update(resource_uris=[data.AGGREGATES_URI])
    trust = trust_partner_idp(partner_idp.issuer)
    assert trust.jwks_uri == partner_idp.jwks_uri  # where oidc-provider publishes them
    assert FederatedIdentity.objects.get(issuer=trust, subject="alice").user == end_user
    assert trust_partner_idp(partner_idp.issuer) == trust  # seed_demo runs again: nothing new
    issuer = str(oauth2_settings.OIDC_ISS_ENDPOINT)

    login = partner_login(partner_idp.issuer, "--resource", issuer)

    assert login.returncode == 0, login.stderr
    lines = login.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export PARTNER_ID_TOKEN",
        "export PARTNER_ACCESS_TOKEN",
    ]
    variables = dict(line.removeprefix("export ").split("=", 1) for line in lines)
    id_token, access_token = variables["PARTNER_ID_TOKEN"], variables["PARTNER_ACCESS_TOKEN"]
    assert pyjwt.decode(id_token, options={"verify_signature": False})["aud"] == "partner-app"
    assert pyjwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    assert pyjwt.decode(access_token, options={"verify_signature": False})["aud"] == issuer
    auth = ("portal", portal.plain_secret)
    token_url = f"{live_server.url}/o/token/"

    exchanged = requests.post(
        token_url,
        data={
            "grant_type": GRANT_TYPE,
            "subject_token": id_token,
            "subject_token_type": ID_TOKEN_TYPE,
            "audience": data.AGGREGATES_URI,
            "scope": "read",
        },
        auth=auth,
        timeout=10,
    )
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["scope"] == "read"
    bearer = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
    api = requests.get(f"{live_server.url}/api/aggregates/", headers=bearer, timeout=10)
    assert api.status_code == 200, api.text
    assert api.json() == {"sub": str(end_user.pk), "scope": "read", "act": None}
    assert requests.get(f"{live_server.url}/api/settings/", headers=bearer, timeout=10).status_code == 403

    grant = {"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": access_token, "scope": "read"}
    granted = requests.post(token_url, data=grant, auth=auth, timeout=10)
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == "read"
    introspected = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": granted.json()["access_token"]},
        auth=("aggregates", aggregates.plain_secret),
        timeout=10,
    ).json()
    assert (introspected["active"], introspected["username"]) == (True, end_user.username)

    replayed = requests.post(token_url, data=grant, auth=auth, timeout=10)
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"


def test_the_login_command_says_when_no_provider_answers():
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{closed.getsockname()[1]}"

    login = partner_login(issuer)

    assert login.returncode == 1
    assert login.stdout == ""
    assert f"no OpenID provider answers at {issuer}" in login.stderr
    assert "make partner-idp" in login.stderr

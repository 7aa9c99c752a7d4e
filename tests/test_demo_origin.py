"""`make demo PORT=9000`: one setting, DEMO_ORIGIN, and everything naming the demo server follows it.

The issuer, ALLOWED_HOSTS, the portal's redirect and launch URLs that ``seed_demo`` stores and
``demo_login`` sends, ``jwt_profile.py``'s audience and the walkthrough's URLs. Settings are read
once per process, so each origin runs in a process of its own, on an in-memory SQLite database
like the suite's; the suite itself runs on the default, http://127.0.0.1:8000.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent

# Seeds an in-memory database under this process's DEMO_ORIGIN, logs the end user in with
# demo_login, asks discovery through the origin's own Host header, and prints what it saw.
SEED_AND_LOG_IN = """
import json
from io import StringIO

import django

django.setup()
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

connection.creation.create_test_db(verbosity=0, serialize=False)
call_command("seed_demo", stdout=StringIO())
login = StringIO()
call_command("demo_login", "end-user", stdout=login)
Application = get_application_model()
portal = Application.objects.get(client_id="portal")
spa = Application.objects.get(client_id="portal-spa")
host = settings.DEMO_ORIGIN.split("://", 1)[1]
discovery = Client().get("/o/.well-known/openid-configuration", HTTP_HOST=host)
print(json.dumps({
    "issuer": oauth2_settings.OIDC_ISS_ENDPOINT,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "portal_redirect_uris": portal.redirect_uris,
    "spa_redirect_uris": spa.redirect_uris,
    "spa_launch_url": spa.token_exchange_policy.launch_url,
    "login": login.getvalue(),
    "discovery_status": discovery.status_code,
    "discovery_issuer": discovery.json().get("issuer") if discovery.status_code == 200 else None,
}))
"""

SETTINGS_ONLY = """
import json

import django

django.setup()
from django.conf import settings
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data

print(json.dumps({
    "origin": settings.DEMO_ORIGIN,
    "issuer": oauth2_settings.OIDC_ISS_ENDPOINT,
    "redirect_uri": data.PORTAL_REDIRECT_URI,
    "spa_url": data.PORTAL_SPA_URL,
}))
"""


def run(code_or_args: str | list[str], **environment: str) -> subprocess.CompletedProcess[str]:
    """Python in a fresh process at the repository root, with only the given demo variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Never PostgreSQL (the suite's own test database may be there), never the caller's origin.
        if key not in {"DATABASE_URL", "DEMO_ORIGIN", "OIDC_ISS_ENDPOINT"}
    }
    env.update(DJANGO_SETTINGS_MODULE="example_project.settings", **environment)
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def printed_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def exported(shell: str) -> dict[str, str]:
    """``export NAME=value`` lines (values as shlex.quote left them: tokens need no quotes)."""
    return dict(line.removeprefix("export ").split("=", 1) for line in shell.splitlines())


def test_seeding_and_login_follow_the_demo_origin():
    seen = printed_json(run(SEED_AND_LOG_IN, DEMO_ORIGIN="http://demo.test:9000"))

    assert seen["issuer"] == "http://demo.test:9000/o"
    assert "demo.test" in seen["allowed_hosts"]
    assert seen["portal_redirect_uris"] == "http://demo.test:9000/portal/callback/"
    assert seen["spa_redirect_uris"] == "http://demo.test:9000/portal/"
    assert seen["spa_launch_url"] == "http://demo.test:9000/portal/"
    # The server answers at its origin's host, and names itself by it.
    assert seen["discovery_status"] == 200
    assert seen["discovery_issuer"] == "http://demo.test:9000/o"
    # demo_login went through the code flow with the stored redirect URI, and its ID token
    # carries the issuer the server at that origin verifies.
    variables = exported(seen["login"])
    claims = jwt.decode(variables["ID_TOKEN"], options={"verify_signature": False})
    assert claims["iss"] == "http://demo.test:9000/o"
    assert claims["aud"] == "portal"


def test_the_default_origin_is_port_8000_and_an_explicit_issuer_wins():
    default = printed_json(run(SETTINGS_ONLY))
    assert default == {
        "origin": "http://127.0.0.1:8000",
        "issuer": "http://127.0.0.1:8000/o",
        "redirect_uri": "http://127.0.0.1:8000/portal/callback/",
        "spa_url": "http://127.0.0.1:8000/portal/",
    }
    # A trailing slash is no part of an origin: the issuer must match byte for byte.
    slashed = printed_json(run(SETTINGS_ONLY, DEMO_ORIGIN="http://127.0.0.1:9000/"))
    assert slashed["issuer"] == "http://127.0.0.1:9000/o"

    explicit = printed_json(
        run(SETTINGS_ONLY, DEMO_ORIGIN="http://127.0.0.1:9000", OIDC_ISS_ENDPOINT="https://idp.example.com/o")
    )
    assert explicit["issuer"] == "https://idp.example.com/o"
    assert explicit["redirect_uri"] == "http://127.0.0.1:9000/portal/callback/"


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        ("127.0.0.1:9000", "is not http(s)://host[:port]"),
        ("ftp://127.0.0.1:9000", "is not http(s)://host[:port]"),
        ("http://127.0.0.1:9000/o", "has more than a scheme, host and port"),
        ("http://admin@127.0.0.1:9000", "has more than a scheme, host and port"),
        ("http://127.0.0.1:port", "Port could not be cast"),
        # urlsplit drops these without a word; the issuer would keep them.
        ("http://127.0.0.1:80\n00", "contains a tab, line break or other unprintable character"),
        ("http://127.0.0.1\t:9000", "contains a tab, line break or other unprintable character"),
        ("http://127.0.0.1:9000?", "has more than a scheme, host and port"),
        ("http://127.0.0.1:9000#", "has more than a scheme, host and port"),
        ("http://127.0.0.1:", "write it as 'http://127.0.0.1'"),
        # ALLOWED_HOSTS reads these as wildcards: any Host header would pass.
        ("http://*.example.com:9000", "names no single host: ALLOWED_HOSTS would read '*.example.com'"),
        ("http://*:9000", "names no single host: ALLOWED_HOSTS would read '*' as a wildcard"),
        ("http://.example.com:9000", "names no single host: ALLOWED_HOSTS would read '.example.com'"),
        ("http://demo_host:9000", "'demo_host' is not a DNS name or an IP address"),
        ("http://127.1:9000", "'127.1' is not a DNS name or an IP address"),
        ("http://[fe80::1%25eth0]:9000", "an IPv6 address with a zone"),
        # Compared byte for byte, and jwt_profile.py and the walkthrough use it as written.
        ("http://Demo.test:9000", "write it as 'http://demo.test:9000'"),
        ("http://[0:0::1]:9000", "write it as 'http://[::1]:9000'"),
    ],
)
def test_a_demo_origin_that_is_not_an_origin_is_refused(origin, message):
    result = run(SETTINGS_ONLY, DEMO_ORIGIN=origin)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"DEMO_ORIGIN {origin!r}" in result.stderr
    assert message in result.stderr


# Asks for the JWKS with the origin's own Host header, and with another one.
HOST_HEADERS = """
import json

import django

django.setup()
from django.conf import settings
from django.test import Client
from oauth2_provider.settings import oauth2_settings

client = Client(raise_request_exception=False)
host = settings.DEMO_ORIGIN.split("://", 1)[1]
print(json.dumps({
    "issuer": oauth2_settings.OIDC_ISS_ENDPOINT,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "at_the_origin": client.get("/o/.well-known/jwks.json", HTTP_HOST=host).status_code,
    "elsewhere": client.get("/o/.well-known/jwks.json", HTTP_HOST="attacker.example").status_code,
}))
"""


@pytest.mark.parametrize(
    ("origin", "allowed_host"),
    [
        ("http://demo.test:9000", "demo.test"),
        ("http://192.0.2.7:9000", "192.0.2.7"),
        # Django compares an IPv6 Host header with its brackets.
        ("http://[::1]:9000", "[::1]"),
        ("https://[2001:db8::7]", "[2001:db8::7]"),
    ],
)
def test_the_server_answers_at_its_origin_and_nowhere_else(origin, allowed_host):
    seen = printed_json(run(HOST_HEADERS, DEMO_ORIGIN=origin))
    assert seen["issuer"] == f"{origin}/o"
    assert seen["allowed_hosts"] == ["127.0.0.1", "localhost", "testserver", allowed_host]
    assert seen["at_the_origin"] == 200
    assert seen["elsewhere"] == 400  # DisallowedHost


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key file as ``createclientkey portal`` writes it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path_factory.mktemp("keys") / "portal-key.json"
    path.write_text(json.dumps({"keyId": "k1", "key": pem, "algorithm": "RS256", "clientId": "portal"}))
    return path


@pytest.mark.parametrize(
    ("environment", "audience"),
    [
        ({}, "http://127.0.0.1:8000/o"),
        ({"DEMO_ORIGIN": "http://127.0.0.1:9000"}, "http://127.0.0.1:9000/o"),
        (
            {"DEMO_ORIGIN": "http://127.0.0.1:9000", "OIDC_ISS_ENDPOINT": "https://idp.example.com/o"},
            "https://idp.example.com/o",
        ),
    ],
)
def test_jwt_profile_signs_for_the_demo_issuer(key_file, environment, audience):
    result = run([str(ROOT / "example_project" / "jwt_profile.py"), str(key_file), "7"], **environment)
    assert result.returncode == 0, result.stderr
    variables = exported(result.stdout)
    for name in ("CLIENT_ASSERTION", "SUBJECT_JWT"):
        assert jwt.decode(variables[name], options={"verify_signature": False})["aud"] == audience


def test_the_walkthrough_names_the_server_only_through_demo_origin():
    script = (ROOT / "example_project" / "walkthrough.sh").read_text()
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    local_urls = [
        url for line in commands for url in re.findall(r"https?://(?:127\.0\.0\.1|localhost)\S*", line)
    ]
    # The defaults, in export DEMO_ORIGIN=${…:-…} and the resource server's RS=${RS_ORIGIN:-…}.
    assert local_urls == ["http://127.0.0.1:8000}", "http://127.0.0.1:8001}"]
    assert "RS=${RS_ORIGIN:-http://127.0.0.1:8001}" in commands
    assert "export DEMO_ORIGIN=${DEMO_ORIGIN:-http://127.0.0.1:8000}" in commands

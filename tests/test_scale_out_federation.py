"""A trusted issuer's keys and assertions over three server processes sharing PostgreSQL and Redis.

The issuer's JWKS is served over real HTTPS (a certificate made for 127.0.0.1, which the servers
trust through ``REQUESTS_CA_BUNDLE``), by a server of the test's own that counts its requests:
three processes share one fetch through the cache (``FEDERATION_CACHE``, the example's Redis),
and one JWT authorization grant sent to all three is used once (``REPLAY_CACHE``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws

from token_exchange.constants import GRANT_TYPE, ID_TOKEN_TYPE, JWT_BEARER_GRANT_TYPE
from token_exchange.models import AuditEvent, FederatedIdentity, TrustedIssuer

from . import proof
from .client_jwt import ISSUER as OUR_ISSUER
from .scale_out import REDIS_URL, Server, database_url, redis_answers, redis_client, servers, spread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.scale_out]
EventType = AuditEvent.EventType
PARTNER = "https://partner.example"
PARALLEL = 20


def _skip_reason() -> str | None:
    import os

    from django.db import connections, router

    if connections[router.db_for_write(AuditEvent)].vendor != "postgresql":
        return "several server processes share one database: PostgreSQL (make test-scale-out)"
    if not redis_answers(REDIS_URL):
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} does not answer, and REQUIRE_REDIS=1")
        return f"Redis at {REDIS_URL} does not answer"
    return None


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class HTTPSKeyServer:
    """Serves a public JWKS over HTTPS and counts the fetches."""

    def __init__(self, directory: Path, public: dict[str, Any]) -> None:
        self.fetches = 0
        body = json.dumps({"keys": [public]}).encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.cert, key = _certificate(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.uri = f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key() -> dict[str, Any]:
    exported: dict[str, Any] = jwk.JWK.generate(kty="RSA", size=2048, kid="partner-1").export_private(
        as_dict=True
    )
    return exported


@pytest.fixture
def key_server(tmp_path: Path, key: dict[str, Any]) -> Iterator[HTTPSKeyServer]:
    server = HTTPSKeyServer(tmp_path, jwk.JWK(**key).export_public(as_dict=True))
    yield server
    server.close()


@pytest.fixture
def fleet(transactional_db: None, tmp_path: Path, key_server: HTTPSKeyServer) -> Iterator[list[Server]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    client = redis_client()
    client.flushdb()
    client.close()
    extra = {"REQUESTS_CA_BUNDLE": str(key_server.cert)}
    with servers(
        3, database=database_url(AuditEvent), redis_url=REDIS_URL, directory=tmp_path, extra_env=extra
    ) as started:
        yield started
        errors = {server.name: server.server_errors() for server in started}
    assert not any(errors.values()), errors


@pytest.fixture
def trust(key_server: HTTPSKeyServer, portal: Any, end_user: Any) -> TrustedIssuer:
    row = TrustedIssuer.objects.create(
        name="Partner",
        issuer=PARTNER,
        jwks_uri=key_server.uri,
        audiences=["partner-app"],
        accept_id_tokens=True,
        accept_access_tokens=True,
        scope="read",
    )
    policy = portal.token_exchange_policy
    policy.trusted_issuers.add(row)
    policy.jwt_bearer_enabled = True
    policy.save()
    FederatedIdentity.objects.create(issuer=row, subject="alice", user=end_user)
    return row


def signed(key: dict[str, Any], claims: dict[str, Any], **header: Any) -> str:
    protected = {"alg": "RS256", "kid": key["kid"], **header}
    parts = jws.JWSCore("RS256", jwk.JWK(**key), json.dumps(protected), json.dumps(claims)).sign()
    return f"{parts['protected']}.{parts['payload'].decode()}.{parts['signature']}"


def post(server: Server, form: dict[str, Any], portal: Any) -> requests.Response:
    return requests.post(
        f"{server.url}/o/token/", data=form, auth=(portal.client_id, portal.plain_secret), timeout=60
    )


def test_three_processes_fetch_a_trusted_issuers_keys_once(fleet, key_server, key, trust, portal):
    now = int(time.time())
    forms = [
        {
            "grant_type": GRANT_TYPE,
            "subject_token": signed(
                key, {"iss": PARTNER, "sub": "alice", "aud": "partner-app", "iat": now, "exp": now + 300}
            ),
            "subject_token_type": ID_TOKEN_TYPE,
            "scope": "read",
        }
        for _ in range(PARALLEL)
    ]
    results = spread(PARALLEL, lambda index: post(fleet[index % len(fleet)], forms[index], portal))
    proof.count("scale-out: parallel requests", PARALLEL)

    assert Counter(status for status, _body in results) == {200: PARALLEL}
    assert key_server.fetches == 1
    # And an unknown kid, sent to every process, makes one refetch between them.
    unknown = [
        signed(
            key,
            {"iss": PARTNER, "sub": "alice", "aud": "partner-app", "iat": now, "exp": now + 300},
            kid=uuid.uuid4().hex,
        )
        for _ in range(PARALLEL)
    ]
    results = spread(
        PARALLEL,
        lambda index: post(
            fleet[index % len(fleet)],
            {"grant_type": GRANT_TYPE, "subject_token": unknown[index], "subject_token_type": ID_TOKEN_TYPE},
            portal,
        ),
    )
    assert Counter(status for status, _body in results) == {400: PARALLEL}
    assert key_server.fetches == 2


def test_one_jwt_authorization_grant_over_three_processes_is_used_once(fleet, key_server, key, trust, portal):
    now = int(time.time())
    assertion = signed(
        key,
        {
            "iss": PARTNER,
            "sub": "alice",
            "aud": OUR_ISSUER,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        },
        typ="at+jwt",
    )
    form = {"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion, "scope": "read"}
    results = spread(PARALLEL, lambda index: post(fleet[index % len(fleet)], form, portal))
    proof.count("scale-out: parallel requests", PARALLEL)

    assert Counter((status, body.get("error")) for status, body in results) == {
        (200, None): 1,
        (400, "invalid_grant"): PARALLEL - 1,
    }
    refusals = AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGE_REFUSED)
    assert [row.payload["reason"] for row in refusals] == ["replayed_jti"] * (PARALLEL - 1)
    assert AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGED).count() == 1

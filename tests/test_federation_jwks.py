"""A trusted issuer's JWKS endpoint cannot be turned against the site.

The endpoint here is a small HTTP server of the test's own on a loopback port that counts the
requests it gets and answers as told: the key set, a redirect, nothing for ten seconds, five
megabytes, or a 500. The tokens are signed with the key it publishes and sent to our token
endpoint over HTTP. Each case asserts the refusal as a client reads it, that nothing was issued,
the audit row's reason, and how often the endpoint was asked.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.cache import caches
from jwcrypto import jwk, jws

from tests import external_idp as harness
from token_exchange.constants import ID_TOKEN_TYPE
from token_exchange.federation import jwks
from token_exchange.models import FederatedIdentity, TrustedIssuer

from .adversarial import TOKEN_REFUSED, TokenClient, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

ISSUER = "https://idp.partner.example"


class KeyServer:
    """Serves ``/jwks`` as ``mode`` says and counts the requests for each path."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = key
        self.mode = "ok"
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/elsewhere":
                    return self._answer(200, json.dumps({"keys": [harness.public_jwk(server.key)]}).encode())
                if server.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{server.port}/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if server.mode == "hang":
                    time.sleep(10)
                    return self._answer(200, b"{}")
                if server.mode == "huge":
                    return self._answer(200, b'{"keys": [' + b" " * (5 * 1024 * 1024) + b"]}")
                if server.mode == "error":
                    return self._answer(500, b"{}")
                return self._answer(200, json.dumps({"keys": [harness.public_jwk(server.key)]}).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def fetches(self) -> int:
        return self.hits.get("/jwks", 0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key() -> dict[str, Any]:
    return harness.new_rsa_jwk("partner-key-1")


@pytest.fixture
def key_server(key: dict[str, Any]) -> Iterator[KeyServer]:
    server = KeyServer(key)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def federation_settings(settings: Any) -> None:
    settings.TOKEN_EXCHANGE = {
        **settings.TOKEN_EXCHANGE,
        "FEDERATION_ALLOW_HTTP_LOOPBACK": True,
        "FEDERATION_TIMEOUT_SECONDS": 1,
    }
    caches["default"].clear()


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def trust(key_server: KeyServer, portal: Any, end_user: Any) -> TrustedIssuer:
    row = TrustedIssuer.objects.create(
        name="Partner",
        issuer=ISSUER,
        jwks_uri=key_server.uri,
        audiences=["partner-app"],
        accept_id_tokens=True,
        scope="read",
    )
    portal.token_exchange_policy.trusted_issuers.add(row)
    FederatedIdentity.objects.create(issuer=row, subject="alice", user=end_user)
    return row


def id_token(key: dict[str, Any], *, kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "alice", "aud": "partner-app", "iat": now, "exp": now + 300}
    header = {"alg": "RS256", "kid": kid or key["kid"]}
    parts = jws.JWSCore("RS256", jwk.JWK(**key), json.dumps(header), json.dumps(claims)).sign()
    return f"{parts['protected']}.{parts['payload'].decode()}.{parts['signature']}"


def exchange(http: TokenClient, portal: Any, token: str) -> Any:
    return http.exchange(portal, subject_token=token, subject_token_type=ID_TOKEN_TYPE, scope="read")


def test_the_keys_are_fetched_once_and_shared(http, portal, key, key_server, trust):
    for _ in range(3):
        assert exchange(http, portal, id_token(key)).status_code == 200
    assert key_server.fetches() == 1


def test_a_flood_of_unknown_kids_costs_the_issuer_one_request(http, portal, key, key_server, trust):
    assert exchange(http, portal, id_token(key)).status_code == 200
    for _ in range(20):
        token = id_token(key, kid=uuid.uuid4().hex)
        refused(
            lambda token=token: exchange(http, portal, token),
            status=400,
            error="invalid_request",
            description=TOKEN_REFUSED,
            reasons=["unknown_kid"],
        )
    assert key_server.fetches() == 2  # the first fetch, and one refetch for the whole flood
    # The known key still works meanwhile.
    assert exchange(http, portal, id_token(key)).status_code == 200


def test_a_redirect_is_not_followed(http, portal, key, key_server, trust):
    key_server.mode = "redirect"
    refused(
        lambda: exchange(http, portal, id_token(key)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["jwks_unavailable"],
    )
    assert key_server.fetches() == 1
    assert key_server.hits.get("/elsewhere", 0) == 0


def test_an_endpoint_that_hangs_is_given_up_on(http, portal, key, key_server, trust):
    key_server.mode = "hang"
    started = time.monotonic()
    refused(
        lambda: exchange(http, portal, id_token(key)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["jwks_unavailable"],
    )
    assert time.monotonic() - started < 5  # FEDERATION_TIMEOUT_SECONDS is 1


def test_five_megabytes_are_not_read(http, portal, key, key_server, trust):
    key_server.mode = "huge"
    refused(
        lambda: exchange(http, portal, id_token(key)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["jwks_unavailable"],
    )


def test_after_a_failure_the_issuer_is_left_alone_for_a_while(http, portal, key, key_server, trust):
    key_server.mode = "error"
    for _ in range(5):
        refused(
            lambda: exchange(http, portal, id_token(key)),
            status=400,
            error="invalid_request",
            description=TOKEN_REFUSED,
            reasons=["jwks_unavailable"],
        )
    assert key_server.fetches() == 1
    # Once the backoff is over (here: forgotten), the next token fetches again.
    key_server.mode = "ok"
    caches["default"].delete(jwks._cache_key(key_server.uri) + ":failed")
    assert exchange(http, portal, id_token(key)).status_code == 200
    assert key_server.fetches() == 2


def test_a_pasted_jwks_needs_no_fetch(http, portal, key, key_server, trust):
    trust.jwks_uri = ""
    trust.jwks = {"keys": [harness.public_jwk(key)]}
    trust.save()
    assert exchange(http, portal, id_token(key)).status_code == 200
    assert key_server.fetches() == 0


def test_a_cache_that_does_not_answer_is_a_refusal(http, portal, key, key_server, trust, settings):
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "FEDERATION_CACHE": "no-such-cache"}
    refused(
        lambda: exchange(http, portal, id_token(key)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["jwks_unavailable"],
    )
    assert key_server.fetches() == 0

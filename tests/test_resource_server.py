"""A separate resource server, in process: the RFC 9068 verifier's decision table, the JWKS
fetching under key rotation and floods, DOT's introspection mode through our validator, the DRF
class and the plain decorator, the guard on a verified token, the system checks.

The issuer's JWKS and introspection endpoints are a small HTTP server of this module (they count
what they are asked), so every fetch is a real one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.core.cache import caches
from django.core.checks import Error, Warning
from django.http import HttpRequest, JsonResponse
from django.test import RequestFactory, override_settings
from oauthlib.common import Request as OAuthRequest
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from example_resource_server import views as rs_views
from token_exchange import checks as shared_checks
from token_exchange.conf import invalid
from token_exchange.impersonation.guard import ImpersonationGuardMiddleware, get_actor, refuse_impersonated
from token_exchange.resource_server import (
    IntrospectionValidator,
    InvalidToken,
    TokenUser,
    VerifiedAccessToken,
    introspected_access_token_required,
    jwt_access_token,
    jwt_access_token_required,
    verify_jwt_access_token,
)
from token_exchange.resource_server import checks as rs_checks
from token_exchange.resource_server.introspection import cache_key

ISSUER = "https://id.example.com/o"
RESOURCE = "https://aggregates.example.com/"
ACT = {"iss": ISSUER, "sub": "7"}
EXPIRED = "The access token has expired."
INVALID = "The access token is invalid."
NOT_FOR_US = "The access token is not meant for this resource server."
UNVERIFIABLE = "The access token cannot be verified now."
VALIDATOR = "token_exchange.resource_server.IntrospectionValidator"


# The issuer: a JWKS and an introspection endpoint that count their requests -----------------


class Issuer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jwks: dict[str, Any] = {}  # path -> JSON body
        # path -> (status, headers, body, seconds to wait first): answers no JWKS endpoint should give
        self.raw: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
        self.answers: dict[str, tuple[int, bytes]] = {}  # path -> (status, body)
        # path -> (the whole HTTP answer, status line and headers included, seconds between its
        # bytes): an endpoint trickling its answer, a byte at a time, each sooner than a timeout
        self.trickled: dict[str, tuple[bytes, float]] = {}
        self.hits: Counter[str] = Counter()
        self.posts: list[tuple[str, dict[str, str], str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Issuer

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        if self.path in self.server.trickled:
            self._trickle()
            return
        if self.path in self.server.raw:
            status, headers, raw, delay = self.server.raw[self.path]
            time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)  # HTTP/1.0: without Content-Length, the body ends at close
            except OSError:
                pass  # the client gave up first
            return
        body = self.server.jwks.get(self.path)
        self._answer(200 if body is not None else 404, json.dumps(body or {}).encode())

    def do_POST(self) -> None:
        self.server.hits[self.path] += 1
        length = int(self.headers.get("Content-Length", 0))
        self.server.posts.append((self.path, dict(self.headers), self.rfile.read(length).decode()))
        if self.path in self.server.trickled:
            self._trickle()
            return
        status, body = self.server.answers.get(self.path, (404, b"{}"))
        self._answer(status, body)

    def _trickle(self) -> None:
        answer, interval = self.server.trickled[self.path]
        try:
            for byte in answer:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(interval)
        except OSError:
            pass  # the client gave up

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


class Key:
    def __init__(self, kid: str | None = None, private: Any = None) -> None:
        self.private = private or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid or uuid.uuid4().hex

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if isinstance(self.private, rsa.RSAPrivateKey) else None
        if algorithm is None:
            data = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            data = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


_KEY = Key()  # RSA key generation costs ~50 ms: one for the module's ordinary tokens


@pytest.fixture
def key() -> Key:
    return _KEY


@pytest.fixture
def jwks(issuer: Issuer, key: Key, settings: Any) -> Any:
    """A JWKS URI of this test alone (so its key set and counts are its own), publishing ``key``."""
    path = f"/{uuid.uuid4().hex}/jwks.json"
    issuer.jwks[path] = {"keys": [key.jwk]}
    settings.TOKEN_EXCHANGE = {
        "RESOURCE_SERVER": {"ISSUER": ISSUER, "RESOURCE_URI": RESOURCE, "JWKS_URI": issuer.url + path}
    }

    class Published:
        def publish(self, *keys: Key) -> None:
            issuer.jwks[path] = {"keys": [k.jwk for k in keys]}

        @property
        def fetches(self) -> int:
            return issuer.hits[path]

        uri = issuer.url + path

    return Published()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "42",
        "aud": [RESOURCE],
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": uuid.uuid4().hex,
        "client_id": "portal",
        "scope": "openid read",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not _DROP}


_DROP = object()


def sign(payload: dict[str, Any], key: Key = _KEY, **header: Any) -> str:
    headers = {"typ": "at+jwt", "kid": key.kid, **header}
    algorithm = headers.pop("alg", "RS256")
    if headers.get("typ") is _DROP:
        del headers["typ"]
    return jwt.encode(payload, key.private, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_the_public_key(key: Key) -> str:
    """The algorithm confusion attack: an HMAC keyed with the public key the verifier holds."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}).encode())
    body = _b64(json.dumps(claims()).encode())
    mac = hmac.new(key.public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def unsigned(key: Key) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": key.kid}).encode())
    return f"{header}.{_b64(json.dumps(claims()).encode())}."


def refusal(value: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verify_jwt_access_token(value)
    assert caught.value.error == "invalid_token"
    assert caught.value.status_code == 401
    return str(caught.value.description)


# The decision table of the verifier ----------------------------------------------------------


def test_a_good_token_is_verified(jwks):
    token = verify_jwt_access_token(sign(claims(act=ACT)))
    assert (token.iss, token.sub, token.client_id, token.scope) == (ISSUER, "42", "portal", "openid read")
    assert (token.aud, token.act, token.scopes) == ((RESOURCE,), ACT, ("openid", "read"))
    assert token.is_valid(["read"])
    assert not token.is_valid(["write"])
    assert not token.is_expired()


OTHER = Key(kid=_KEY.kid)  # another key under the published kid: a forged signature


@pytest.mark.parametrize(
    ("case", "make", "description"),
    [
        ("bad signature", lambda: sign(claims(), OTHER), INVALID),
        ("alg none", lambda: unsigned(_KEY), INVALID),
        ("HS256 keyed with the public key", lambda: hs256_with_the_public_key(_KEY), INVALID),
        ("RS512, not in ALGORITHMS", lambda: sign(claims(), alg="RS512"), INVALID),
        ("typ JWT", lambda: sign(claims(), typ="JWT"), INVALID),
        ("typ missing", lambda: sign(claims(), typ=_DROP), INVALID),
        ("no kid", lambda: jwt.encode(claims(), _KEY.private, "RS256", headers={"typ": "at+jwt"}), INVALID),
        ("expired", lambda: sign(claims(exp=int(time.time()) - 60)), EXPIRED),
        ("nbf in the future", lambda: sign(claims(nbf=int(time.time()) + 120)), INVALID),
        ("iat in the future", lambda: sign(claims(iat=int(time.time()) + 120)), INVALID),
        ("another issuer", lambda: sign(claims(iss="https://evil.example.com/o")), NOT_FOR_US),
        ("the issuer with a slash", lambda: sign(claims(iss=ISSUER + "/")), NOT_FOR_US),
        ("another audience", lambda: sign(claims(aud=["https://crm.example.com/"])), NOT_FOR_US),
        ("the audience as a prefix", lambda: sign(claims(aud=[RESOURCE + "admin/"])), NOT_FOR_US),
        ("act not an object", lambda: sign(claims(act="7")), INVALID),
        ("exp past any date", lambda: sign(claims(exp=10**400)), INVALID),
        ("empty sub", lambda: sign(claims(sub="")), INVALID),
        ("not a JWT", lambda: "garbage", INVALID),
        ("three dots of nothing", lambda: "a.b.c", INVALID),
    ],
)
def test_refused(jwks, case, make, description):
    assert refusal(make()) == description


@pytest.mark.parametrize("claim", jwt_access_token.REQUIRED_CLAIMS)
def test_a_required_claim_missing_is_refused(jwks, claim):
    # RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat, jti.
    assert refusal(sign(claims(**{claim: _DROP}))) in (INVALID, NOT_FOR_US)


@pytest.mark.parametrize(
    ("case", "payload", "header"),
    [
        ("typ with the application/ prefix", {}, {"typ": "application/at+jwt"}),
        ("typ in capitals", {}, {"typ": "AT+JWT"}),
        ("expired within the leeway", {"exp": lambda: int(time.time()) - 10}, {}),
        ("aud a string", {"aud": RESOURCE}, {}),
        ("aud naming others too", {"aud": ["https://crm.example.com/", RESOURCE]}, {}),
        ("no scope", {"scope": _DROP}, {}),
    ],
)
def test_accepted(jwks, case, payload, header):
    payload = {name: value() if callable(value) else value for name, value in payload.items()}
    assert verify_jwt_access_token(sign(claims(**payload), **header)).sub == "42"


def test_another_key_type_under_an_allowed_alg_is_refused(jwks, settings):
    """An EC key published under the kid of an RS256 token: a refusal, not a 500."""
    ec_key = Key(private=ec.generate_private_key(ec.SECP256R1()))
    jwks.publish(ec_key)
    assert refusal(sign(claims(), _KEY, kid=ec_key.kid)) == INVALID


def test_leeway_is_a_setting(jwks, settings):
    token = sign(claims(exp=int(time.time()) - 10))
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["LEEWAY_SECONDS"] = 0
    assert refusal(token) == EXPIRED


def test_without_issuer_or_resource_uri_every_token_is_refused(jwks, settings):
    settings.TOKEN_EXCHANGE = {"RESOURCE_SERVER": {"ISSUER": ISSUER}}
    assert refusal(sign(claims())) == UNVERIFIABLE


# Fetching keys: once, on rotation once more, never a flood ---------------------------------


def test_the_jwks_is_fetched_once_for_many_tokens(jwks):
    for _ in range(5):
        verify_jwt_access_token(sign(claims()))
    assert jwks.fetches == 1


def test_a_flood_of_unknown_kids_makes_at_most_one_refetch_per_interval(jwks, monkeypatch):
    verify_jwt_access_token(sign(claims()))
    for _ in range(50):
        assert refusal(sign(claims(), kid=uuid.uuid4().hex)) == INVALID
    assert jwks.fetches == 2  # the first fetch, and one refetch for the first unknown kid

    monkeypatch.setattr(jwt_access_token, "UNKNOWN_KID_REFETCH_SECONDS", 0.2)
    time.sleep(0.25)
    for _ in range(10):
        refusal(sign(claims(), kid=uuid.uuid4().hex))
    assert jwks.fetches == 3  # the next interval: one more


def test_key_rotation_costs_one_refetch(jwks, key):
    verify_jwt_access_token(sign(claims()))
    rotated = Key()
    jwks.publish(key, rotated)  # the issuer publishes its next key, then signs with it
    assert verify_jwt_access_token(sign(claims(), rotated)).sub == "42"
    assert verify_jwt_access_token(sign(claims(), rotated)).sub == "42"
    assert verify_jwt_access_token(sign(claims(), key)).sub == "42"
    assert jwks.fetches == 2


def test_a_jwks_endpoint_that_is_down_is_a_refusal(settings):
    with socket_closed() as url:
        settings.TOKEN_EXCHANGE = {
            "RESOURCE_SERVER": {
                "ISSUER": ISSUER,
                "RESOURCE_URI": RESOURCE,
                "JWKS_URI": url,
                "TIMEOUT_SECONDS": 1,
            }
        }
        assert refusal(sign(claims())) == UNVERIFIABLE


@pytest.mark.parametrize("body", [{"keys": []}, ["not", "an", "object"], {"keys": [{"kty": "nonsense"}]}])
def test_a_jwks_without_usable_keys_is_a_refusal(issuer, settings, body):
    path = f"/{uuid.uuid4().hex}/jwks.json"
    issuer.jwks[path] = body
    settings.TOKEN_EXCHANGE = {
        "RESOURCE_SERVER": {"ISSUER": ISSUER, "RESOURCE_URI": RESOURCE, "JWKS_URI": issuer.url + path}
    }
    assert refusal(sign(claims())) == UNVERIFIABLE


def test_jwks_uri_defaults_below_the_issuer(issuer, settings):
    path = f"/{uuid.uuid4().hex}"
    issuer.jwks[f"{path}/.well-known/jwks.json"] = {"keys": [_KEY.jwk]}
    settings.TOKEN_EXCHANGE = {"RESOURCE_SERVER": {"ISSUER": issuer.url + path, "RESOURCE_URI": RESOURCE}}
    assert verify_jwt_access_token(sign(claims(iss=issuer.url + path))).sub == "42"


def raw_jwks(
    issuer: Issuer,
    settings: Any,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
    timeout: int = 5,
) -> str:
    """A JWKS URI of this test alone that answers exactly this; returns its path."""
    path = f"/{uuid.uuid4().hex}/jwks.json"
    headers = headers if headers is not None else {"Content-Length": str(len(body))}
    issuer.raw[path] = (status, headers, body, delay)
    settings.TOKEN_EXCHANGE = {
        "RESOURCE_SERVER": {
            "ISSUER": ISSUER,
            "RESOURCE_URI": RESOURCE,
            "JWKS_URI": issuer.url + path,
            "TIMEOUT_SECONDS": timeout,
        }
    }
    return path


@pytest.mark.parametrize(
    "body",
    [b"<html>maintenance</html>", b"", b"\xff\xfe", b"[" * 100_000, b'{"keys": "none"}'],
    ids=["html", "empty", "not UTF-8", "nested beyond reason", "keys not a list"],
)
def test_a_jwks_that_is_no_json_jwk_set_is_a_refusal_not_a_500(issuer, settings, body):
    raw_jwks(issuer, settings, 200, body)
    assert refusal(sign(claims())) == UNVERIFIABLE
    response = drf(rs_views.JWTAggregates.as_view(), sign(claims()))  # within the backoff: no fetch
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == _challenge("invalid_token", UNVERIFIABLE)


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "read until closed"])
def test_a_jwks_of_megabytes_is_not_read(issuer, settings, declared):
    """5 MB, under a key set that would verify the token: refused, read up to MAX_JWKS_BYTES only."""
    padding = " " * 5_000_000
    body = json.dumps({"keys": [_KEY.jwk], "padding": padding}).encode()
    raw_jwks(issuer, settings, 200, body, headers={"Content-Length": str(len(body))} if declared else {})
    assert refusal(sign(claims())) == UNVERIFIABLE


def test_a_redirecting_jwks_endpoint_is_not_followed(issuer, settings):
    """The keys come from JWKS_URI itself: a redirect (an open redirect at the issuer, a
    hijacked path) must not hand the resource server someone else's keys."""
    elsewhere = f"/{uuid.uuid4().hex}/attacker-keys.json"
    issuer.jwks[elsewhere] = {"keys": [_KEY.jwk]}
    raw_jwks(issuer, settings, 302, b"", headers={"Location": issuer.url + elsewhere, "Content-Length": "0"})
    assert refusal(sign(claims())) == UNVERIFIABLE
    assert issuer.hits[elsewhere] == 0


def test_a_failing_jwks_endpoint_is_asked_once_per_backoff_whatever_the_tokens(issuer, settings, monkeypatch):
    path = raw_jwks(issuer, settings, 503, b"busy")
    for n in range(50):  # tokens of the known kid and forged ones, each of which would fetch
        kid = _KEY.kid if n % 2 else uuid.uuid4().hex
        assert refusal(sign(claims(), kid=kid)) == UNVERIFIABLE
    assert issuer.hits[path] == 1

    monkeypatch.setattr(jwt_access_token, "FAILURE_BACKOFF_SECONDS", 0.2)
    time.sleep(0.25)
    issuer.raw[path] = (200, {}, json.dumps({"keys": [_KEY.jwk]}).encode(), 0.0)  # the issuer is back
    assert verify_jwt_access_token(sign(claims())).sub == "42"
    assert verify_jwt_access_token(sign(claims())).sub == "42"
    assert issuer.hits[path] == 2


def test_a_failed_refetch_keeps_the_cached_keys(jwks, issuer, settings):
    """PyJWT 2.8's own fetch wipes its cache when it fails: then every genuine token would fetch."""
    verify_jwt_access_token(sign(claims()))
    path = settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["JWKS_URI"].removeprefix(issuer.url)
    issuer.raw[path] = (503, {}, b"", 0.0)  # the issuer blips
    assert refusal(sign(claims(), kid=uuid.uuid4().hex)) == UNVERIFIABLE  # its refetch fails
    for _ in range(5):
        assert verify_jwt_access_token(sign(claims())).sub == "42"
    assert jwks.fetches == 2


def test_the_jwks_is_fetched_again_once_per_lifespan(jwks, monkeypatch):
    monkeypatch.setattr(jwt_access_token, "JWKS_LIFESPAN_SECONDS", 0.2)  # for the KeySet made now
    for _ in range(10):
        verify_jwt_access_token(sign(claims()))
    assert jwks.fetches == 1
    time.sleep(0.25)
    for _ in range(10):
        verify_jwt_access_token(sign(claims()))
    assert jwks.fetches == 2


def test_a_hanging_jwks_endpoint_costs_one_timeout_not_one_per_request(issuer, settings):
    """Requests arriving during a fetch wait for it and share its failure: six concurrent
    requests against an endpoint slower than TIMEOUT_SECONDS=1 make one fetch and all finish
    after about one second (one after the other, as before, they took six)."""
    path = raw_jwks(issuer, settings, 200, b'{"keys": []}', delay=3.0, timeout=1)
    done: list[float] = []
    started = time.monotonic()

    def one() -> None:
        with pytest.raises(InvalidToken):
            verify_jwt_access_token(sign(claims(), kid=uuid.uuid4().hex))
        done.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(done) == 6
    assert max(done) < 2.5
    assert issuer.hits[path] == 1


_GOOD_JWKS = json.dumps({"keys": [_KEY.jwk]}).encode()
# A JWKS that would verify the token, a byte every 0.1 s: each read answers well within
# TIMEOUT_SECONDS=1, the whole takes minutes. In its body, and in its headers.
TRICKLED_BODY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(_GOOD_JWKS)
    + _GOOD_JWKS
)
TRICKLED_HEADERS = b"HTTP/1.1 200 OK\r\n" + b"X-Padding: a\r\n" * 1000


def trickle(issuer: Issuer, path: str, answer: bytes) -> None:
    issuer.trickled[path] = (answer, 0.1)


def within(seconds: float, call: Any) -> Any:
    """What ``call()`` returns or raises, if it does within ``seconds``; else the test fails
    (the call, left in its thread, does not hold the test up)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("returned", call()))
        except BaseException as error:
            outcome.append(("raised", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still waiting after {seconds} s"
    [(how, value)] = outcome
    if how == "raised":
        raise value
    return value


@pytest.mark.parametrize("answer", [TRICKLED_BODY, TRICKLED_HEADERS], ids=["body", "headers"])
def test_a_trickling_jwks_endpoint_costs_timeout_seconds_in_all(issuer, settings, answer):
    """requests' timeout bounds each read; TIMEOUT_SECONDS bounds the whole answer."""
    path = raw_jwks(issuer, settings, 200, b"", timeout=1)
    trickle(issuer, path, answer)
    assert within(1.8, lambda: refusal(sign(claims()))) == UNVERIFIABLE


def test_a_token_whose_key_is_cached_is_verified_while_a_fetch_hangs(jwks, issuer, settings):
    """A forged kid makes a refetch from an endpoint that trickles; a genuine token, whose key
    is cached, does not wait for it."""
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["TIMEOUT_SECONDS"] = 3
    verify_jwt_access_token(sign(claims()))  # the keys are cached
    trickle(issuer, jwks.uri.removeprefix(issuer.url), TRICKLED_BODY)
    refused: list[str] = []
    fetching = threading.Thread(target=lambda: refused.append(refusal(sign(claims(), kid=uuid.uuid4().hex))))
    fetching.start()
    time.sleep(0.3)  # the refetch is under way
    assert within(0.5, lambda: verify_jwt_access_token(sign(claims()))).sub == "42"
    assert fetching.is_alive()
    fetching.join()
    assert refused == [UNVERIFIABLE]
    assert jwks.fetches == 2


def test_a_request_waits_for_a_fetch_under_way_at_most_timeout_seconds(jwks):
    """Whatever holds up the fetch (a name lookup has no timeout), a token needing the keys is
    refused after TIMEOUT_SECONDS rather than queued behind it."""
    verify_jwt_access_token(sign(claims()))
    keys = jwt_access_token.key_set(jwks.uri, timeout=5)
    keys.timeout = 1  # this test's KeySet; 5 s is the default TIMEOUT_SECONDS it was made with
    with keys._lock:  # as a fetch that does not end would
        started = time.monotonic()
        assert within(1.5, lambda: refusal(sign(claims(), kid=uuid.uuid4().hex))) == UNVERIFIABLE
        assert time.monotonic() - started > 0.9
        assert within(0.5, lambda: verify_jwt_access_token(sign(claims()))).sub == "42"  # cached key


@pytest.mark.parametrize(
    ("published", "alg", "accepted"),
    [
        ("RS256", "PS256", False),  # RFC 8725 §3.1: the JWK names its algorithm; others are refused
        ("PS256", "RS256", False),
        ("PS256", "PS256", True),
        (None, "PS256", True),  # a JWK naming none may serve any allowed alg of its key type
    ],
)
def test_the_algorithm_a_jwk_names_is_enforced(jwks, settings, issuer, published, alg, accepted):
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["ALGORITHMS"] = ["RS256", "PS256"]
    path = settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["JWKS_URI"].removeprefix(issuer.url)
    jwk = {**_KEY.jwk, "alg": published} if published else _KEY.jwk
    issuer.jwks[path] = {"keys": [jwk]}
    token = sign(claims(), alg=alg)
    if accepted:
        assert verify_jwt_access_token(token).sub == "42"
    else:
        assert refusal(token) == INVALID


class socket_closed:
    """A URL where nothing listens."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}/jwks.json"

    def __exit__(self, *exc: Any) -> None:
        pass


# DRF: JWTAccessTokenAuthentication, NotImpersonated, DOT's scope permissions -----------------

api = APIRequestFactory()


def drf(view: Any, token: str | None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    response = view(api.get("/", **headers))
    response.render()
    return response


def _challenge(error: str, description: str) -> str:
    return f'Bearer realm="api", error="{error}", error_description="{description}"'


def test_drf_accepts_and_shows_the_token(jwks):
    response = drf(rs_views.JWTAggregates.as_view(), sign(claims(act=ACT)))
    assert response.status_code == 200
    assert response.data == {
        "mode": "jwt",
        "sub": "42",
        "client_id": "portal",
        "scope": "openid read",
        "aud": [RESOURCE],
        "act": ACT,
    }


def test_drf_not_impersonated_refuses_act(jwks):
    response = drf(rs_views.JWTSettings.as_view(), sign(claims(act=ACT)))
    assert (response.status_code, response.data["detail"]) == (
        403,
        "Impersonated tokens cannot be used here.",
    )
    assert drf(rs_views.JWTSettings.as_view(), sign(claims())).status_code == 200


@pytest.mark.parametrize(
    ("make", "description"),
    [
        (lambda: sign(claims(exp=int(time.time()) - 60)), EXPIRED),
        (lambda: sign(claims(aud=["https://crm.example.com/"])), NOT_FOR_US),
        (lambda: sign(claims(), typ="JWT"), INVALID),
        (lambda: unsigned(_KEY), INVALID),
        (lambda: "", INVALID),
    ],
)
def test_drf_refusals_are_401_with_a_challenge(jwks, make, description):
    response = drf(rs_views.JWTAggregates.as_view(), make())
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == _challenge("invalid_token", description)
    assert response.data == {"detail": description}


def test_drf_jwks_down_is_401_not_500(settings):
    with socket_closed() as url:
        settings.TOKEN_EXCHANGE = {
            "RESOURCE_SERVER": {
                "ISSUER": ISSUER,
                "RESOURCE_URI": RESOURCE,
                "JWKS_URI": url,
                "TIMEOUT_SECONDS": 1,
            }
        }
        response = drf(rs_views.JWTAggregates.as_view(), sign(claims()))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == _challenge("invalid_token", UNVERIFIABLE)


def test_drf_without_a_token_other_authenticators_may_run(jwks):
    from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication

    assert JWTAccessTokenAuthentication().authenticate(api.get("/")) is None
    basic = api.get("/", HTTP_AUTHORIZATION="Basic Zm9vOmJhcg==")
    assert JWTAccessTokenAuthentication().authenticate(basic) is None
    response = drf(rs_views.JWTAggregates.as_view(), None)
    assert (response.status_code, response["WWW-Authenticate"]) == (401, 'Bearer realm="api"')


def test_dot_scope_permissions_work_on_the_verified_token(jwks):
    from oauth2_provider.contrib.rest_framework import TokenHasReadWriteScope, TokenHasScope

    from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication

    class Writes(APIView):
        authentication_classes = [JWTAccessTokenAuthentication]
        permission_classes = [TokenHasScope]
        required_scopes = ["write"]

        def get(self, request: Any) -> Response:
            return Response({})

    class ReadWrite(Writes):
        permission_classes = [TokenHasReadWriteScope]
        required_scopes: list[str] = []

    assert drf(Writes.as_view(), sign(claims(scope="openid read"))).status_code == 403
    assert drf(Writes.as_view(), sign(claims(scope="openid write"))).status_code == 200
    assert drf(ReadWrite.as_view(), sign(claims(scope="read"))).status_code == 200  # GET needs read
    assert drf(ReadWrite.as_view(), sign(claims(scope="write"))).status_code == 403


def test_dot_is_authenticated_or_token_has_scope_checks_the_scope_of_a_jwt(jwks):
    """DOT's permission checks scopes only for an ``OAuth2Authentication``: a read-only token
    must not pass a view that requires "write" just by being authenticated."""
    from oauth2_provider.contrib.rest_framework import IsAuthenticatedOrTokenHasScope

    from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication

    class Writes(APIView):
        authentication_classes = [JWTAccessTokenAuthentication]
        permission_classes = [IsAuthenticatedOrTokenHasScope]
        required_scopes = ["write"]

        def post(self, request: Any) -> Response:
            return Response({"wrote": True})

    def post(token: str) -> Any:
        response = Writes.as_view()(api.post("/", HTTP_AUTHORIZATION=f"Bearer {token}"))
        response.render()
        return response

    assert post(sign(claims(scope="openid read"))).status_code == 403
    assert post(sign(claims(scope="openid write"))).status_code == 200


def test_a_view_with_both_modes_honours_introspection_saying_not_active(jwks, introspection, settings):
    """A JWT the authorization server calls not active (revoked, an ended impersonation) is
    refused, although its signature still verifies offline."""
    from oauth2_provider.contrib.rest_framework import OAuth2Authentication
    from rest_framework.permissions import IsAuthenticated

    from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication

    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}
    # The introspection fixture wrote its own RESOURCE_SERVER: give it the JWKS of this test back.
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["JWKS_URI"] = jwks.uri

    class Both(APIView):
        authentication_classes = [OAuth2Authentication, JWTAccessTokenAuthentication]
        permission_classes = [IsAuthenticated]

        def get(self, request: Any) -> Response:
            return Response({"by": type(request.successful_authenticator).__name__})

    token = sign(claims(act=ACT))
    introspection.answer({"active": False})
    refused = drf(Both.as_view(), token)
    assert refused.status_code == 401
    # DRF's challenge is the first class's: DOT's, without spaces.
    assert refused["WWW-Authenticate"] == (
        'Bearer realm="api",error="invalid_token",error_description="The access token is invalid."'
    )
    assert refused.data == {"detail": INVALID}
    assert jwks.fetches == 0  # not even looked at offline

    introspection.answer(active())
    accepted = drf(Both.as_view(), token)
    assert (accepted.status_code, accepted.data) == (200, {"by": "OAuth2Authentication"})


# The plain Django decorators --------------------------------------------------------------


@jwt_access_token_required(scopes=["read"])
@refuse_impersonated
def plain_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"user": request.user.pk, "act": get_actor(request)})


def plain(token: str | None, view: Any = plain_view) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return view(RequestFactory().post("/", **headers))


def test_plain_view_accepts_and_sets_user_and_auth(jwks):
    response = plain(sign(claims()))
    assert (response.status_code, json.loads(response.content)) == (200, {"user": "42", "act": None})


def test_plain_view_refusals(jwks):
    expired = plain(sign(claims(exp=int(time.time()) - 60)))
    assert expired.status_code == 401
    assert expired["WWW-Authenticate"] == _challenge("invalid_token", EXPIRED)
    assert json.loads(expired.content) == {"error": "invalid_token", "error_description": EXPIRED}

    missing = plain(None)
    assert (missing.status_code, missing["WWW-Authenticate"]) == (401, 'Bearer realm="api"')

    scope = plain(sign(claims(scope="openid")))
    assert scope.status_code == 403
    assert scope["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks a scope this resource requires.", scope="read"'
    )

    impersonated = plain(sign(claims(act=ACT)))
    assert (impersonated.status_code, json.loads(impersonated.content)["error"]) == (403, "access_denied")


def test_the_decorator_works_without_parentheses(jwks):
    @jwt_access_token_required
    def view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"scope": request.auth.scope})  # type: ignore[attr-defined]

    assert json.loads(plain(sign(claims()), view).content) == {"scope": "openid read"}
    assert getattr(view, "csrf_exempt", False)


# Introspection: DOT's mode, answered by IntrospectionValidator ------------------------------


@pytest.fixture
def introspection(issuer: Issuer, settings: Any) -> Any:
    path = f"/{uuid.uuid4().hex}/introspect/"
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "RESOURCE_SERVER_INTROSPECTION_URL": issuer.url + path,
        "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": ("aggregates", "s3cret/+&"),
    }
    settings.TOKEN_EXCHANGE = {"RESOURCE_SERVER": {"ISSUER": ISSUER, "RESOURCE_URI": RESOURCE}}
    caches["default"].clear()

    class Endpoint:
        def answer(self, body: Any, status: int = 200) -> None:
            issuer.answers[path] = (status, body if isinstance(body, bytes) else json.dumps(body).encode())

        @property
        def posts(self) -> list[tuple[dict[str, str], str]]:
            return [(headers, body) for at, headers, body in issuer.posts if at == path]

    return Endpoint()


def active(**changes: Any) -> dict[str, Any]:
    body = {
        "active": True,
        "iss": ISSUER,
        "aud": [RESOURCE],
        "exp": int(time.time()) + 300,
        "iat": int(time.time()),
        "client_id": "portal",
        "sub": "42",
        "username": "end-user",
        "scope": "openid read",
        "jti": "token-1",
        "token_type": "Bearer",
        "act": ACT,
    }
    body.update(changes)
    return {name: value for name, value in body.items() if value is not _DROP}


def validate(token: str = "opaque-token-value", scopes: list[str] | None = None) -> OAuthRequest:
    request = OAuthRequest("https://aggregates.example.com/x", headers={"Authorization": f"Bearer {token}"})
    request.valid = IntrospectionValidator().validate_bearer_token(token, scopes or [], request)
    return request


def test_an_active_answer_becomes_the_verified_token(introspection):
    introspection.answer(active())
    request = validate()
    assert request.valid is True
    token = request.access_token
    assert isinstance(token, VerifiedAccessToken)
    assert (token.sub, token.client_id, token.act, token.aud) == ("42", "portal", ACT, (RESOURCE,))
    assert request.user == TokenUser("42")
    assert request.user.username == "end-user"
    assert (request.scopes, request.client, request.client_id) == (["openid", "read"], None, "portal")
    assert not request.user.is_staff
    assert not request.user.has_perm("auth.view_user")


def test_the_token_is_posted_with_basic_credentials(introspection):
    introspection.answer(active())
    validate("the-token")
    [(headers, body)] = introspection.posts
    # RFC 6749 §2.3.1: each part form-urlencoded before base64.
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"aggregates:s3cret%2F%2B%26").decode()
    assert body == "token=the-token"


def test_a_bearer_credential_for_introspection(introspection, settings):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "RESOURCE_SERVER_AUTH_TOKEN": "rs-token"}
    introspection.answer(active())
    validate()
    assert introspection.posts[0][0]["Authorization"] == "Bearer rs-token"


@pytest.mark.parametrize(
    ("case", "status", "body", "description"),
    [
        ("inactive", 200, lambda: {"active": False}, INVALID),
        ("active as a string", 200, lambda: active(active="true"), INVALID),
        ("another audience", 200, lambda: active(aud=["https://crm.example.com/"]), NOT_FOR_US),
        ("no audience", 200, lambda: active(aud=_DROP), NOT_FOR_US),
        ("another issuer", 200, lambda: active(iss="https://evil.example.com/o"), NOT_FOR_US),
        ("no issuer", 200, lambda: active(iss=_DROP), NOT_FOR_US),
        ("expired", 200, lambda: active(exp=int(time.time()) - 60), EXPIRED),
        ("no exp", 200, lambda: active(exp=_DROP), INVALID),
        ("exp past any date", 200, lambda: active(exp=10**400), INVALID),  # not an OverflowError
        ("act not an object", 200, lambda: active(act=["7"]), INVALID),
        ("the server refuses our credentials", 401, lambda: {"error": "invalid_client"}, UNVERIFIABLE),
        ("the server fails", 500, lambda: b"<html>oops</html>", UNVERIFIABLE),
        ("not JSON", 200, lambda: b"<html>", UNVERIFIABLE),
        ("nested beyond reason", 200, lambda: b"[" * 100_000 + b"]" * 100_000, UNVERIFIABLE),
        ("over 1 MB", 200, lambda: active(padding=" " * 1_000_000), UNVERIFIABLE),
        ("a JSON list", 200, lambda: [True], INVALID),
    ],
)
def test_introspection_refusals(introspection, case, status, body, description):
    introspection.answer(body(), status)
    request = validate()
    assert request.valid is False
    assert request.oauth2_error == {"error": "invalid_token", "error_description": description}
    assert not hasattr(request, "access_token") or request.access_token is None


def test_the_authorization_server_down_is_a_refusal(introspection, settings):
    with socket_closed() as url:
        settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "RESOURCE_SERVER_INTROSPECTION_URL": url}
        request = validate()
    assert request.valid is False
    assert request.oauth2_error["error_description"] == UNVERIFIABLE


def test_an_introspection_endpoint_trickling_its_answer_costs_timeout_seconds_in_all(
    introspection, issuer, settings
):
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["TIMEOUT_SECONDS"] = 1
    body = json.dumps(active()).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    path = settings.OAUTH2_PROVIDER["RESOURCE_SERVER_INTROSPECTION_URL"].removeprefix(issuer.url)
    issuer.trickled[path] = (answer, 0.05)
    request = within(1.8, validate)
    assert request.valid is False
    assert request.oauth2_error["error_description"] == UNVERIFIABLE


def test_a_nested_introspection_answer_is_a_401_at_the_decorator(introspection):
    introspection.answer(b"[" * 100_000 + b"]" * 100_000)

    @introspected_access_token_required
    def view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({})

    response = view(RequestFactory().get("/", HTTP_AUTHORIZATION="Bearer opaque-token-value"))
    assert response.status_code == 401
    assert UNVERIFIABLE in response["WWW-Authenticate"]


def test_insufficient_scope(introspection):
    introspection.answer(active())
    request = validate(scopes=["write"])
    assert request.valid is False
    assert request.oauth2_error["error"] == "insufficient_scope"


def test_token_user_has_no_groups_and_no_permissions_as_anonymous_user_has_none():
    """Code written for Django users (``user.groups.filter(...)``) answers "none", not a 500."""
    user = TokenUser("42")
    assert not user.groups.filter(name="staff").exists()
    assert list(user.user_permissions.all()) == []
    assert user.groups.model.__name__ == "Group"


def test_an_active_answer_is_cached_under_a_hash_of_the_token(introspection):
    introspection.answer(active())
    assert validate("token-a").valid
    assert validate("token-a").valid
    assert len(introspection.posts) == 1
    key = cache_key("token-a")
    assert "token-a" not in key
    assert key.endswith(hashlib.sha256(b"token-a").hexdigest())
    assert caches["default"].get(key)["act"] == ACT
    assert caches["default"].get("token-a") is None


def test_a_cached_answer_is_still_checked(introspection, settings):
    introspection.answer(active())
    assert validate().valid
    settings.TOKEN_EXCHANGE = {
        "RESOURCE_SERVER": {"ISSUER": ISSUER, "RESOURCE_URI": "https://other.example/"}
    }
    assert validate().valid is False
    assert len(introspection.posts) == 1


def test_inactive_answers_are_not_cached(introspection):
    introspection.answer({"active": False})
    validate()
    validate()
    assert len(introspection.posts) == 2


def test_the_cache_never_outlives_the_setting_or_the_token(introspection):
    cache = caches["default"]
    with mock.patch.object(cache, "set", wraps=cache.set) as spy:
        introspection.answer(active())
        validate("long-lived")
        introspection.answer(active(exp=int(time.time()) + 20))
        validate("short-lived")
    assert [call.args[2] for call in spy.call_args_list] in ([60, 20], [60, 19])


def test_cache_seconds_zero_asks_every_time(introspection, settings):
    settings.TOKEN_EXCHANGE["RESOURCE_SERVER"]["INTROSPECTION_CACHE_SECONDS"] = 0
    introspection.answer(active())
    validate()
    validate()
    assert len(introspection.posts) == 2


def test_drf_with_dot_oauth2_authentication_and_our_validator(introspection, settings):
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH2_VALIDATOR_CLASS": "token_exchange.resource_server.IntrospectionValidator",
    }
    introspection.answer(active())
    accepted = drf(rs_views.IntrospectedAggregates.as_view(), "t")
    assert (accepted.status_code, accepted.data["act"]) == (200, ACT)
    assert drf(rs_views.IntrospectedSettings.as_view(), "t").status_code == 403

    introspection.answer({"active": False})
    refused = drf(rs_views.IntrospectedAggregates.as_view(), "other")
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused["WWW-Authenticate"]


def test_introspection_mode_takes_the_token_from_the_authorization_header_only(introspection, settings):
    """RFC 6750 §2.2/§2.3 parameters, which oauthlib falls back to, are refused unasked: a
    token in a URL ends up in logs, and a form body is what a cross-site form posts."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}
    introspection.answer(active(act=_DROP))

    class Posting(rs_views.IntrospectedAggregates):
        def post(self, request: Any) -> Response:
            return Response({})

    in_query = rs_views.IntrospectedAggregates.as_view()(api.get("/?access_token=in-the-url"))
    in_body = Posting.as_view()(api.post("/", {"access_token": "in-the-body"}, format="multipart"))
    for response in (in_query, in_body):
        response.render()
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == (
            'Bearer realm="api",error="invalid_request",'
            'error_description="The access token must be sent in the Authorization header."'
        )
    assert introspection.posts == []  # refused before anyone is asked
    assert drf(rs_views.IntrospectedAggregates.as_view(), "in-the-header").status_code == 200


def test_with_oidc_enabled_jwt_shaped_tokens_are_introspected_too(introspection, settings):
    """oauthlib's OIDC ``JWTToken`` routes ``ey…`` tokens to ``validate_jwt_bearer_token``: they
    are introspected like any other, not looked up as ID tokens in this site's tables (no
    database access here: the test would fail on one)."""
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH2_VALIDATOR_CLASS": VALIDATOR,
        "OIDC_ENABLED": True,
    }
    introspection.answer(active(act=_DROP))
    accepted = drf(rs_views.IntrospectedAggregates.as_view(), sign(claims()))
    assert (accepted.status_code, accepted.data["sub"]) == (200, "42")
    assert len(introspection.posts) == 1

    introspection.answer({"active": False})
    garbage = drf(rs_views.IntrospectedAggregates.as_view(), "eyJhbGciOi.e30.x")  # was a 500
    assert garbage.status_code == 401
    assert 'error="invalid_token"' in garbage["WWW-Authenticate"]


def test_the_introspected_decorator_for_plain_views(introspection):
    @introspected_access_token_required
    @refuse_impersonated
    def view(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"sub": request.user.pk})

    introspection.answer(active(act=_DROP))
    assert json.loads(plain("mine", view).content) == {"sub": "42"}
    introspection.answer(active())
    assert plain("impersonated", view).status_code == 403


# The guard on a resource server ----------------------------------------------------------


def test_get_actor_trusts_the_verified_token_over_an_earlier_look():
    request = RequestFactory().get("/")
    request._token_exchange_actor = None  # a middleware looked before authentication
    request.auth = VerifiedAccessToken(iss=ISSUER, sub="42", client_id="p", scope="", aud=(), act=ACT)
    assert get_actor(request) == ACT


# Where no class of ours authenticated (DOT's middleware, backend and views, a guard placed
# first), the guard verifies each bearer token itself; no test here may touch the database: a
# resource server's tables are empty, and may not even exist.


@pytest.fixture
def resource_server_only(settings: Any) -> None:
    """This site serves the example resource server's URLs: no token endpoint, no token rows."""
    settings.ROOT_URLCONF = "example_resource_server.urls"


def with_dot_oauth2_backend(monkeypatch: Any, settings: Any) -> None:
    """DOT's ``OAuth2TokenMiddleware`` + ``OAuth2Backend`` on the IntrospectionValidator (the
    backend module builds its oauthlib server at import: rebuilt here for these settings)."""
    from oauth2_provider import backends
    from oauth2_provider.oauth2_backends import get_oauthlib_core

    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}
    settings.AUTHENTICATION_BACKENDS = ["oauth2_provider.backends.OAuth2Backend"]
    monkeypatch.setattr(backends, "OAuthLibCore", get_oauthlib_core())


def test_refuse_impersonated_behind_dot_oauth2_token_middleware(
    resource_server_only, introspection, settings, monkeypatch
):
    from django.contrib.auth.decorators import login_required
    from oauth2_provider.middleware import OAuth2TokenMiddleware

    with_dot_oauth2_backend(monkeypatch, settings)

    @login_required
    @refuse_impersonated
    def privileged(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"sub": request.user.pk})

    def call(token: str) -> Any:
        request = RequestFactory().get("/settings/", HTTP_AUTHORIZATION=f"Bearer {token}")
        return OAuth2TokenMiddleware(privileged)(request)

    introspection.answer(active(act=ACT))
    impersonated = call("impersonated")
    assert (impersonated.status_code, json.loads(impersonated.content)["error"]) == (403, "access_denied")
    assert len(introspection.posts) == 1  # the guard read the answer the authentication cached

    introspection.answer(active(act=_DROP))
    assert json.loads(call("their-own").content) == {"sub": "42"}


def test_refuse_impersonated_around_dot_protected_resource_view(
    resource_server_only, introspection, settings
):
    from oauth2_provider.views.generic import ProtectedResourceView

    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}

    class Privileged(ProtectedResourceView):  # type: ignore[misc]
        def get(self, request: HttpRequest) -> JsonResponse:
            return JsonResponse({"act": get_actor(request)})

    view = refuse_impersonated(Privileged.as_view())
    introspection.answer(active(act=ACT))
    assert plain_get(view, "impersonated").status_code == 403
    introspection.answer(active(act=_DROP))
    assert json.loads(plain_get(view, "their-own").content) == {"act": None}


def test_refuse_impersonated_outside_the_jwt_decorator(resource_server_only, jwks):
    @refuse_impersonated  # first: it verifies the token itself
    @jwt_access_token_required
    def privileged(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"sub": request.user.pk})

    assert plain_get(privileged, sign(claims(act=ACT))).status_code == 403
    assert json.loads(plain_get(privileged, sign(claims())).content) == {"sub": "42"}


def test_a_token_that_cannot_be_verified_now_counts_as_impersonated(
    resource_server_only, introspection, settings
):
    """Fail closed: with the authorization server unreachable, nobody can say who is acting."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}
    view = refuse_impersonated(lambda request: JsonResponse({}))
    introspection.answer({"active": False})
    assert plain_get(view, "revoked-token").status_code == 200  # invalid: authentication refuses it
    with socket_closed() as url:
        settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "RESOURCE_SERVER_INTROSPECTION_URL": url}
        assert plain_get(view, "any-token").status_code == 403


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: sign(claims(act=ACT)), 403),
        (lambda: sign(claims()), 200),
        (lambda: sign(claims(act=ACT, exp=int(time.time()) - 60)), 200),  # expired: authenticates nobody
        (lambda: "opaque-or-garbage", 200),
    ],
)
def test_the_guard_middleware_on_a_resource_server(resource_server_only, jwks, settings, make, status):
    """It verifies the tokens before any authentication, and reads no table."""
    settings.TOKEN_EXCHANGE["PRIVILEGED_URL_PREFIXES"] = ["/settings/"]
    middleware = ImpersonationGuardMiddleware(lambda request: JsonResponse({}))
    request = RequestFactory().get("/settings/", HTTP_AUTHORIZATION=f"Bearer {make()}")
    assert middleware(request).status_code == status


def test_the_guard_middleware_fails_closed_when_the_jwks_is_unreachable(resource_server_only, settings):
    with socket_closed() as url:
        settings.TOKEN_EXCHANGE = {
            "RESOURCE_SERVER": {
                "ISSUER": ISSUER,
                "RESOURCE_URI": RESOURCE,
                "JWKS_URI": url,
                "TIMEOUT_SECONDS": 1,
            },
            "PRIVILEGED_URL_PREFIXES": ["/settings/"],
        }
        middleware = ImpersonationGuardMiddleware(lambda request: JsonResponse({}))
        request = RequestFactory().get("/settings/", HTTP_AUTHORIZATION=f"Bearer {sign(claims())}")
        assert middleware(request).status_code == 403


def plain_get(view: Any, token: str) -> Any:
    return view(RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}"))


# Settings and system checks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://id.example.com/o", ""),
        ({"ALGORITHMS": ["HS256"]}, "'ALGORITHMS' must be a non-empty list of"),
        ({"ALGORITHMS": ["none"]}, "'ALGORITHMS' must be a non-empty list of"),
        ({"ALGORITHMS": []}, "'ALGORITHMS' must be a non-empty list of"),
        (
            {"LEEWAY_SECONDS": 3600},
            "'LEEWAY_SECONDS' must be an integer of seconds from 0 to 300, not int 3600",
        ),
        (
            {"INTROSPECTION_CACHE_SECONDS": 36000},
            "'INTROSPECTION_CACHE_SECONDS' must be an integer of seconds",
        ),
        ({"ISSUER": "id.example.com"}, "(not an absolute http(s) URL)"),
        (
            {"ISSUER": "https://id.example.com/o", "AUDIENCE": "x"},
            "a key this package does not read: 'AUDIENCE'",
        ),
        ({"TIMEOUT_SECONDS": 0}, "'TIMEOUT_SECONDS' must be an integer of seconds from 1 to 60"),
        # A client_id is in aud of native tokens: a bare name would accept tokens for that client.
        (
            {"RESOURCE_URI": "portal"},
            "'RESOURCE_URI' must be an absolute URI without a fragment (RFC 8707 §2) or None, not str "
            "'portal' (not an absolute URI with a host and no fragment)",
        ),
        ({"RESOURCE_URI": "https://aggregates.example.com/#x"}, "(not an absolute URI with a host"),
        ({"RESOURCE_URI": 42}, "(not a string)"),
    ],
)
def test_e008_resource_server_values(value, why):
    found = invalid("RESOURCE_SERVER", value)
    assert found is not None
    message, _hint = found
    assert message.startswith(
        "TOKEN_EXCHANGE['RESOURCE_SERVER'] must be a dict of resource server settings "
        "(docs/resource-servers.md), not "
    )
    assert why in message


def test_the_defaults_of_the_resource_server(settings):
    settings.TOKEN_EXCHANGE = {"RESOURCE_SERVER": {"ISSUER": ISSUER}}
    from token_exchange.conf import token_exchange_settings

    assert token_exchange_settings.RESOURCE_SERVER == {
        "ISSUER": ISSUER,
        "RESOURCE_URI": None,
        "JWKS_URI": None,
        "ALGORITHMS": ["RS256"],
        "LEEWAY_SECONDS": 30,
        "INTROSPECTION_CACHE_SECONDS": 60,
        "CACHE": "default",
        "TIMEOUT_SECONDS": 5,
    }


RS_OAUTH2_PROVIDER = {
    "OAUTH2_VALIDATOR_CLASS": "token_exchange.resource_server.IntrospectionValidator",
    "RESOURCE_SERVER_INTROSPECTION_URL": "https://id.example.com/o/introspect/",
    "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": ("aggregates", "secret"),
}
RS_TOKEN_EXCHANGE = {"RESOURCE_SERVER": {"ISSUER": ISSUER, "RESOURCE_URI": RESOURCE}}


def resource_server_checks() -> list[Any]:
    return rs_checks.check_resource_server() + rs_checks.check_dot_introspection_mode()


def as_resource_server(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "ROOT_URLCONF": "example_resource_server.urls",
        "OAUTH2_PROVIDER": RS_OAUTH2_PROVIDER,
        "TOKEN_EXCHANGE": RS_TOKEN_EXCHANGE,
    }
    values.update(changes)
    return override_settings(**values)


def test_a_resource_server_passes_and_is_spared_the_authorization_server_checks():
    with as_resource_server():
        assert resource_server_checks() == []
        assert rs_checks.resource_server_only()
        assert shared_checks.check_dot_settings() == []
        assert shared_checks.check_token_view() == []
        assert shared_checks.check_client_secret_hasher() == []


def test_the_example_project_is_no_resource_server():
    assert not rs_checks.resource_server_only()
    assert resource_server_checks() == []
    assert shared_checks.check_token_view() == []


def test_e015_no_issuer_or_resource_uri():
    with as_resource_server(TOKEN_EXCHANGE={"RESOURCE_SERVER": {"ISSUER": ISSUER}}):
        assert resource_server_checks() == [rs_checks.E015]
    assert (
        Error(
            "TOKEN_EXCHANGE['RESOURCE_SERVER'] lacks ISSUER or RESOURCE_URI: every access token will be "
            "refused, since no token can be checked for its issuer and its audience.",
            hint=(
                "Set TOKEN_EXCHANGE['RESOURCE_SERVER'] = {'ISSUER': <the authorization server's issuer, "
                "exactly as in its tokens>, 'RESOURCE_URI': <this service's resource indicator>}."
            ),
            id="token_exchange.E015",
        )
        == rs_checks.E015
    )


def test_e015_for_the_validator_alone():
    with as_resource_server(TOKEN_EXCHANGE={}):
        assert resource_server_checks() == [rs_checks.E015]


def test_e016_introspection_without_url_or_credentials():
    without = {**RS_OAUTH2_PROVIDER, "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": None}
    with as_resource_server(OAUTH2_PROVIDER=without):
        assert resource_server_checks() == [rs_checks.E016]
    assert rs_checks.E016.msg == (
        "OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] is the IntrospectionValidator, but "
        "RESOURCE_SERVER_INTROSPECTION_URL or its credentials are not set: every access token will be "
        "refused."
    )


def test_w012_plain_http_off_this_machine():
    with as_resource_server(
        TOKEN_EXCHANGE={"RESOURCE_SERVER": {"ISSUER": "http://id.example.com/o", "RESOURCE_URI": RESOURCE}}
    ):
        [warning] = resource_server_checks()
    assert warning == Warning(
        "TOKEN_EXCHANGE['RESOURCE_SERVER']['ISSUER'] is a plain http:// URL off this machine: whoever "
        "sits in between can hand this resource server their own keys or introspection answers, and "
        "read the introspection credentials and the tokens.",
        hint="Use https:// (http:// is only for 127.0.0.1/localhost during development).",
        id="token_exchange.W012",
    )
    loopback = {"ISSUER": "http://127.0.0.1:8000/o", "RESOURCE_URI": RESOURCE}
    with as_resource_server(TOKEN_EXCHANGE={"RESOURCE_SERVER": loopback}):
        assert resource_server_checks() == []


def test_w013_dot_introspection_mode_with_dot_validator():
    dot_mode = {
        **RS_OAUTH2_PROVIDER,
        "OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator",
    }
    with as_resource_server(OAUTH2_PROVIDER=dot_mode):
        assert resource_server_checks() == [rs_checks.W013]
    assert "without their act claim" in rs_checks.W013.msg


def test_the_example_resource_server_settings_pass_every_check(tmp_path):
    """``manage.py check --fail-level WARNING`` with the example resource server's settings, in
    its own process (its settings are a whole other site)."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_resource_server.settings",
        "RESOURCE_SERVER_DATABASE": str(tmp_path / "db.sqlite3"),
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "django", "check", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(settings.BASE_DIR),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout

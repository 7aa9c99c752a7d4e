"""The replay store down: a client-signed JWT is refused as the server's trouble, not the client's.

Every ``jti`` of a client assertion (RFC 7523 §2.2) or a self-signed subject JWT is recorded in
``TOKEN_EXCHANGE["REPLAY_CACHE"]`` (Redis in production). When that cache does not answer, or is
a ``DummyCache`` that remembers nothing, one-time use cannot be promised, so no such JWT is
accepted (fail closed). But nobody replayed anything and the client's credentials are fine:
every endpoint answers ``503 temporarily_unavailable`` with ``Retry-After`` (RFC 6749 §5.2
shape), never ``401 invalid_client``, never a 500; the audit trail says
``replay_store_unavailable``, never ``replayed_jti``; the throttle does not count it. Once the
cache answers again, the same request with a fresh JWT succeeds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt as pyjwt
import pytest
from django.core.cache.backends.base import BaseCache
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, DEVICE_CODE_GRANT_TYPE, GRANT_TYPE, JWT_TYPE
from token_exchange.models import AuditEvent

from .adversarial import audit_rows_after, last_audit_pk, token_rows
from .client_jwt import (
    KeyFile,
    assertion,
    assertion_claims,
    assertion_form,
    register_key,
    sign,
    subject_claims,
)
from .conftest import basic, form_post, make_app

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
DeviceGrant = get_device_grant_model()
EventType = AuditEvent.EventType
REFUSED = EventType.TOKEN_EXCHANGE_REFUSED

UNAVAILABLE = {
    "error": "temporarily_unavailable",
    "error_description": "The signed JWT could not be checked now. Try again later, with a newly signed JWT.",
}


class FailingCache(BaseCache):
    """A cache server that does not answer: every call raises, as a cache client's does."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("cache is down")

    add = get = set = incr = delete = touch = has_key = clear = _down


# Where the used jtis are kept, one alias per state of the store.
UP = "replay_up"
REDIS_DOWN = "replay_redis_down"
OUTAGES = {
    # The realistic one: Django's Redis backend and redis-py, at a port nobody listens on.
    "redis at a closed port": REDIS_DOWN,
    "a cache that raises": "replay_failing",
    "DummyCache": "replay_dummy",
    "a missing alias": "replay_nowhere",
}
CACHES = {
    UP: {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "replay-store-outage",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    },
    REDIS_DOWN: {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    },
    "replay_failing": {"BACKEND": f"{__name__}.FailingCache"},
    "replay_dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
}


class ReplayStore:
    """Switches ``TOKEN_EXCHANGE["REPLAY_CACHE"]`` between a cache that answers and one that does not."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        settings.CACHES = {**settings.CACHES, **CACHES}
        self.up()

    def use(self, alias: str) -> None:
        self.settings.TOKEN_EXCHANGE = {**self.settings.TOKEN_EXCHANGE, "REPLAY_CACHE": alias}

    def up(self) -> None:
        self.use(UP)

    def down(self, outage: str = "redis at a closed port") -> None:
        self.use(OUTAGES[outage])


@pytest.fixture
def store(settings: Any) -> ReplayStore:
    return ReplayStore(settings)


@pytest.fixture
def portal_key(portal: Any) -> KeyFile:
    return register_key(portal)


@pytest.fixture
def backend(db: None) -> Any:
    """A service with the client_credentials grant and a key instead of a shared secret."""
    return make_app("backend", exchange=None, authorization_grant_type="client-credentials")


@pytest.fixture
def backend_key(backend: Any) -> KeyFile:
    return register_key(backend, "ES256")


def post(path: str, form: dict[str, Any], **extra: Any) -> Any:
    return form_post(Client(), path, form, **extra)


def token(form: dict[str, Any], **extra: Any) -> Any:
    return post("/o/token/", form, **extra)


def assert_unavailable(response: Any) -> None:
    """503 temporarily_unavailable in the RFC 6749 §5.2 shape, to be retried, not cached."""
    assert response.status_code == 503, response.content
    assert response.json() == UNAVAILABLE
    assert response["Retry-After"] == "5"
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    assert "WWW-Authenticate" not in response


def reasons() -> list[str]:
    return [row.payload["reason"] for row in AuditEvent.objects.filter(event_type=REFUSED).order_by("pk")]


def client_credentials(key: KeyFile) -> dict[str, Any]:
    return {"grant_type": "client_credentials", **assertion_form(assertion(key))}


# The token endpoint: a client assertion, every grant ------------------------------------------


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_client_credentials_with_the_store_down_is_503_never_401(store, backend_key, outage):
    store.down(outage)
    before, audited = token_rows(), last_audit_pk()

    assert_unavailable(token(client_credentials(backend_key)))

    assert token_rows() == before
    # Nobody is authenticated: nothing to attribute, no audit row, and no replay anywhere.
    assert audit_rows_after(audited) == []
    store.up()
    assert token(client_credentials(backend_key)).status_code == 200


def test_the_store_answering_again_accepts_the_very_assertion_it_could_not_check(store, backend_key):
    """A jti the store could not check was not used up: nothing was accepted with it."""
    form = client_credentials(backend_key)
    store.down()
    assert_unavailable(token(form))
    store.up()
    assert token(form).status_code == 200
    # ... once: then it is a replay, as ever.
    assert token(form).status_code == 401


def authorization_code(user: Any, app: Any) -> tuple[str, str]:
    """A code for ``user`` at ``app``, and its PKCE verifier."""
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = Client()
    browser.force_login(user)
    response = browser.get(
        "/o/authorize/",
        {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": app.redirect_uris,
            "scope": "openid read",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    code = parse_qs(urlsplit(response["Location"]).query)["code"][0]
    return code, verifier


def test_authorization_code_with_the_store_down_is_503_and_the_code_is_kept(
    store, portal, portal_key, end_user
):
    code, verifier = authorization_code(end_user, portal)

    def redeem() -> Any:
        return token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": portal.redirect_uris,
                "code_verifier": verifier,
                **assertion_form(assertion(portal_key)),
            }
        )

    store.down()
    before = token_rows()
    assert_unavailable(redeem())
    assert token_rows() == before  # the code (a Grant row) is still there, nothing issued
    store.up()
    assert redeem().status_code == 200


def test_refresh_token_with_the_store_down_is_503_and_nothing_rotates(
    store, portal, portal_key, login, end_user
):
    tokens = login(end_user, scope="openid offline_access read")

    def refresh() -> Any:
        return token(
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                **assertion_form(assertion(portal_key)),
            }
        )

    store.down()
    before = token_rows()
    assert_unavailable(refresh())
    assert token_rows() == before
    assert not RefreshToken.objects.exclude(revoked=None).exists()
    store.up()
    assert refresh().status_code == 200


def test_token_exchange_with_the_store_down_is_503_unaudited(store, portal, portal_key, user_tokens):
    """The client assertion of an exchange: the client is not authenticated, so the grant audits
    nothing and counts nothing, as for any failed client authentication."""

    def exchange() -> Any:
        return token(
            {
                "grant_type": GRANT_TYPE,
                "subject_token": user_tokens["access_token"],
                "subject_token_type": ACCESS_TOKEN_TYPE,
                **assertion_form(assertion(portal_key)),
            }
        )

    store.down()
    before, audited = token_rows(), last_audit_pk()
    assert_unavailable(exchange())
    assert token_rows() == before
    assert audit_rows_after(audited) == []
    store.up()
    assert exchange().status_code == 200


@pytest.fixture
def tv(db: None) -> Any:
    """A confidential device client (RFC 8628) that authenticates with private_key_jwt."""
    return make_app("tv", exchange=None, authorization_grant_type=DEVICE_CODE_GRANT_TYPE)


def test_the_device_flow_with_the_store_down_is_503(store, tv, end_user):
    key = register_key(tv)

    def authorize_device() -> Any:
        return post("/o/device-authorization/", {"client_id": "tv", **assertion_form(assertion(key))})

    store.down()
    assert_unavailable(authorize_device())
    assert not DeviceGrant.objects.exists()
    store.up()
    authorized = authorize_device()
    assert authorized.status_code == 200, authorized.content
    device_code = authorized.json()["device_code"]
    DeviceGrant.objects.filter(device_code=device_code).update(status="authorized", user=end_user)

    store.down()
    before = token_rows()
    poll = {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": device_code, "client_id": "tv"}
    assert_unavailable(token({**poll, **assertion_form(assertion(key))}))
    assert token_rows() == before
    # Nothing was spent: with the store up again the device gets its tokens.
    store.up()
    issued = token({**poll, **assertion_form(assertion(key))})
    assert issued.status_code == 200, issued.content
    assert DeviceGrant.objects.get(device_code=device_code).status == DeviceGrant.EXPIRED


# Revocation and introspection ------------------------------------------------------------------


def test_revocation_with_the_store_down_is_503_and_the_token_lives(store, portal, portal_key, user_tokens):
    def revoke() -> Any:
        return post(
            "/o/revoke_token/",
            {"token": user_tokens["access_token"], **assertion_form(assertion(portal_key))},
        )

    store.down()
    before = token_rows()
    assert_unavailable(revoke())
    assert token_rows() == before
    store.up()
    assert revoke().status_code == 200
    assert token_rows()[AccessToken.__name__] == before[AccessToken.__name__] - 1


def test_introspection_with_the_store_down_is_503_not_a_500(store, aggregates, user_tokens):
    key = register_key(aggregates, "PS256")

    def introspect() -> Any:
        return post(
            "/o/introspect/", {"token": user_tokens["access_token"], **assertion_form(assertion(key))}
        )

    store.down()
    response = introspect()
    assert_unavailable(response)
    assert response["Pragma"] == "no-cache"
    store.up()
    response = introspect()
    assert response.status_code == 200, response.content
    assert response.json()["active"] is True


# A self-signed subject JWT ---------------------------------------------------------------------


def jwt_profile(portal: Any, key: KeyFile, subject: Any, actor_tokens: dict[str, Any]) -> Any:
    """RFC 8693 with the client's own JWT naming the subject; the client authenticates by secret."""
    return token(
        {
            "grant_type": GRANT_TYPE,
            "subject_token": sign(key, subject_claims(portal.client_id, subject)),
            "subject_token_type": JWT_TYPE,
            "actor_token": actor_tokens["access_token"],
            "actor_token_type": ACCESS_TOKEN_TYPE,
        },
        HTTP_AUTHORIZATION=basic(portal.client_id, portal.plain_secret),
    )


@pytest.mark.parametrize("outage", ["redis at a closed port", "DummyCache"])
def test_a_subject_jwt_with_the_store_down_is_503_and_audited_as_such(
    store, portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme, outage
):
    store.down(outage)
    before, audited = token_rows(), last_audit_pk()

    assert_unavailable(jwt_profile(portal, portal_key, end_user_in_acme, support_tokens))

    assert token_rows() == before
    assert audit_rows_after(audited) == [(REFUSED, "replay_store_unavailable")]
    row = AuditEvent.objects.get(pk__gt=audited)
    assert row.application == portal
    assert (row.payload["error"], row.payload["parameter"]) == ("temporarily_unavailable", "subject_token")
    store.up()
    assert jwt_profile(portal, portal_key, end_user_in_acme, support_tokens).status_code == 200
    assert "replayed_jti" not in reasons()


def test_an_outage_does_not_count_toward_the_throttle(
    store, settings, portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    """The store's trouble is not the client's misbehaviour: however long the outage, the client
    is answered 503, not 429, and is not throttled once the store is back."""
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "THROTTLE_REFUSALS": 2}
    store.down()
    for _ in range(4):
        assert_unavailable(jwt_profile(portal, portal_key, end_user_in_acme, support_tokens))
    store.up()
    assert jwt_profile(portal, portal_key, end_user_in_acme, support_tokens).status_code == 200
    assert reasons() == ["replay_store_unavailable"] * 4
    assert not AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGE_THROTTLED).exists()


# A real Redis that goes away and comes back empty ------------------------------------------------

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[None]:
    """A redis-server of this test's own, keeping nothing on disk: stopped, it forgets everything."""
    assert REDIS_SERVER is not None
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server")
def test_a_redis_that_goes_away_and_comes_back_empty(store, settings, backend_key):
    """Down: 503, never 401. Back, empty: it answers again, and a JWT used before the restart is
    accepted once more until it expires (the replay window docs/security.md describes)."""
    port = free_port()
    settings.CACHES = {
        **settings.CACHES,
        "replay_redis": {
            **CACHES[REDIS_DOWN],
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        },
    }
    store.use("replay_redis")
    used = client_credentials(backend_key)
    with redis_server(port):
        assert token(used).status_code == 200
        assert token(used).status_code == 401
    assert_unavailable(token(client_credentials(backend_key)))
    assert_unavailable(token(used))
    with redis_server(port):
        assert token(client_credentials(backend_key)).status_code == 200
        assert token(used).status_code == 200
        assert token(used).status_code == 401


# What the store's state does not change ----------------------------------------------------------


def test_strangers_cannot_tell_whether_the_store_is_up(
    store, backend, backend_key, portal, portal_key, user_tokens
):
    """Only a JWT signed with one of the client's keys and otherwise valid reaches the replay
    store (``signed_jwt.verify`` asks it last): anything else is answered as ever, store up or
    down, so nobody without the client's key can probe it."""
    forged = register_key(make_app("mallory-app"))  # a key, but not the backend's
    forgeries = {
        "signed with another key": sign(
            KeyFile("backend", backend_key.kid, forged.key, forged.algorithm, forged.public_key),
            assertion_claims("backend"),
        ),
        "expired": assertion(backend_key, iat=1_000_000_000, exp=1_000_000_300),
        "for another audience": assertion(backend_key, aud="https://elsewhere.example/"),
    }
    for outage in (None, "redis at a closed port", "DummyCache"):
        if outage is None:
            store.up()
        else:
            store.down(outage)
        for name, forgery in forgeries.items():
            response = token({"grant_type": "client_credentials", **assertion_form(forgery)})
            assert response.status_code == 401, (outage, name, response.content)
            assert response.json()["error"] == "invalid_client", (outage, name)


def test_a_subject_jwt_that_fails_before_the_store_is_refused_as_ever(
    store, portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    """A subject JWT with a bad claim never reaches the store: 400 and its own reason."""
    store.down()
    response = token(
        {
            "grant_type": GRANT_TYPE,
            "subject_token": sign(
                portal_key, subject_claims("portal", end_user_in_acme, aud="https://elsewhere/")
            ),
            "subject_token_type": JWT_TYPE,
            "actor_token": support_tokens["access_token"],
            "actor_token_type": ACCESS_TOKEN_TYPE,
        },
        HTTP_AUTHORIZATION=basic(portal.client_id, portal.plain_secret),
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert reasons() == ["wrong_audience"]


def test_a_real_replay_is_answered_as_before(
    store, backend_key, portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    form = client_credentials(backend_key)
    assert token(form).status_code == 200
    replayed = token(form)
    assert replayed.status_code == 401, replayed.content
    assert replayed.json()["error"] == "invalid_client"

    subject_jwt = sign(portal_key, subject_claims("portal", end_user_in_acme))
    exchange = {
        "grant_type": GRANT_TYPE,
        "subject_token": subject_jwt,
        "subject_token_type": JWT_TYPE,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
    }
    auth = basic(portal.client_id, portal.plain_secret)
    assert token(exchange, HTTP_AUTHORIZATION=auth).status_code == 200
    replayed = token(exchange, HTTP_AUTHORIZATION=auth)
    assert replayed.status_code == 400, replayed.content
    assert replayed.json() == {"error": "invalid_request", "error_description": "The request was refused."}
    assert reasons() == ["replayed_jti"]


def test_the_log_names_the_failure_never_the_jwt(store, backend_key, caplog):
    """The store did not answer, and of what type its error was: no traceback (whose frames an
    error tracker records with their variables), no key, jti or assertion."""
    store.down()
    jwt = assertion(backend_key)
    with caplog.at_level(logging.INFO, logger="token_exchange"):
        assert_unavailable(token({"grant_type": "client_credentials", **assertion_form(jwt)}))
    [record] = [record for record in caplog.records if record.name == "token_exchange"]
    assert record.getMessage() == (
        "The replay cache did not answer (ConnectionError): the client-signed JWT is refused."
    )
    assert record.exc_info is None
    jti = pyjwt.decode(jwt, options={"verify_signature": False})["jti"]
    for secret in (jwt, jwt.split(".")[1], jti, "token_exchange:jti:"):
        assert secret not in caplog.text


@pytest.mark.urls("tests.urls_client_protected")
def test_dot_client_protected_views_refuse_the_client_while_the_store_is_down(store):
    """DOT's client-protected views render only True or False from client authentication: with
    the store down the assertion is refused (fail closed), never a 500; once it answers, a new
    assertion is accepted."""
    app = make_app("service", exchange=None, authorization_grant_type="client-credentials")
    key = register_key(app)
    browser = Client(raise_request_exception=False)
    store.down()
    refused = form_post(browser, "/client-only/", assertion_form(assertion(key)))
    assert refused.status_code == 403
    store.up()
    accepted = form_post(browser, "/client-only/", assertion_form(assertion(key)))
    assert (accepted.status_code, accepted.json()) == (200, {"ok": True})

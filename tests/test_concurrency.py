"""Races, on a real PostgreSQL: many clients at once against the live server.

Every scenario releases its requests together (a barrier), each over its own HTTP connection,
served by the live server's threads on their own database connections. What must hold:
one-time JWTs are used once, rotation and audit stay consistent, no race surfaces as a 500,
and a switch turned off stops every request that starts afterwards.

SQLite serializes writers and the test database is one shared in-memory connection, so these
run on PostgreSQL only (``make test`` runs the suite on both).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.db import connections, router
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.models import (
    AuditEvent,
    ClientPolicy,
    ExchangedToken,
    ImpersonationSession,
    SecuritySettings,
)

from . import proof
from .client_jwt import KeyFile, assertion, assertion_form, register_key, sign, subject_claims
from .conftest import make_app
from .db_faults import slow_insert

# Where the audit and token tables are: "default", or the database a router sends them to.
connection = connections[router.db_for_write(AuditEvent)]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.concurrency,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="concurrency needs PostgreSQL's row locks and connections"
    ),
]

EventType = AuditEvent.EventType
PARALLEL = 20


def in_parallel(send: Callable[[requests.Session, int], requests.Response], n: int = PARALLEL) -> list[Any]:
    """Send ``n`` requests at once; return (status, body) of each, in order."""
    barrier = threading.Barrier(n)

    def one(index: int) -> tuple[int, dict[str, Any]]:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            response = send(session, index)
            return response.status_code, response.json()

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    proof.count("parallel requests", n)
    return results


Sent = list[tuple[float, int, dict[str, Any]]]


def while_clients_send(
    form_for: Callable[[int], dict[str, Any]],
    auth: tuple[str, str],
    token_url: str,
    *,
    workers: int,
    event: Callable[[], None],
    on_answer: Callable[[int, int, dict[str, Any]], None] = lambda _i, _s, _b: None,
) -> tuple[Sent, float]:
    """``workers`` clients post ``form_for(index)`` in a loop; after 3 successes per client
    ``event()`` runs, and once 3 requests per client have started after it returned, they stop.
    Returns every (start time, status, body), and when ``event()`` returned."""
    sent: Sent = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                response = session.post(token_url, data=form_for(index), auth=auth, timeout=60)
                body = response.json()
                with lock:
                    sent.append((started, response.status_code, body))
                    on_answer(index, response.status_code, body)

    def wait_for(enough: Callable[[Sent], bool]) -> None:
        while not enough(list(sent)):
            time.sleep(0.01)

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(client, index) for index in range(workers)]
        wait_for(lambda done: sum(status == 200 for _t, status, _b in done) >= 3 * workers)
        event()
        happened_at = time.monotonic()
        wait_for(lambda done: sum(started > happened_at for started, _s, _b in done) >= 3 * workers)
        stop.set()
        for future in futures:
            future.result()
    proof.count("parallel requests", len(sent))
    assert all(status < 500 for _t, status, _b in sent)
    return sent, happened_at


def statuses(results: list[tuple[int, dict[str, Any]]]) -> Counter[tuple[int, str | None]]:
    return Counter((status, body.get("error")) for status, body in results)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("pk"))


@pytest.fixture
def token_url(live_server: Any) -> str:
    return f"{live_server.url}/o/token/"


@pytest.fixture
def portal_key(portal: Any) -> KeyFile:
    return register_key(portal)


@pytest.fixture
def customer_signed_in_to_backend(support: Any, end_user_in_acme: Any, impersonation_allowed: Any) -> Any:
    """Support started impersonating the customer from the admin into a confidential backend,
    which signed in (code flow) and holds the customer's tokens, carrying act."""
    from .test_admin_impersonation import SPA_URL, SinglePageApp, staff, start

    backend = make_app("backend", redirect_uris=SPA_URL)
    ClientPolicy.objects.filter(application=backend).update(
        admin_impersonation_enabled=True,
        launch_url=SPA_URL,
        # The backend refreshes while support acts: its policy lets it hold a refresh token.
        admin_impersonation_scope="openid profile email offline_access",
    )
    browser = Client()
    browser.force_login(staff(support))
    start(browser, end_user_in_acme, backend)
    spa = SinglePageApp(browser, backend)
    tokens = spa.redeem(spa.authorize()["Location"], client_secret=backend.plain_secret).json()
    return (
        backend,
        tokens,
        ImpersonationSession.objects.select_related("actor", "subject", "application").get(),
    )


REPLAY_TABLE = "token_exchange_replay"


@pytest.fixture(params=["local memory", "database cache"])
def replay_cache(request: Any, settings: Any) -> Iterator[None]:
    """Where used jtis are kept: this process's memory (the example's setting), or the database
    cache the deployment advice names, shared by every process, whose primary key makes
    ``add`` atomic. Each test then checks the jti was kept there."""
    if request.param == "local memory":
        yield
        return
    settings.CACHES = {
        **settings.CACHES,
        "replay_db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": REPLAY_TABLE},
    }
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "REPLAY_CACHE": "replay_db"}
    call_command("createcachetable", database=connection.alias)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {REPLAY_TABLE}")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {REPLAY_TABLE}")
        assert cursor.fetchone() == (1,)  # the one jti, kept in the shared table


def exchange_form(**params: Any) -> dict[str, Any]:
    return {"grant_type": GRANT_TYPE, **params}


def test_one_subject_jwt_sent_twenty_times_at_once_is_used_once(
    token_url, replay_cache, portal, portal_key, impersonation_allowed, support_tokens, end_user_in_acme
):
    form = exchange_form(
        subject_token=sign(portal_key, subject_claims("portal", end_user_in_acme)),
        subject_token_type=JWT_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
    )
    auth = ("portal", portal.plain_secret)

    results = in_parallel(lambda session, _i: session.post(token_url, data=form, auth=auth, timeout=60))

    assert statuses(results) == {(200, None): 1, (400, "invalid_request"): PARALLEL - 1}
    [impersonated] = events(EventType.USER_IMPERSONATED)
    assert len(events(EventType.TOKEN_EXCHANGED)) == 1
    assert [row.payload["reason"] for row in events(EventType.TOKEN_EXCHANGE_REFUSED)] == ["replayed_jti"] * (
        PARALLEL - 1
    )
    assert ExchangedToken.objects.count() == len(impersonated.payload["tokens"])


def test_one_client_assertion_sent_twenty_times_at_once_authenticates_once(
    token_url, replay_cache, portal, portal_key, user_tokens
):
    form = exchange_form(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        **assertion_form(assertion(portal_key)),
    )

    results = in_parallel(lambda session, _i: session.post(token_url, data=form, timeout=60))

    assert statuses(results) == {(200, None): 1, (401, "invalid_client"): PARALLEL - 1}
    assert len(events(EventType.TOKEN_EXCHANGED)) == 1
    # An unauthenticated request is attributed to nobody and leaves no audit row.
    assert not events(EventType.TOKEN_EXCHANGE_REFUSED)


def rotation_is_consistent(
    results: list[tuple[int, dict[str, Any]]], old_refresh_token: str
) -> dict[str, Any]:
    """A refresh token sent many times at once is rotated once. DOT lets the requests that
    raced past its check wait on the row lock and answers them with the same new pair (#1687);
    later ones get invalid_grant. Returns the one new token response."""
    answered = [body for status, body in results if status == 200]
    assert answered
    assert {(body["access_token"], body["refresh_token"]) for body in answered} == {
        (answered[0]["access_token"], answered[0]["refresh_token"])
    }
    assert {(status, body.get("error")) for status, body in results if status != 200} <= {
        (400, "invalid_grant")
    }
    RefreshToken = get_refresh_token_model()
    old = RefreshToken.objects.get(token_checksum=sha256(old_refresh_token))
    assert old.revoked is not None
    [new] = RefreshToken.objects.filter(token_family=old.token_family, revoked__isnull=True)
    assert new.token == answered[0]["refresh_token"]
    return answered[0]


def test_parallel_exchanges_and_refreshes_of_the_same_tokens(token_url, portal, user_tokens):
    """Half the requests exchange the login's access token, half refresh the login. Each
    exchange either succeeds with its audit row or, once the rotation revoked the access token,
    is refused; the refresh token rotates once; nothing surfaces as a 500."""
    auth = ("portal", portal.plain_secret)
    exchange = exchange_form(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="openid offline_access read",
    )
    refresh = {"grant_type": "refresh_token", "refresh_token": user_tokens["refresh_token"]}

    def send(session: requests.Session, index: int) -> requests.Response:
        return session.post(token_url, data=exchange if index % 2 else refresh, auth=auth, timeout=60)

    results = in_parallel(send)

    exchanges, refreshes = results[1::2], results[::2]
    assert set(statuses(exchanges)) <= {(200, None), (400, "invalid_request")}
    issued = [body for status, body in exchanges if status == 200]
    # Audit rows equal tokens issued: one token.exchanged row per exchange, naming its tokens.
    audited = events(EventType.TOKEN_EXCHANGED)
    assert len(audited) == len(issued)
    audited_jtis = [token["jti"] for row in audited for token in row.payload["tokens"]]
    assert sorted(audited_jtis) == sorted(ExchangedToken.objects.values_list("jti", flat=True))
    assert len(audited_jtis) == 3 * len(issued)
    refused = [row.payload["reason"] for row in events(EventType.TOKEN_EXCHANGE_REFUSED)]
    assert refused == ["unknown_token"] * (len(exchanges) - len(issued))

    rotated = rotation_is_consistent(refreshes, user_tokens["refresh_token"])
    assert requests.post(token_url, data=refresh, auth=auth, timeout=60).json()["error"] == "invalid_grant"
    again = {"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]}
    assert requests.post(token_url, data=again, auth=auth, timeout=60).status_code == 200


def test_parallel_refreshes_of_an_impersonated_token(
    token_url, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    """Our refresh path (act kept, user.impersonated audited) under DOT's rotation lock: one
    rotation, and an audit row for every answer, naming the tokens that answer carries."""
    auth = ("portal", portal.plain_secret)
    issued = requests.post(
        token_url,
        data=exchange_form(
            subject_token=str(end_user_in_acme.pk),
            subject_token_type=USER_ID_TYPE,
            actor_token=support_tokens["access_token"],
            actor_token_type=ACCESS_TOKEN_TYPE,
            scope="openid offline_access read",
        ),
        auth=auth,
        timeout=60,
    ).json()
    refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}

    results = in_parallel(lambda session, _i: session.post(token_url, data=refresh, auth=auth, timeout=60))

    rotated = rotation_is_consistent(results, issued["refresh_token"])
    answers = [body for status, body in results if status == 200]
    audited = events(EventType.USER_IMPERSONATED)
    assert len(audited) == 1 + len(answers)  # the exchange, then one row per refresh answer
    access_jti = ExchangedToken.objects.get(access_token__token_checksum=sha256(rotated["access_token"])).jti
    for row in audited[1:]:
        assert access_jti in {token["jti"] for token in row.payload["tokens"]}
        assert row.payload["act"] == {"iss": "http://127.0.0.1:8000/o", "sub": str(support.pk)}
    live = get_access_token_model().objects.filter(user=end_user_in_acme)
    assert [token.token for token in live] == [rotated["access_token"]]
    assert all(token.exchanged.act for token in live)


def test_turning_impersonation_off_stops_every_request_that_starts_afterwards(
    token_url, portal, impersonation_allowed, support_tokens, end_user_in_acme
):
    """Clients impersonate in a loop while an admin turns Allow Impersonation off."""
    form = exchange_form(
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
    )

    def switch_off() -> None:
        settings_row = SecuritySettings.load()
        settings_row.allow_impersonation = False
        settings_row.save()

    sent, switched_off_at = while_clients_send(
        lambda _index: form, ("portal", portal.plain_secret), token_url, workers=8, event=switch_off
    )

    before = [(status, body.get("error")) for started, status, body in sent if started < switched_off_at]
    after = [(status, body.get("error")) for started, status, body in sent if started > switched_off_at]
    assert (200, None) in before
    assert set(after) == {(400, "invalid_request")}, Counter(after)
    reasons = Counter(row.payload["reason"] for row in events(EventType.TOKEN_EXCHANGE_REFUSED))
    assert reasons["impersonation_disabled"] >= len(after)
    assert set(reasons) == {"impersonation_disabled"}
    # Every token that was issued is audited as an impersonation, and nothing else is.
    successes = sum(status == 200 for _t, status, _b in sent)
    audited = events(EventType.USER_IMPERSONATED)
    assert len(audited) == successes
    assert ExchangedToken.objects.count() == sum(len(row.payload["tokens"]) for row in audited)


def test_a_stop_while_tokens_of_the_impersonation_are_exchanged_and_refreshed(
    token_url, support, customer_signed_in_to_backend
):
    """Support presses Stop while a backend keeps exchanging and refreshing the tokens it got
    under the impersonation. Once Stop has returned, nothing of the session is left, and no
    request that starts afterwards gets a token."""
    backend, tokens, session = customer_signed_in_to_backend
    auth = ("backend", backend.plain_secret)
    # The refreshing client rotates the sign-in's access token away; the others exchange a
    # token derived from it, which lives on under the session until Stop.
    derived = requests.post(
        token_url,
        data=exchange_form(subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE),
        auth=auth,
        timeout=60,
    ).json()["access_token"]
    exchange = exchange_form(subject_token=derived, subject_token_type=ACCESS_TOKEN_TYPE)
    latest_refresh = [tokens["refresh_token"]]

    def form_for(index: int) -> dict[str, Any]:
        if index == 0:  # one client refreshes, always with the newest refresh token
            return {"grant_type": "refresh_token", "refresh_token": latest_refresh[0]}
        return exchange

    def keep_the_newest(index: int, status: int, body: dict[str, Any]) -> None:
        if index == 0 and status == 200:
            latest_refresh[0] = body["refresh_token"]

    # Each token record takes 20 ms to write: Stop lands while issuances are between their
    # checks and their commit, which is where a missing lock would let a token survive it.
    with slow_insert(ExchangedToken, 0.02):
        sent, stopped_at = while_clients_send(
            form_for,
            auth,
            token_url,
            workers=6,
            event=lambda: impersonation_sessions.end(session, reason=ImpersonationSession.EndReason.STOPPED),
            on_answer=keep_the_newest,
        )

    after = {(status, body.get("error")) for started, status, body in sent if started > stopped_at}
    assert after <= {(400, "invalid_request"), (400, "invalid_grant")}, after
    under = {"exchanged__impersonation": session}
    assert not get_access_token_model().objects.filter(**under).exists()
    assert not get_refresh_token_model().objects.filter(revoked__isnull=True, **under).exists()
    assert not get_id_token_model().objects.filter(**under).exists()
    # Everything issued under the session is audited as an impersonation by support.
    issued = events(EventType.USER_IMPERSONATED)
    assert {row.payload["act"]["sub"] for row in issued} == {str(support.pk)}
    assert ExchangedToken.objects.filter(impersonation=session).count() >= len(issued)

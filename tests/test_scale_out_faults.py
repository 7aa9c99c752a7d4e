"""Faults in a deployment's parts, while the example serves: Redis stopped, frozen and restarted;
a PostgreSQL connection killed in the middle of a token request; a worker killed there.

What must hold: a request that depends on the lost part fails closed with a clean JSON error
(never a token, never an HTML 500 page), nothing is half-written, and the server recovers by
itself once the part is back. Servers as in ``test_scale_out.py`` (gunicorn, production settings);
the Redis of the first tests is the test's own (``RedisServer``), on a port of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TYPE
from token_exchange.models import AuditEvent, ExchangedToken

from . import proof
from .client_jwt import assertion, assertion_form, register_key, sign, subject_claims
from .scale_out import REDIS_URL, RedisServer, Server, database_url, json_of, redis_client, servers
from .test_scale_out import _skip_reason

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()
EventType = AuditEvent.EventType

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.scale_out]


def exchange_form(**params: Any) -> dict[str, Any]:
    return {"grant_type": GRANT_TYPE, **params}


def post(
    server: Server, form: dict[str, Any], auth: Any = None, path: str = "/o/token/"
) -> requests.Response:
    return requests.post(f"{server.url}{path}", data=form, auth=auth, timeout=60)


def rows() -> dict[str, int]:
    """Everything a token request writes."""
    return {
        "access tokens": AccessToken.objects.count(),
        "refresh tokens": RefreshToken.objects.count(),
        "id tokens": IDToken.objects.count(),
        "exchanged tokens": ExchangedToken.objects.count(),
        "token audit rows": AuditEvent.objects.filter(
            event_type__in=[EventType.TOKEN_EXCHANGED, EventType.USER_IMPERSONATED]
        ).count(),
    }


def refusal_reasons() -> list[str]:
    return [
        row.payload["reason"]
        for row in AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGE_REFUSED).order_by("pk")
    ]


def fails_closed(answer: requests.Response) -> None:
    """503 temporarily_unavailable in JSON, to retry later; nothing in it but the error."""
    body = json_of(answer)
    assert (answer.status_code, body["error"]) == (503, "temporarily_unavailable"), answer.text
    assert "access_token" not in body
    assert int(answer.headers["Retry-After"]) >= 1


@pytest.fixture
def prerequisites(transactional_db: None) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def own_redis(prerequisites: None, tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def on_own_redis(own_redis: RedisServer, tmp_path: Path) -> Iterator[list[Server]]:
    with servers(
        2, database=database_url(AuditEvent), redis_url=own_redis.url, directory=tmp_path
    ) as started:
        yield started
        errors = {server.name: server.server_errors() for server in started}
    assert not any(errors.values()), errors


def timed(send: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = send()
    return answer, time.monotonic() - started


def test_redis_lost_fails_jwt_authenticated_requests_closed_and_they_recover_when_it_returns(
    own_redis, on_own_redis, portal, user_tokens, impersonation_allowed, support_tokens, end_user_in_acme
):
    first, second = on_own_redis
    key = register_key(portal)
    secret = (portal.client_id, portal.plain_secret)
    plain = exchange_form(subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE)

    def by_assertion() -> dict[str, Any]:
        return {**plain, **assertion_form(assertion(key))}

    def by_subject_jwt() -> dict[str, Any]:
        return exchange_form(
            subject_token=sign(key, subject_claims(portal.client_id, end_user_in_acme)),
            subject_token_type=JWT_TYPE,
            actor_token=support_tokens["access_token"],
            actor_token_type=ACCESS_TOKEN_TYPE,
        )

    assert post(first, by_assertion()).status_code == 200
    assert post(second, by_subject_jwt(), secret).status_code == 200

    # Stopped: connections are refused.
    own_redis.stop()
    before = rows()
    answer, seconds = timed(lambda: post(first, by_assertion()))
    fails_closed(answer)
    assert seconds < 3
    answer, seconds = timed(lambda: post(second, by_subject_jwt(), secret))
    fails_closed(answer)
    assert seconds < 3
    assert rows() == before
    assert refusal_reasons() == ["replay_store_unavailable"]
    # What needs no one-time JWT goes on: a secret-authenticated exchange (the throttle, in the
    # same Redis, fails open and says so in the log).
    assert post(second, plain, secret).status_code == 200

    own_redis.start()
    assert post(first, by_assertion()).status_code == 200
    assert post(second, by_subject_jwt(), secret).status_code == 200

    # Frozen: connections are accepted, nothing answers. The socket timeout (1 s) ends the wait.
    own_redis.freeze()
    unanswered = by_assertion()
    try:
        answer, seconds = timed(lambda: post(first, unanswered))
        fails_closed(answer)
        assert seconds < 4
    finally:
        own_redis.thaw()
    # Redis ran the write it was sent once it thawed: that JWT is used up, which is why the 503
    # asks for a newly signed one (docs/deployment.md). A new one is accepted.
    retried = post(first, unanswered)
    assert (retried.status_code, json_of(retried)["error"]) == (401, "invalid_client")
    assert post(first, by_assertion()).status_code == 200
    assert post(second, by_assertion()).status_code == 200
    proof.count("faults: Redis stopped, frozen and restarted", 3)


@pytest.mark.parametrize("persistent", [False, True], ids=["restarted empty", "append-only file"])
def test_what_a_redis_restart_forgets_is_the_replay_window(
    persistent, prerequisites, tmp_path, portal, user_tokens
):
    """A client assertion used before Redis restarts: an empty Redis accepts it once more until
    it expires (docs/deployment.md: the replay window); one that writes every key to its
    append-only file before answering still refuses it."""
    redis = RedisServer(tmp_path, persistent=persistent)
    redis.start()
    try:
        with servers(1, database=database_url(AuditEvent), redis_url=redis.url, directory=tmp_path) as [
            server
        ]:
            key = register_key(portal)
            form = exchange_form(
                subject_token=user_tokens["access_token"],
                subject_token_type=ACCESS_TOKEN_TYPE,
                **assertion_form(assertion(key)),
            )
            assert post(server, form).status_code == 200
            assert (post(server, form).status_code, post(server, form).json()["error"]) == (
                401,
                "invalid_client",
            )
            redis.stop()
            redis.start()
            # What the restarted Redis remembers: the jti, from its append-only file, or nothing.
            kept = len(redis_client(redis.url).keys("replay:*"))
            replayed = post(server, form)
    finally:
        redis.stop()
    if persistent:
        assert kept == 1
        assert (replayed.status_code, json_of(replayed)["error"]) == (401, "invalid_client")
    else:
        assert kept == 0
        assert replayed.status_code == 200


# -- PostgreSQL and the workers ------------------------------------------------------------------


@pytest.fixture
def one_server(prerequisites: None, tmp_path: Path) -> Iterator[Server]:
    redis_client(REDIS_URL).flushdb()
    with servers(1, database=database_url(AuditEvent), redis_url=REDIS_URL, directory=tmp_path) as [server]:
        yield server


class HeldAuditTable:
    """Holds a token request at the moment its audit rows are being written, inside its
    transaction, with its token rows written: a ``BEFORE INSERT`` trigger on the audit table
    takes a shared advisory lock that this test holds exclusively. (On PostgreSQL an exchange
    writes its token rows, their records and the audit rows in one statement, the audit rows
    last: the trigger catches it between the two, where a table lock would stop the whole
    statement before it wrote anything.)"""

    KEY = 8693_0021

    def __init__(self) -> None:
        table = AuditEvent._meta.db_table
        self.connection = psycopg.connect(database_url(AuditEvent), autocommit=True)
        self.connection.execute("SELECT pg_advisory_lock(%s)", [self.KEY])
        self.connection.execute(
            "CREATE OR REPLACE FUNCTION scale_out_hold_audit() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({self.KEY}); RETURN NEW; END $$"
        )
        self.connection.execute(
            f'CREATE TRIGGER scale_out_hold_audit BEFORE INSERT ON "{table}" '
            "FOR EACH ROW EXECUTE FUNCTION scale_out_hold_audit()"
        )

    def waiting_backend(self, timeout: float = 30) -> int:
        """The server's database connection, once it waits in the trigger: in the middle of the
        token request's transaction (begun before this statement), having written its tokens
        (it holds a transaction id). (Watched from a connection of its own: within a
        transaction, PostgreSQL shows the same snapshot of pg_stat_activity to every read.)"""
        deadline = time.monotonic() + timeout
        with psycopg.connect(database_url(AuditEvent), autocommit=True) as watcher:
            while time.monotonic() < deadline:
                row = watcher.execute(
                    "SELECT pid, backend_xid IS NOT NULL, xact_start < query_start, query "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                ).fetchone()
                if row:
                    pid, has_written, in_transaction, query = row
                    assert has_written, query[:80]
                    assert in_transaction, query[:80]
                    return int(pid)
                time.sleep(0.02)
        raise AssertionError("no request waited at the audit rows")

    def backend_gone(self, pid: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(database_url(AuditEvent), autocommit=True) as probe:
                if not probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                    return
            time.sleep(0.05)
        raise AssertionError(f"backend {pid} still there")

    def release(self) -> None:
        if self.connection.closed:
            return
        table = AuditEvent._meta.db_table
        self.connection.execute("SELECT pg_advisory_unlock(%s)", [self.KEY])
        self.connection.execute(f'DROP TRIGGER IF EXISTS scale_out_hold_audit ON "{table}"')
        self.connection.execute("DROP FUNCTION IF EXISTS scale_out_hold_audit()")
        self.connection.close()


def in_background(send: Callable[[], requests.Response]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(send())
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_database_connection_killed_mid_request_issues_nothing_and_the_next_request_reconnects(
    one_server, portal, user_tokens
):
    secret = (portal.client_id, portal.plain_secret)
    form = exchange_form(subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE)
    assert post(one_server, form, secret).status_code == 200  # the worker's persistent connection
    before = rows()

    held = HeldAuditTable()
    try:
        thread, outcome = in_background(lambda: post(one_server, form, secret))
        backend = held.waiting_backend()
        held.connection.execute("SELECT pg_terminate_backend(%s)", [backend])
        held.backend_gone(backend)
    finally:
        held.release()
    thread.join(timeout=60)

    [answer] = outcome
    assert isinstance(answer, requests.Response), (answer, one_server.output())
    fails_closed(answer)
    assert rows() == before
    assert not one_server.server_errors(), one_server.output()
    # The worker's next request opens a new connection (CONN_HEALTH_CHECKS) and is served.
    assert post(one_server, form, secret).status_code == 200
    assert rows()["token audit rows"] == before["token audit rows"] + 1
    proof.count("faults: database connections killed mid-request")


def test_a_worker_killed_mid_request_leaves_no_half_written_rows(one_server, portal, user_tokens):
    secret = (portal.client_id, portal.plain_secret)
    form = exchange_form(subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE)
    assert post(one_server, form, secret).status_code == 200
    before = rows()

    held = HeldAuditTable()
    try:
        thread, outcome = in_background(lambda: post(one_server, form, secret))
        backend = held.waiting_backend()
        killed = one_server.kill_worker()
    finally:
        held.release()
    thread.join(timeout=60)
    held.backend_gone(backend)

    [failure] = outcome
    assert isinstance(failure, requests.ConnectionError)  # the client saw the connection end
    assert rows() == before  # PostgreSQL rolled the dead worker's transaction back
    one_server.wait_until_serving()
    assert killed not in one_server.worker_pids()
    assert post(one_server, form, secret).status_code == 200
    proof.count("faults: workers killed mid-request")

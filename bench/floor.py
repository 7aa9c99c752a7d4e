"""Each request's own physical floor: its SQL statements replayed over one connection, and its
RSA signatures.

**Capture.** One request of a case runs through the WSGI handler inside Django's
``CaptureQueriesContext`` and an ``execute_wrapper``. The wrapper records every statement the
ORM sends (its SQL with placeholders, its parameters, ``executemany`` or not) and its place in
the query log; the log's other entries are the transaction's own, which no execute wrapper sees:
``BEGIN`` (Django 5.2 logs it when an atomic block turns autocommit off; psycopg sends it to
PostgreSQL just before the block's first statement, one round trip of its own), ``COMMIT`` and
``ROLLBACK`` (the driver's). On SQLite Django sends ``BEGIN`` through the cursor, and it is
recorded as ``BEGIN`` all the same. Savepoints are SQL sent through the cursor. The connection
health check (``CONN_HEALTH_CHECKS``: a ``SELECT 1`` before the first query of a request that
reuses its connection, PostgreSQL only) goes to the driver directly and is in neither record;
``is_usable`` is wrapped during the capture to see it. It is replayed with the rest, and counted
apart: it comes from the deployment's settings, not from the code.

**Statements** (what the targets count): every statement of the request with ``BEGIN`` and
``COMMIT`` (and ``ROLLBACK``), the health check left out; each is a round trip to the database.
On Django 5.2 this equals the length of Django's own query log for the request.

**Replay.** The same statements, in order, with the same parameters, on the request's own
DB-API connection through a driver cursor (``connection.create_cursor()``: no ORM, no Django
cursor wrapper, the driver's adapters as the request had them), results fetched, the
transaction really committed: a ``COMMIT`` that writes costs a WAL flush, which a rolled-back
replay would leave out. So that the same ``INSERT`` statements can run again, the rows a request inserts
are deleted after the capture and after every replay (untimed, :class:`Rows`), and the tables' id
sequences set back, so every replay's rows get the ids the captured statements refer to.

**Signatures.** The JWTs in the response (an RFC 9068 access token, an ID token) are each signed
once more with PyJWT (``jwt.encode``, RS256, the example's ``OIDC_RSA_PRIVATE_KEY`` loaded once)
over the same claims, and a JWT the request carries (a client assertion, a JWT subject or actor
token) is verified once (``jwt.decode`` with a public key of the same size).

``floor = median(replay) + median(signatures and verifications)``.
"""

from __future__ import annotations

import gc
import json
import random
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from django.apps import apps
from django.core.management.color import no_style
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from .cases import TOKEN_PATH, Case
from .measure import Driver

TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK")
HEALTH_CHECK = "SELECT 1"
# Anywhere in a statement: PostgreSQL writes an exchange's records and audit rows in one
# statement, a data-modifying WITH per table (``WITH g0 AS (INSERT INTO … RETURNING …), …``).
_INSERT = re.compile(r'\bINSERT\s+INTO\s+"?(\w+)"?', re.IGNORECASE)
_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
JWT_REQUEST_FIELDS = ("client_assertion", "subject_token", "actor_token")


@dataclass(frozen=True)
class Statement:
    kind: str  # "sql", "BEGIN", "COMMIT", "ROLLBACK" or "health"
    sql: str = ""
    params: Any = None
    many: bool = False


@dataclass
class Capture:
    statements: list[Statement]
    response: dict[str, Any]
    request_form: dict[str, list[str]]
    inserted_tables: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for statement in self.statements if statement.kind == kind)

    @property
    def round_trips(self) -> int:
        """What the targets count: every statement but the health check."""
        return sum(1 for statement in self.statements if statement.kind != "health")


@contextmanager
def _health_checks(seen: list[int]) -> Iterator[None]:
    """Note each connection health check (a ``SELECT 1`` the driver sends, logged nowhere)."""
    original = connection.is_usable

    def is_usable() -> bool:
        if connection.vendor != "sqlite":  # SQLite's answers without asking the database
            seen.append(len(connection.queries_log))
        return bool(original())

    connection.is_usable = is_usable  # type: ignore[method-assign]
    try:
        yield
    finally:
        del connection.is_usable


def capture(driver: Driver, case: Case) -> Capture:
    """One request of ``case``, every statement it sends recorded in order."""
    executed: list[tuple[int, Statement]] = []
    health: list[int] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # SQLite's BEGIN is a statement Django sends through the cursor; PostgreSQL's is not.
        kind = sql.strip().upper() if sql.strip().upper() in TRANSACTION else "sql"
        executed.append((len(connection.queries_log), Statement(kind, sql, params, many)))
        return execute(sql, params, many, context)

    request = case.make()
    with (
        CaptureQueriesContext(connection) as log,
        connection.execute_wrapper(wrapper),
        _health_checks(health),
    ):
        status, body = driver.post(TOKEN_PATH, request)
    payload = json.loads(body)
    if status != 200:
        raise AssertionError(f"{case.name}: HTTP {status} {payload.get('error')}")
    case.check(payload)

    by_position = dict(executed)
    statements: list[Statement] = []
    for position in range(log.initial_queries, log.final_queries or 0):
        statements.extend(Statement("health") for seen in health if seen == position)
        if position in by_position:
            statements.append(by_position.pop(position))
            continue
        sql = connection.queries_log[position]["sql"]
        if sql not in TRANSACTION:
            raise AssertionError(f"{case.name}: a logged statement no wrapper saw: {sql[:80]}")
        statements.append(Statement(sql))
    if by_position:
        raise AssertionError(f"{case.name}: {len(by_position)} statements missing from the query log")
    tables = []
    for statement in statements:
        for table in _INSERT.findall(statement.sql):
            if table not in tables:
                tables.append(table)
    form = parse_qs(request.body.decode())
    return Capture(statements, payload, form, tables)


def _models_by_table() -> dict[str, Any]:
    return {model._meta.db_table: model for model in apps.get_models(include_auto_created=True)}


class Rows:
    """The rows the requests insert, deleted again: every table's id sequence set back with them.

    The watermark (each table's highest id) is taken once every case has run, before the
    captures that are replayed. Each of those runs just after ``forget()``, so its rows get the
    ids just above the watermark; forgetting them after the capture and after every replay
    lets each replay insert the same rows with the same ids, which later statements refer to.
    """

    def __init__(self, tables: list[str]) -> None:
        models = _models_by_table()
        unknown = [table for table in tables if table not in models]
        if unknown:
            raise AssertionError(f"inserts into tables of no model: {unknown}")
        self.models = [models[table] for table in tables]
        self.watermarks = {model: self._max_id(model) for model in self.models}

    def _max_id(self, model: Any) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT MAX({connection.ops.quote_name(model._meta.pk.column)}) "
                f"FROM {connection.ops.quote_name(model._meta.db_table)}"
            )
            return int(cursor.fetchone()[0] or 0)

    def forget(self) -> None:
        """Delete every row above the watermark; the sequences go back to it."""
        quote = connection.ops.quote_name
        # One transaction: the foreign keys are deferred, checked once every row is gone.
        with transaction.atomic(), connection.cursor() as cursor:
            for model in self.models:
                cursor.execute(
                    f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote(model._meta.pk.column)} > %s",
                    [self.watermarks[model]],
                )
            if connection.vendor == "sqlite":
                for model in self.models:
                    cursor.execute(
                        "UPDATE sqlite_sequence SET seq = %s WHERE name = %s",
                        [self.watermarks[model], model._meta.db_table],
                    )
            else:
                for sql in connection.ops.sequence_reset_sql(no_style(), self.models):
                    cursor.execute(sql)


class Replayer:
    """Replays one capture over the request's own connection, through a driver cursor."""

    def __init__(self, captured: Capture) -> None:
        self.captured = captured

    def replay(self) -> float:
        """The captured statements once, in seconds."""
        cursor = connection.create_cursor()
        try:
            started = time.perf_counter()
            for statement in self.captured.statements:
                if statement.kind == "sql":
                    if statement.many:
                        cursor.executemany(statement.sql, statement.params)
                    else:
                        cursor.execute(statement.sql, statement.params)
                    if cursor.description is not None:
                        cursor.fetchall()
                elif statement.kind == "health":
                    cursor.execute(HEALTH_CHECK)
                    cursor.fetchall()
                else:
                    cursor.execute(statement.kind)
            elapsed = time.perf_counter() - started
        finally:
            cursor.close()
        return elapsed


def _signing_key() -> Any:
    from cryptography.hazmat.primitives import serialization
    from django.conf import settings

    pem = str(settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"]).encode()
    return serialization.load_pem_private_key(pem, password=None)


def jwts_signed(captured: Capture) -> list[dict[str, Any]]:
    """The claims of every JWT in the response: what the request signed."""
    import jwt

    return [
        jwt.decode(value, options={"verify_signature": False})
        for value in captured.response.values()
        if isinstance(value, str) and _JWS.match(value)
    ]


def jwts_verified(captured: Capture) -> int:
    """JWTs the request carries (client assertion, JWT subject or actor token): one check each."""
    return sum(
        1 for name in JWT_REQUEST_FIELDS for value in captured.request_form.get(name, []) if _JWS.match(value)
    )


class Signer:
    def __init__(self, captured: Capture, key: Any) -> None:
        import jwt

        self.jwt = jwt
        self.key = key
        self.public_key = key.public_key()
        self.claims = jwts_signed(captured)
        self.verifications = jwts_verified(captured)
        now = int(time.time())
        self.sample = jwt.encode({"iss": "bench", "iat": now, "exp": now + 3600}, key, algorithm="RS256")

    def time(self) -> float:
        started = time.perf_counter()
        for claims in self.claims:
            self.jwt.encode(claims, self.key, algorithm="RS256")
        for _ in range(self.verifications):
            self.jwt.decode(self.sample, self.public_key, algorithms=["RS256"])
        return time.perf_counter() - started


class Floor:
    """Each case captured, ready to replay; ``sample(case)`` times one replay and one signature set.

    ``measure.run`` calls ``sample`` after each timed request (``each=``), so the floor and the
    request are timed in the same rounds and the machine's drift moves both alike.
    """

    def __init__(self, driver: Driver, cases: list[Case]) -> None:
        key = _signing_key()
        self.cases = cases
        self.captures: dict[str, Capture] = {}
        self.replayers: dict[str, Replayer] = {}
        self.signers: dict[str, Signer] = {}
        first = {case.name: capture(driver, case) for case in cases}  # which tables each writes
        self.rows = Rows(list(dict.fromkeys(t for c in first.values() for t in c.inserted_tables)))
        for case in cases:
            self.rows.forget()
            captured = capture(driver, case)
            if [s.kind for s in captured.statements] != [s.kind for s in first[case.name].statements]:
                raise AssertionError(f"{case.name}: two requests sent different statements")
            self.captures[case.name] = captured
            self.replayers[case.name] = Replayer(captured)
            self.signers[case.name] = Signer(captured, key)
        for replayer in self.replayers.values():  # the server's plans and the driver's caches
            for _ in range(3):
                self.rows.forget()
                replayer.replay()
        self.rows.forget()
        self.sql: dict[str, list[float]] = {case.name: [] for case in cases}
        self.signing: dict[str, list[float]] = {case.name: [] for case in cases}

    def sample(self, case: Case) -> None:
        self.rows.forget()  # untimed: what requests and replays inserted since, so ids repeat
        self.sql[case.name].append(self.replayers[case.name].replay())
        self.signing[case.name].append(self.signers[case.name].time())

    def figures(self) -> dict[str, Any]:
        self.rows.forget()
        figures: dict[str, Any] = {}
        for case in self.cases:
            captured = self.captures[case.name]
            sql_ms = statistics.median(self.sql[case.name]) * 1000
            signing_ms = statistics.median(self.signing[case.name]) * 1000
            figures[case.name] = {
                "statements": captured.round_trips,
                "begin": captured.count("BEGIN"),
                "commit": captured.count("COMMIT"),
                "rollback": captured.count("ROLLBACK"),
                "health_checks": captured.count("health"),
                "inserts_into": captured.inserted_tables,
                "sql": [
                    s.sql.split(" WHERE ")[0][:120] if s.kind == "sql" else s.kind
                    for s in captured.statements
                ],
                "signatures": len(self.signers[case.name].claims),
                "verifications": self.signers[case.name].verifications,
                "floor_samples": len(self.sql[case.name]),
                "replay_ms": round(sql_ms, 3),
                "signing_ms": round(signing_ms, 3),
                "floor_ms": round(sql_ms + signing_ms, 3),
            }
        return figures


def run(driver: Driver, cases: list[Case], *, rounds: int, seed: int = 8693) -> dict[str, Any]:
    """The floor alone: capture each case, then ``rounds`` interleaved samples of each."""
    floor = Floor(driver, cases)
    shuffler = random.Random(seed)
    gc.collect()
    for _ in range(rounds):
        order = list(cases)
        shuffler.shuffle(order)
        for case in order:
            floor.sample(case)
    return floor.figures()

"""Database faults on demand: triggers that make PostgreSQL or SQLite itself fail, or slow
down, an INSERT, as a full disk, a lost primary or an overloaded server would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, router


@contextmanager
def failing_insert(model: Any, when: str = "") -> Iterator[None]:
    """Make the database reject every INSERT into ``model``'s table (``when``: an SQL condition
    on ``NEW``), until the block ends."""
    connection = connections[router.db_for_write(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    condition = f"WHEN ({when})" if when else ""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER injected_fault BEFORE INSERT ON {table} FOR EACH ROW {condition} "
                "EXECUTE FUNCTION injected_fault()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER injected_fault BEFORE INSERT ON {table} {condition} "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER injected_fault ON {table}")
                cursor.execute("DROP FUNCTION injected_fault()")
            else:
                cursor.execute("DROP TRIGGER injected_fault")


@contextmanager
def slow_insert(model: Any, seconds: float) -> Iterator[None]:
    """Make every INSERT into ``model``'s table take ``seconds`` longer (PostgreSQL only): it
    widens the window between a request's checks and its commit, where races happen."""
    connection = connections[router.db_for_write(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION injected_delay() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER injected_delay BEFORE INSERT ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION injected_delay()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER injected_delay ON {table}")
            cursor.execute("DROP FUNCTION injected_delay()")

"""Writing an exchange's own rows (``ExchangedToken``, ``AuditEvent``) in one statement.

An impersonation writes two of each. ``bulk_create`` would do it in one statement too, but on
PostgreSQL it builds an ``UNNEST`` of typed arrays for two rows, which doubles the cost of the
write (1.6 ms against 0.8 ms on the benchmark machine, docs/performance.md). This writes the
plain multi-row ``INSERT … RETURNING`` the model's fields describe. No ``pre_save`` or
``post_save`` signals, as with ``bulk_create``: the app's own signals go out after commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import connections
from django.db.models import Model

M = TypeVar("M", bound=Model)


def insert_rows(rows: Sequence[M], using: str) -> None:
    """INSERT ``rows`` (new instances of one model) in one statement and give them their ids."""
    if not rows:
        return
    model = type(rows[0])
    connection = connections[using]
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
    if not connection.features.can_return_rows_from_bulk_insert or any(
        hasattr(field, "get_placeholder") or getattr(field, "db_returning", False) for field in fields
    ):
        # A backend without INSERT … RETURNING, or a field with SQL of its own: Django's way.
        model._default_manager.using(using).bulk_create(rows)
        return
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    assert meta.pk is not None
    # Only quoted names from the model's own metadata and %s placeholders go into the SQL.
    returning = quote(str(meta.pk.column))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {values} RETURNING {returning}"  # noqa: S608
    params = [
        field.get_db_prep_save(field.pre_save(row, True), connection) for row in rows for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = cursor.fetchall()
    for row, (pk,) in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = using

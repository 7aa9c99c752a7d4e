"""Writing an exchange's rows (DOT's token rows, ``ExchangedToken``, ``AuditEvent``) in one statement.

An impersonation writes two of each. ``bulk_create`` does it in one statement too, but on
PostgreSQL it sends an ``UNNEST`` of typed arrays for two rows or more, which costs 0.35 to
0.45 ms more per write than a plain multi-row ``INSERT … VALUES … RETURNING`` (issue 19,
docs/performance.md). On the Django versions CI tests, and for models whose INSERT Django would
write as plain ``VALUES`` anyway, ``orm_internals.insert_rows`` writes that; otherwise
``bulk_create`` does. Either way no ``pre_save`` or ``post_save`` signals, as with
``bulk_create``: the app's own signals go out after commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import router
from django.db.models import Model
from django.db.models.signals import post_save, pre_save

from token_exchange.db import orm_internals

M = TypeVar("M", bound=Model)


def insert_rows(rows: Sequence[M], using: str) -> None:
    """INSERT ``rows`` (new instances of one model) in one statement and give them their ids."""
    if not rows:
        return
    model = type(rows[0])
    if orm_internals.ENABLED and orm_internals.can_insert_plainly(model, using):
        orm_internals.insert_rows(rows, using)
    else:
        model._default_manager.using(using).bulk_create(rows)


def insert_together(groups: Sequence[Sequence[Model]], using: str) -> None:
    """INSERT several models' new rows (each group one model), in one statement where the
    database can (PostgreSQL), else one statement per group, and give them their ids."""
    groups = [group for group in groups if group]
    if (
        len(groups) > 1
        and orm_internals.ENABLED
        and orm_internals.can_insert_together(using)
        and all(orm_internals.can_insert_plainly(type(group[0]), using) for group in groups)
    ):
        orm_internals.insert_together(groups, using)
        return
    for group in groups:
        insert_rows(group, using)


def _save_is_an_insert(model: type[Model]) -> bool:
    """Whether ``save()`` of a new ``model`` row does nothing but its plain INSERT: Django's own
    save path and plain fields (``orm_internals.save_is_a_plain_insert``), and nothing listening
    to its ``pre_save`` or ``post_save`` now. Django asks the same of signals before it deletes
    without loading rows (``Collector.can_fast_delete``)."""
    return (
        orm_internals.save_is_a_plain_insert(model)
        and not pre_save.has_listeners(model)
        and not post_save.has_listeners(model)
    )


def save_together(saved: Sequence[Model], groups: Sequence[Sequence[Model]], using: str) -> None:
    """Store ``saved`` (new rows a caller would ``save()`` one by one, each after the rows it
    points at: DOT's token rows), then ``groups`` as ``insert_together`` does.

    On PostgreSQL, where the ORM internals are enabled and each ``save()`` would be a plain
    INSERT (``_save_is_an_insert``), it is all one statement, the rows of ``saved`` first:
    3 round trips fewer for a JWT with an ID token and a refresh token. Otherwise each row of
    ``saved`` goes through ``save()``, signals and all, exactly as before, then the groups.
    """
    rows = list(saved)
    if (
        rows
        and orm_internals.ENABLED
        and orm_internals.can_insert_together(using)
        and all(
            _save_is_an_insert(type(row))
            and orm_internals.can_insert_plainly(type(row), using)
            and router.db_for_write(type(row), instance=row) == using
            for row in rows
        )
        and all(orm_internals.can_insert_plainly(type(group[0]), using) for group in groups if group)
        and orm_internals.rows_insert_plainly(rows)
    ):
        orm_internals.insert_together([*([row] for row in rows), *groups], using)
        return
    for row in rows:
        row.save()
    insert_together(groups, using)

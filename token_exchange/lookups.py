"""Reading one row on the token endpoint's hot path."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


def unique_row(queryset: QuerySet[M]) -> M | None:
    """The row a lookup on a unique column finds, or None.

    ``.first()`` would clone the query twice and add ORDER BY and LIMIT to a query that matches
    one row at most; building that SQL takes longer than the database takes to answer it.
    """
    rows = list(queryset)
    return rows[0] if rows else None

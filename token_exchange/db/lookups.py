"""Reading rows on the token endpoint's hot path.

A resource server may exchange a token for every call it makes downstream, so the reads an
exchange makes must cost little more than the database takes to answer them. Building and
compiling a queryset costs more than that: on PostgreSQL, Django spends 0.13 to 2 ms preparing
each lookup an exchange makes, as much as running it or more (issue 19, docs/performance.md).
``PreparedLookup`` names such a lookup once; on the Django versions CI tests, ``orm_internals``
compiles it once per database connection and then only runs it, with the ORM's own value
conversions and ``select_related`` population. On any other version it is the plain ORM query:
the same rows at the ORM's price.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from django.db import router
from django.db.models import Field, Model, QuerySet

from token_exchange.db import orm_internals
from token_exchange.db.orm_internals import UnsupportedQuerySet

M = TypeVar("M", bound=Model)

__all__ = ["PreparedLookup", "PreparedQuery", "UnsupportedQuerySet", "unique_row"]


def unique_row(queryset: QuerySet[M]) -> M | None:
    """The row a lookup on a unique column finds, or None.

    ``.first()`` would clone the query twice and add ORDER BY and LIMIT to a query that matches
    one row at most; building that SQL takes longer than the database takes to answer it.
    """
    rows = list(queryset)
    return rows[0] if rows else None


class PreparedLookup(Generic[M]):
    """The rows whose ``column`` equals one of a few values.

    ``column`` is a field or a lookup path across relations (``"application__client_id"``).
    ``queryset`` builds the lookup without its filter (``select_related`` welcome); it must not
    depend on anything but the looked-up values, since its SQL is kept for the connection's life
    (one statement per number of values). Annotations are set on each row as the ORM sets them;
    it may not prefetch, come from a related manager or choose a database with ``using()``: the
    compiled path refuses such a queryset with ``UnsupportedQuerySet`` on its first call rather
    than drop what it adds. The statement still
    goes through ``connection.cursor()``: query logging, execute wrappers and
    ``django_assert_num_queries`` see it as any other.
    """

    def __init__(self, queryset: Callable[[], QuerySet[M]], column: str) -> None:
        self._queryset = queryset
        self._column = column
        self._model: type[M] | None = None  # known at the first call (models may be swapped)
        self.compiled: orm_internals.CompiledLookups[M] = orm_internals.CompiledLookups(queryset, column)

    def get(self, value: Any) -> M | None:
        """The row whose ``column`` is ``value`` (a unique column), or None."""
        rows = self.rows(value)
        return rows[0] if rows else None

    def rows(self, *values: Any) -> list[M]:
        """The rows whose ``column`` is any of ``values``, in the queryset's order."""
        if not values:
            return []
        if not orm_internals.ENABLED:
            return self.orm_rows(*values)
        if self._model is None:
            self._model = self._queryset().model
        return self.compiled.rows(self._model, router.db_for_read(self._model), values)

    def orm_rows(self, *values: Any) -> list[M]:
        """The same rows through the public ORM: the path on Django versions CI does not test."""
        if len(values) == 1:
            queryset = self._queryset().filter(**{self._column: values[0]})
        else:
            queryset = self._queryset().filter(**{f"{self._column}__in": values})
        try:
            return list(queryset)
        except OverflowError:
            return []  # SQLite's driver refuses an integer no column can hold: no such row


class PreparedQuery:
    """Plain values (``values_list``, or a UNION ALL of such querysets) for a few values.

    ``build`` makes the queryset from its values, each standing for the value of one of
    ``fields()`` (read at the first call: models may be swapped); it must not depend on anything
    else. On the Django versions CI tests, ``orm_internals`` compiles it once per connection with
    placeholders and then only runs it; elsewhere it is the plain ORM query with the values.
    """

    def __init__(
        self,
        build: Callable[..., QuerySet[Any]],
        fields: Callable[[], Sequence[Field[Any, Any]]],
        *,
        model: Callable[[], type[Model]],
    ) -> None:
        self._build = build
        self._model = model
        self.compiled = orm_internals.CompiledQueries(build, fields)

    def rows(self, *values: Any) -> list[tuple[Any, ...]]:
        if not orm_internals.ENABLED:
            return self.orm_rows(*values)
        return self.compiled.rows(router.db_for_read(self._model()), values)

    def orm_rows(self, *values: Any) -> list[tuple[Any, ...]]:
        """The same rows through the public ORM: the path on Django versions CI does not test."""
        return [tuple(row) for row in self._build(*values)]

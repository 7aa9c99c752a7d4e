"""Reading rows on the token endpoint's hot path.

A resource server may exchange a token for every call it makes downstream, so the reads an
exchange makes must cost little more than the database takes to answer them. Building and
compiling a queryset costs more than that: on the benchmark machine, Django spends 1.4 ms
preparing the subject-token lookup that PostgreSQL answers in 0.1 ms (docs/performance.md).
``PreparedLookup`` has the ORM compile such a lookup once per database connection and then
only runs it, with the ORM's own value conversions and ``select_related`` population.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any, Generic, TypeVar

from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Expression, Field, Model, Q, QuerySet
from django.db.models.query import get_related_populators

M = TypeVar("M", bound=Model)


def unique_row(queryset: QuerySet[M]) -> M | None:
    """The row a lookup on a unique column finds, or None.

    ``.first()`` would clone the query twice and add ORDER BY and LIMIT to a query that matches
    one row at most; building that SQL takes longer than the database takes to answer it.
    """
    rows = list(queryset)
    return rows[0] if rows else None


class _Placeholder(Expression):
    """One looked-up value in a prepared lookup's SQL: a ``%s`` filled in on every call."""

    def __init__(self, field: Field[Any, Any], index: int) -> None:
        super().__init__(output_field=field)
        self.index = index  # which of the call's values; also keeps placeholders distinct

    def resolve_expression(self, *args: Any, **kwargs: Any) -> _Placeholder:
        return self

    def as_sql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, tuple[Any, ...]]:
        return "%s", (self,)


@dataclass(frozen=True)
class _Compiled:
    """What ``ModelIterable`` works out per query, worked out once (nothing of the connection)."""

    sql: str
    params: tuple[Any, ...]  # the placeholders among them
    field: Field[Any, Any]  # the looked-up column's
    converters: list[tuple[int, tuple[list[Callable[..., Any]], Any]]]
    model_columns: slice
    init_list: list[str]
    populators: list[Any]


def _column_field(model: type[Model], column: str) -> Field[Any, Any]:
    """The field a lookup path (``"pk"``, ``"user"``, ``"application__client_id"``) ends at."""
    *relations, name = column.split("__")
    for relation in relations:
        model = model._meta.get_field(relation).related_model  # type: ignore[assignment]
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{column} is not a column of {model.__name__}")
    return field


def _related_populators(queryset: QuerySet[Any], klass_info: Any, select: Any, using: str) -> Any:
    """``select_related`` objects as the queryset's iterator attaches them; since Django 6.1
    (fetch modes) in the queryset's fetch mode."""
    populators: Any = get_related_populators
    fetch_mode = getattr(queryset, "_fetch_mode", None)
    if fetch_mode is None:
        return populators(klass_info, select, using)
    return populators(klass_info, select, using, fetch_mode)


class PreparedLookup(Generic[M]):
    """The rows whose ``column`` equals one of a few values, through SQL compiled once.

    ``column`` is a field or a lookup path across relations (``"application__client_id"``).
    ``queryset`` builds the lookup without its filter (``select_related`` welcome); it must not
    depend on anything but the looked-up values, since its SQL is kept for the connection's life
    (one statement per number of values). The statement still goes through
    ``connection.cursor()``: query logging, execute wrappers and ``django_assert_num_queries``
    see it as any other.
    """

    def __init__(self, queryset: Callable[[], QuerySet[M]], column: str) -> None:
        self._queryset = queryset
        self._column = column
        self._model: type[M] | None = None  # known at the first call (models may be swapped)
        # Per connection: Django's connections are per thread, and so is this.
        self._compiled: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[int, _Compiled]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, value: Any) -> M | None:
        """The row whose ``column`` is ``value`` (a unique column), or None."""
        rows = self.rows(value)
        return rows[0] if rows else None

    def rows(self, *values: Any) -> list[M]:
        """The rows whose ``column`` is any of ``values``, in the queryset's order."""
        if self._model is None:
            self._model = self._queryset().model
        using = router.db_for_read(self._model)
        connection = connections[using]
        by_count = self._compiled.setdefault(connection, {})
        compiled = by_count.get(len(values))
        if compiled is None:
            compiled = by_count[len(values)] = self._compile(self._queryset(), using, len(values))
        prepared = [compiled.field.get_db_prep_value(value, connection, prepared=False) for value in values]
        params = [
            prepared[param.index] if isinstance(param, _Placeholder) else param for param in compiled.params
        ]
        with connection.cursor() as cursor:
            try:
                cursor.execute(compiled.sql, params)
            except OverflowError:
                return []  # SQLite's driver refuses an integer no column can hold: no such row
            rows = cursor.fetchall()
        return [self._instance(self._model, compiled, list(row), connection, using) for row in rows]

    def _compile(self, queryset: QuerySet[M], using: str, count: int) -> _Compiled:
        model = queryset.model
        field = _column_field(model, self._column)
        matches = [Q(**{self._column: _Placeholder(field, index)}) for index in range(count)]
        compiler = queryset.filter(reduce(operator.or_, matches)).query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        # As ModelIterable reads them: the columns, their converters, the related objects.
        select, klass_info = compiler.select, compiler.klass_info
        converters = compiler.get_converters([column[0] for column in select[: compiler.col_count]])
        fields = klass_info["select_fields"]
        model_columns = slice(fields[0], fields[-1] + 1)
        return _Compiled(
            sql=sql,
            params=tuple(params),
            field=field,
            converters=list(converters.items()),
            model_columns=model_columns,
            init_list=[column[0].target.attname for column in select[model_columns]],
            populators=_related_populators(queryset, klass_info, select, using),
        )

    @staticmethod
    def _instance(
        model: type[M], compiled: _Compiled, row: list[Any], connection: BaseDatabaseWrapper, using: str
    ) -> M:
        for position, (functions, expression) in compiled.converters:
            value = row[position]
            for function in functions:
                value = function(value, expression, connection)
            row[position] = value
        instance = model.from_db(using, compiled.init_list, row[compiled.model_columns])
        for populator in compiled.populators:
            populator.populate(row, instance)
        return instance

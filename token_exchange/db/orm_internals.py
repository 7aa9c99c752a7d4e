"""The one module that leans on Django's private ORM internals, for the token endpoint's hot path.

Why: measured on PostgreSQL (issue 19, docs/performance.md), building and compiling a queryset
costs 0.13 to 2 ms per lookup above running its SQL (0.15 to 1.2 ms; the most for the subject
token with its four joined tables), and ``bulk_create`` of two rows costs 0.35 to 0.45 ms more than
a plain ``INSERT … VALUES (…), (…)``: it sends an ``UNNEST`` of typed arrays. The public ORM has no way to
keep a compiled statement, nor to ask for plain ``VALUES``.

What it leans on, checked against Django 5.2.19, 6.0.10 and 6.1.3:

- ``QuerySet.query.get_compiler()``: ``as_sql()``, ``select``, ``klass_info``, ``col_count``,
  ``annotation_col_map``, ``get_converters()``, ``has_composite_fields()`` — what
  ``django.db.models.query.ModelIterable`` reads for every query, read here once per connection.
- ``django.db.models.query.get_related_populators`` and, from Django 6.1,
  ``QuerySet._fetch_mode`` and ``django.db.models.query._get_from_db`` (``from_db`` with the
  queryset's fetch mode, and peers tracked as ``ModelIterable`` tracks them).
- ``QuerySet._prefetch_related_lookups``, ``_known_related_objects``, ``_iterable_class``,
  ``_db``: to refuse querysets whose rows ``ModelIterable`` would change after the SQL.
- ``Model._prepare_related_fields_for_save`` and ``Options.db_returning_fields``: what
  ``bulk_create`` does before it writes, and which fields the database fills in; the field
  features that make Django's INSERT differ from plain ``VALUES (%s, …)``
  (``get_placeholder``, ``get_placeholder_sql`` from 6.1, ``db_returning``, ``generated``,
  ``db_default``).

The public hooks that would replace it: a prepared-statement or compiled-query cache in the ORM
(none today), and a ``bulk_create`` option to keep plain ``VALUES`` on PostgreSQL.

``ENABLED`` is true only on the Django versions CI tests (major.minor in ``CHECKED_AGAINST``);
any other version takes the public ORM path in ``lookups`` and ``inserts``, and no private name
is even imported. ``tests/test_orm_internals.py`` runs on every cell of the matrix and proves
both paths give identical rows; ``tests/test_private_imports.py`` keeps these names out of every
other module.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial, reduce
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import django
from django.db import connections
from django.db.models import Expression, Field, Model, Q, QuerySet

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

M = TypeVar("M", bound=Model)

# The Django versions (major, minor) whose internals this module was checked against: the ones CI
# tests (tox.ini, docs/support.md). Add a version here only after its tox cell passes.
CHECKED_AGAINST = frozenset({(5, 2), (6, 0), (6, 1)})
ENABLED: bool = django.VERSION[:2] in CHECKED_AGAINST


class UnsupportedQuerySet(TypeError):
    """A prepared lookup's queryset would change its rows after the SQL (prefetches, known
    related objects, ``values()``…): the fast path would drop that, so it
    refuses. Use the plain ORM for such a read."""


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
    from_db: Callable[..., Any]
    fetch_mode: Any  # Django 6.1's: None before
    related: Callable[[], list[Any]]  # select_related populators, fresh when they track peers
    populators: list[Any]
    annotations: list[tuple[str, int]]  # annotation (and extra()) columns, set on each row


def _column_field(model: type[Model], column: str) -> Field[Any, Any]:
    """The field a lookup path (``"pk"``, ``"user"``, ``"application__client_id"``) ends at."""
    *relations, name = column.split("__")
    for relation in relations:
        model = model._meta.get_field(relation).related_model  # type: ignore[assignment]
    field = model._meta.pk if name == "pk" else model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{column} is not a column of {model.__name__}")
    return field


def _refuse_unsupported(queryset: Any, compiler: Any) -> None:
    from django.db.models.query import ModelIterable

    model = queryset.model.__name__
    reasons = []
    if queryset._iterable_class is not ModelIterable:
        reasons.append("it does not return model instances (values()/values_list())")
    if queryset._prefetch_related_lookups:
        reasons.append("it prefetches (prefetch_related())")
    if queryset._db is not None:
        reasons.append("it is bound to a database with using() (the router chooses one per call)")
    if queryset._known_related_objects:
        reasons.append("it comes from a related manager (known related objects)")
    if compiler.has_composite_fields([column[0] for column in compiler.select[: compiler.col_count]]):
        reasons.append("it selects a composite primary key")
    if reasons:
        raise UnsupportedQuerySet(
            f"A prepared lookup of {model} cannot keep what ModelIterable would add after the "
            f"SQL: {'; '.join(reasons)}. Read it with the plain ORM instead."
        )


def _from_db(model: type[Model], fetch_mode: Any) -> Callable[..., Any]:
    if fetch_mode is None:  # before Django 6.1
        return model.from_db
    from django.db.models.query import _get_from_db  # type: ignore[attr-defined]

    return _get_from_db(model, fetch_mode)  # type: ignore[no-any-return]


def _related_populators(klass_info: Any, select: Any, using: str, fetch_mode: Any) -> list[Any]:
    from django.db.models.query import get_related_populators

    populators: Any = get_related_populators
    if fetch_mode is None:
        return populators(klass_info, select, using)  # type: ignore[no-any-return]
    return populators(klass_info, select, using, fetch_mode)  # type: ignore[no-any-return]


class CompiledLookups(Generic[M]):
    """``PreparedLookup``'s fast path: SQL compiled once per connection and number of values,
    rows built as ``ModelIterable`` builds them."""

    def __init__(self, queryset: Callable[[], QuerySet[M]], column: str) -> None:
        self._queryset = queryset
        self._column = column
        # Per connection: Django's connections are per thread, and so is this.
        self._compiled: weakref.WeakKeyDictionary[BaseDatabaseWrapper, dict[int, _Compiled]] = (
            weakref.WeakKeyDictionary()
        )

    def rows(self, model: type[M], using: str, values: Sequence[Any]) -> list[M]:
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
        if not rows:
            return []
        return self._instances(model, compiled, rows, connection, using)

    def _compile(self, queryset: QuerySet[M], using: str, count: int) -> _Compiled:
        model = queryset.model
        field = _column_field(model, self._column)
        matches = [Q(**{self._column: _Placeholder(field, index)}) for index in range(count)]
        compiler = queryset.filter(reduce(operator.or_, matches)).query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        _refuse_unsupported(queryset, compiler)
        # As ModelIterable reads them: the columns, their converters, the related objects.
        select, klass_info = compiler.select, compiler.klass_info
        converters = compiler.get_converters([column[0] for column in select[: compiler.col_count]])
        fields = klass_info["select_fields"]
        model_columns = slice(fields[0], fields[-1] + 1)
        fetch_mode = getattr(queryset, "_fetch_mode", None)
        related = partial(_related_populators, klass_info, select, using, fetch_mode)
        return _Compiled(
            sql=sql,
            params=tuple(params),
            field=field,
            converters=list(converters.items()),
            model_columns=model_columns,
            init_list=[column[0].target.attname for column in select[model_columns]],
            from_db=_from_db(klass_info["model"], fetch_mode),
            fetch_mode=fetch_mode,
            related=related,
            populators=related(),
            annotations=list(compiler.annotation_col_map.items()),
        )

    @staticmethod
    def _instances(
        model: type[M], compiled: _Compiled, rows: list[Any], connection: BaseDatabaseWrapper, using: str
    ) -> list[M]:
        track_peers = compiled.fetch_mode is not None and compiled.fetch_mode.track_peers
        # A populator keeps the peers of one query's rows: fresh ones when the fetch mode tracks them.
        populators = compiled.related() if track_peers else compiled.populators
        peers: list[Any] = []
        instances = []
        for fetched in rows:
            row = list(fetched)
            for position, (functions, expression) in compiled.converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, connection)
                row[position] = value
            instance = compiled.from_db(using, compiled.init_list, row[compiled.model_columns])
            if track_peers:
                peers.append(weakref.ref(instance))
                instance._state.peers = peers
            for populator in populators:
                populator.populate(row, instance)
            for name, position in compiled.annotations:  # as ModelIterable sets them
                setattr(instance, name, row[position])
            instances.append(instance)
        return instances


class CompiledQueries:
    """``PreparedQuery``'s fast path: a queryset of plain values (``values_list``, a UNION ALL of
    them, say) compiled once per connection with placeholders, then only run with new values;
    the columns converted as ``ValuesListIterable`` converts them."""

    def __init__(
        self, build: Callable[..., QuerySet[Any]], fields: Callable[[], Sequence[Field[Any, Any]]]
    ) -> None:
        self._build = build
        self._fields = fields
        self._compiled: weakref.WeakKeyDictionary[
            BaseDatabaseWrapper, tuple[str, tuple[Any, ...], Any, Any]
        ] = weakref.WeakKeyDictionary()

    def rows(self, using: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        connection = connections[using]
        compiled = self._compiled.get(connection)
        if compiled is None:
            fields = list(self._fields())
            queryset = self._build(*(_Placeholder(field, index) for index, field in enumerate(fields)))
            compiler = queryset.query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            converters = compiler.get_converters(
                [column[0] for column in compiler.select[: compiler.col_count]]
            )
            compiled = self._compiled[connection] = (sql, tuple(params), list(converters.items()), fields)
        sql, params, converters, fields = compiled
        prepared = [
            field.get_db_prep_value(value, connection, prepared=False)
            for field, value in zip(fields, values, strict=True)
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, [prepared[p.index] if isinstance(p, _Placeholder) else p for p in params])
            fetched = cursor.fetchall()
        rows = []
        for row in fetched:
            converted = list(row)
            for position, (functions, expression) in converters:
                for function in functions:
                    converted[position] = function(converted[position], expression, connection)
            rows.append(tuple(converted))
        return rows


def can_insert_plainly(model: type[Model], using: str) -> bool:
    """Whether Django's INSERT of ``model``'s rows is the plain ``VALUES (%s, …)`` that
    ``insert_rows`` writes, returning only the auto primary key."""
    if not connections[using].features.can_return_rows_from_bulk_insert:
        return False
    return _fields_insert_plainly(model)


@functools.cache
def _fields_insert_plainly(model: type[Model]) -> bool:
    """The model's half of ``can_insert_plainly``, asked on every write: answered once per model
    (its fields are fixed once Django has set up)."""
    meta = model._meta
    if meta.auto_field is None or meta.pk is not meta.auto_field or meta.db_returning_fields != [meta.pk]:
        return False
    return not any(
        hasattr(field, "get_placeholder")
        or hasattr(field, "get_placeholder_sql")
        or getattr(field, "generated", False)
        or field.has_db_default()
        for field in meta.concrete_fields
        if field is not meta.auto_field
    )


def _references(
    row: Model, fields: Sequence[Field[Any, Any]], earlier: dict[int, int]
) -> dict[Field[Any, Any], int]:
    """The foreign keys of ``row`` that point at an unsaved row written earlier in the same
    statement (``earlier``: ``id()`` of a one-row group's row → the group's number)."""
    found: dict[Field[Any, Any], int] = {}
    if not earlier:
        return found
    for field in fields:
        if field.is_relation and field.is_cached(row):  # type: ignore[attr-defined]
            related = field.get_cached_value(row)  # type: ignore[attr-defined]
            if (
                related is not None
                and related.pk is None
                and id(related) in earlier
                and field.target_field is related._meta.pk  # type: ignore[attr-defined]
            ):
                found[field] = earlier[id(related)]
    return found


def _insert_sql(
    rows: Sequence[Model],
    connection: BaseDatabaseWrapper,
    earlier: dict[int, int] | None = None,
    referring: list[Model] | None = None,
) -> tuple[str, list[Any]]:
    """The plain ``INSERT … VALUES … RETURNING pk`` of ``rows`` (one model), and its parameters.

    A foreign key to a row of an earlier group of the same ``WITH`` (``earlier``) is written as
    that group's ``RETURNING`` value, ``(SELECT pk FROM gN)``, instead of a parameter; the rows
    that have one are added to ``referring``.
    """
    model = type(rows[0])
    meta = model._meta
    fields = [field for field in meta.concrete_fields if field is not meta.auto_field]
    quote = connection.ops.quote_name
    values: list[str] = []
    params: list[Any] = []
    for row in rows:
        references = _references(row, fields, earlier or {})
        if references and referring is not None:
            referring.append(row)
        # As bulk_create: refuse an unsaved related object, take a saved one's primary key
        # (the foreign keys to rows written earlier in the statement aside).
        checked = [field for field in fields if field.is_relation and field not in references]
        if checked:
            row._prepare_related_fields_for_save(operation_name="bulk_create", fields=checked)  # type: ignore[attr-defined]
        placeholders = []
        for field in fields:
            if field in references:
                # Only a group number goes in: the CTE's name and its quoted key column.
                key = quote(str(field.related_model._meta.pk.column))  # type: ignore[union-attr]
                placeholders.append(f"(SELECT {key} FROM g{references[field]})")  # noqa: S608
            else:
                value = field.get_db_prep_save(field.pre_save(row, True), connection)
                if value is None:
                    # A constant rather than a parameter: psycopg keeps a statement's parsed form
                    # only up to 50 parameters, which an impersonation's one write exceeded.
                    placeholders.append("NULL")
                else:
                    placeholders.append("%s")
                    params.append(value)
        values.append("(" + ", ".join(placeholders) + ")")
    columns = ", ".join(quote(str(field.column)) for field in fields)
    assert meta.pk is not None
    # Only quoted names from the model's own metadata, group numbers, NULL and %s placeholders.
    returning = quote(str(meta.pk.column))
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join(values)} RETURNING {returning}"  # noqa: S608
    return sql, params


def _saved(rows: Sequence[Model], ids: Sequence[Any], using: str) -> None:
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = using


def insert_rows(rows: Sequence[M], using: str) -> None:
    """INSERT ``rows`` (new instances of one model that ``can_insert_plainly``) in one statement
    and give them their ids, as ``bulk_create`` would but with plain ``VALUES``."""
    connection = connections[using]
    sql, params = _insert_sql(rows, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [pk for (pk,) in cursor.fetchall()]
    _saved(rows, ids, using)


def _plain_pre_saves() -> frozenset[Callable[..., Any]]:
    """``Field.pre_save`` implementations that read only their own field (and the clock): Django's
    own, and DOT's token fields' (``ResourceJSONField``: None → []; ``TokenChecksumField``: the
    checksum of the row's own token)."""
    import oauth2_provider.models as dot_models
    from django.db.models import DateField, DateTimeField

    known = {Field.pre_save, DateField.pre_save, DateTimeField.pre_save}
    for name in ("ResourceJSONField", "TokenChecksumField"):
        field_class = getattr(dot_models, name, None)
        if field_class is not None:
            known.add(field_class.pre_save)
    return frozenset(known)


_SAVE_PATH = ("save", "save_base", "_save_parents", "_save_table", "_do_insert")


@functools.cache
def save_is_a_plain_insert(model: type[Model]) -> bool:
    """Whether ``save()`` of a new ``model`` row does nothing but ``insert_together``'s INSERT,
    signals aside (``inserts`` asks those live): Django's own save path (``save``,
    ``save_base`` — which django-model-utils' ``FieldTracker`` patches —, ``_save_parents``,
    ``_save_table``, ``_do_insert``) and the base manager's ``_insert``; no
    ``order_with_respect_to`` (``save`` numbers the row); every field's ``pre_save`` one that
    reads only its own field (``_plain_pre_saves``), so that none reads a foreign key the
    statement fills in; and a plain INSERT (``can_insert_plainly``'s model half). Asked once per
    model: its class and fields are fixed once Django has set up."""
    if any(getattr(model, name, None) is not getattr(Model, name) for name in _SAVE_PATH):
        return False
    meta = model._meta
    if meta.order_with_respect_to is not None or meta.parents:
        return False
    queryset_class = model._base_manager._queryset_class  # type: ignore[attr-defined]
    if getattr(queryset_class, "_insert", None) is not QuerySet._insert:  # type: ignore[attr-defined]
        return False
    plain = _plain_pre_saves()
    if any(type(field).pre_save not in plain for field in meta.concrete_fields):
        return False
    return _fields_insert_plainly(model)


def rows_insert_plainly(rows: Sequence[Model]) -> bool:
    """Whether ``insert_together`` can write ``rows`` as ``save()``/``bulk_create`` would: no
    value is an expression (``Now()``, ``F()``: the ORM compiles those, the plain INSERT cannot),
    and every foreign key to an unsaved row points at its primary key (a ``to_field`` would need
    that column from the earlier part's ``RETURNING``, which returns only the primary key)."""
    for row in rows:
        for field in row._meta.concrete_fields:
            if hasattr(getattr(row, field.attname, None), "resolve_expression"):
                return False
            if field.is_relation and field.is_cached(row):  # type: ignore[attr-defined]
                related = field.get_cached_value(row)  # type: ignore[attr-defined]
                unsaved = related is not None and related.pk is None
                if unsaved and field.target_field is not related._meta.pk:  # type: ignore[attr-defined]
                    return False
    return True


def can_insert_together(using: str) -> bool:
    """Can rows of several models go in one statement? PostgreSQL's data-modifying ``WITH``."""
    return connections[using].vendor == "postgresql"


def insert_together(groups: Sequence[Sequence[Model]], using: str) -> None:
    """INSERT each group (new rows of one model that ``can_insert_plainly``) in one statement,
    a data-modifying ``WITH`` per group on PostgreSQL (``can_insert_together``), and give every
    row its id: one round trip instead of one per table.

    Groups come in the order their foreign keys need: a row may point at the row of an earlier
    group that has only one row (DOT's token rows, one per group), and reads its id from that
    group's ``RETURNING``; the references are checked at the end of the statement, as every
    foreign key Django creates on PostgreSQL is deferred. Each group's ``RETURNING`` lists its
    ids in the order of its ``VALUES``, as ``bulk_create`` relies on; the groups are told apart
    by their index in the final ``SELECT``.
    """
    groups = [group for group in groups if group]
    connection = connections[using]
    parts: list[str] = []
    params: list[Any] = []
    earlier: dict[int, int] = {}
    referring: list[Model] = []
    for index, group in enumerate(groups):
        sql, group_params = _insert_sql(group, connection, earlier, referring)
        parts.append(f"g{index} AS ({sql})")
        params.extend(group_params)
        if len(group) == 1:
            earlier[id(group[0])] = index
    returning = [connection.ops.quote_name(str(type(group[0])._meta.pk.column)) for group in groups]
    # Only quoted names from the models' own metadata, group numbers and %s placeholders.
    select = " UNION ALL ".join(
        f"SELECT {index} AS g, {column} AS pk FROM g{index}"  # noqa: S608
        for index, column in enumerate(returning)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} {select}", params)
        found = cursor.fetchall()
    for index, group in enumerate(groups):
        _saved(group, [pk for g, pk in found if g == index], using)
    for row in referring:
        # As save() after its related rows were saved: the foreign key takes their ids.
        row._prepare_related_fields_for_save(operation_name="bulk_create")  # type: ignore[attr-defined]

"""``insert_rows``: the exchange's own rows in one INSERT (plain ``VALUES`` through
``orm_internals`` on the Django versions CI tests, ``bulk_create`` elsewhere), read back as the ORM
wrote them. ``tests/test_orm_internals.py`` compares the two writes column by column."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from django.db import connections, router
from django.db.models import QuerySet
from oauth2_provider.models import get_access_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.db import orm_internals
from token_exchange.db.inserts import insert_rows, insert_together
from token_exchange.models import AuditEvent, ExchangedToken

pytestmark = pytest.mark.django_db
# The exchange's own tables' database: "default", or where a router sends them (settings_multidb).
USING = router.db_for_write(AuditEvent)
EventType = AuditEvent.EventType


def events(end_user: Any, portal: Any, count: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            event_type=EventType.TOKEN_EXCHANGED,
            subject=end_user,
            application=portal,
            payload={"scope": "read", "audience": [portal.client_id], "n": n, "note": "é ' \" %s"},
            client_ip="2001:db8::1",
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_rows_are_written_in_one_statement_with_their_ids(end_user, portal, count, django_assert_num_queries):
    rows = events(end_user, portal, count)
    with django_assert_num_queries(1):
        insert_rows(rows, USING)
    assert all(row.pk is not None and not row._state.adding for row in rows)
    assert len({row.pk for row in rows}) == count
    for n, row in enumerate(rows):
        stored = AuditEvent.objects.get(pk=row.pk)
        assert stored.payload == {
            "scope": "read",
            "audience": [portal.client_id],
            "n": n,
            "note": "é ' \" %s",
        }
        assert (stored.subject, stored.application, stored.actor) == (end_user, portal, None)
        assert stored.client_ip == "2001:db8::1"
        assert stored.created_at == row.created_at
        assert stored.created_at.tzinfo is not None


def test_exchanged_token_rows_keep_their_links_and_json(end_user, portal, user_tokens):
    from oauth2_provider.models import get_access_token_model

    token = get_access_token_model().objects.get()
    act = {"iss": "https://idp.example.com", "sub": "7"}
    record = ExchangedToken(
        access_token=token,
        jti=uuid.uuid4().hex,
        issued_token_type=ACCESS_TOKEN_TYPE,
        audience=["https://aggregates.example.com/"],
        resource=[],
        act=act,
    )
    insert_rows([record], USING)
    stored = ExchangedToken.objects.get(pk=record.pk)
    assert (stored.access_token_id, stored.act, stored.audience) == (
        token.pk,
        act,
        ["https://aggregates.example.com/"],
    )
    assert abs(stored.created_at - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(
        minutes=1
    )


@pytest.fixture(params=["compiled", "orm"])
def path(request, monkeypatch):
    """Each behaviour on both paths: plain VALUES, and bulk_create (other Django versions)."""
    monkeypatch.setattr(orm_internals, "ENABLED", orm_internals.ENABLED and request.param == "compiled")
    return request.param


@pytest.mark.parametrize("count", [1, 2])
def test_one_statement_on_either_path(end_user, portal, count, path, django_assert_num_queries):
    rows = events(end_user, portal, count)
    with django_assert_num_queries(1):
        insert_rows(rows, USING)
    stored = AuditEvent.objects.in_bulk([row.pk for row in rows])
    assert [stored[row.pk].payload["n"] for row in rows] == list(range(count))  # each row got its own id
    assert all(row._state.db == USING and row._state.adding is False for row in rows)


@pytest.mark.parametrize("reason", ["no INSERT RETURNING", "Django version CI does not test"])
def test_otherwise_it_falls_back_to_bulk_create(end_user, portal, monkeypatch, reason):
    if reason == "no INSERT RETURNING":
        monkeypatch.setattr(type(connections[USING].features), "can_return_rows_from_bulk_insert", False)
    else:
        monkeypatch.setattr(orm_internals, "ENABLED", False)
    calls = []
    original = QuerySet.bulk_create

    def bulk_create(self: QuerySet[Any], rows: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((self.model, len(rows)))
        return original(self, rows, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "bulk_create", bulk_create)
    insert_rows(events(end_user, portal, 2), USING)
    assert calls == [(AuditEvent, 2)]
    assert AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGED).count() == 2


def test_nothing_to_write_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        insert_rows([], USING)


def records(count: int, end_user: Any, portal: Any) -> list[ExchangedToken]:
    AccessToken = get_access_token_model()
    tokens = [
        AccessToken.objects.create(
            user=end_user,
            application=portal,
            token=uuid.uuid4().hex,
            expires=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
            scope="read",
        )
        for _n in range(count)
    ]
    return [
        ExchangedToken(
            access_token=tokens[n],
            jti=uuid.uuid4().hex,
            issued_token_type=ACCESS_TOKEN_TYPE,
            audience=["https://api.example.com/", f"n{n}"],
            resource=[],
            act={"iss": "https://idp.example.com/o", "sub": str(n)},
        )
        for n in range(count)
    ]


@pytest.mark.parametrize(("tokens", "audits"), [(1, 1), (2, 2), (3, 1), (0, 2)])
def test_token_records_and_their_audit_rows_go_in_together(
    end_user, portal, tokens, audits, django_assert_num_queries
):
    """An exchange's ExchangedToken rows and the audit rows that name them: one statement on
    PostgreSQL (a data-modifying WITH per table), one per table elsewhere; ids as each table gave them."""
    written, trail = records(tokens, end_user, portal), events(end_user, portal, audits)
    together = bool(written) and orm_internals.ENABLED and orm_internals.can_insert_together(USING)
    with django_assert_num_queries(1 if together or not written else 2):
        insert_together([written, trail], USING)
    for row in (*written, *trail):
        assert row.pk is not None
        assert (row._state.adding, row._state.db) == (False, USING)
    assert [ExchangedToken.objects.get(pk=row.pk).audience for row in written] == [
        row.audience for row in written
    ]
    assert [ExchangedToken.objects.get(pk=row.pk).act for row in written] == [row.act for row in written]
    assert [AuditEvent.objects.get(pk=row.pk).payload["n"] for row in trail] == list(range(audits))
    if written:
        assert connections[USING].vendor != "postgresql" or together  # the CI cells' path


def token_rows(end_user: Any, portal: Any) -> tuple[Any, Any, Any]:
    """An unsaved ID token, the access token that names it and the refresh token of that access
    token: what minting hands ``save_together``, in the order their foreign keys need."""
    from oauth2_provider.models import get_id_token_model, get_refresh_token_model, set_token_value

    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    id_row = get_id_token_model()(
        user=end_user, application=portal, jti=uuid.uuid4(), expires=expires, scope="openid"
    )
    access_row = get_access_token_model()(
        user=end_user, application=portal, scope="openid read", expires=expires, id_token=id_row, resource=[]
    )
    set_token_value(access_row, uuid.uuid4().hex)
    refresh_row = get_refresh_token_model()(
        user=end_user, application=portal, access_token=access_row, token_family=uuid.uuid4(), resource=[]
    )
    set_token_value(refresh_row, uuid.uuid4().hex)
    return id_row, access_row, refresh_row


def exchanged(issued_token_type: str, **token: Any) -> ExchangedToken:
    return ExchangedToken(
        jti=uuid.uuid4().hex,
        issued_token_type=issued_token_type,
        audience=["a"],
        resource=[],
        act=None,
        **token,
    )


def test_token_rows_their_records_and_the_audit_rows_are_one_statement_with_every_link_right(
    end_user, portal, django_assert_num_queries
):
    """``save_together``: DOT's token rows first, each pointing at the one before it, then the
    records pointing at them, then the audit rows; one statement where the database can, one per
    row or table elsewhere; every foreign key as the database stored it."""
    from oauth2_provider.models import get_id_token_model, get_refresh_token_model

    from token_exchange.constants import ID_TOKEN_TYPE, REFRESH_TOKEN_TYPE
    from token_exchange.db.inserts import save_together

    id_row, access_row, refresh_row = token_rows(end_user, portal)
    written = [
        exchanged(ID_TOKEN_TYPE, id_token=id_row),
        exchanged(ACCESS_TOKEN_TYPE, access_token=access_row),
        exchanged(REFRESH_TOKEN_TYPE, refresh_token=refresh_row),
    ]
    trail = events(end_user, portal, 2)
    together = orm_internals.ENABLED and orm_internals.can_insert_together(USING)
    with django_assert_num_queries(1 if together else 5):
        save_together([id_row, access_row, refresh_row], [written, trail], USING)
    assert connections[USING].vendor != "postgresql" or together  # the CI cells' path
    for row in (id_row, access_row, refresh_row, *written, *trail):
        assert row.pk is not None
        assert (row._state.adding, row._state.db) == (False, USING)
    # The instances know their foreign keys, as after save(), and so does the database.
    assert (access_row.id_token_id, refresh_row.access_token_id) == (id_row.pk, access_row.pk)
    assert get_access_token_model().objects.get(pk=access_row.pk).id_token_id == id_row.pk
    assert get_refresh_token_model().objects.get(pk=refresh_row.pk).access_token_id == access_row.pk
    assert get_id_token_model().objects.get(pk=id_row.pk).jti == id_row.jti
    stored = {row.pk: row for row in ExchangedToken.objects.filter(pk__in=[row.pk for row in written])}
    assert [
        (stored[row.pk].id_token_id, stored[row.pk].access_token_id, stored[row.pk].refresh_token_id)
        for row in written
    ] == [(id_row.pk, None, None), (None, access_row.pk, None), (None, None, refresh_row.pk)]
    assert [row.id_token_id for row in written] == [id_row.pk, None, None]
    assert get_access_token_model().objects.get(pk=access_row.pk).token_checksum == access_row.token_checksum


def test_a_token_row_someone_listens_to_is_saved_with_its_signals(end_user, portal):
    """Whenever a ``pre_save`` or ``post_save`` receiver listens to one of DOT's token models, its
    rows go through ``save()`` as before the one-statement write: the receivers see each row."""
    from django.db.models.signals import post_save, pre_save

    from token_exchange.constants import ID_TOKEN_TYPE
    from token_exchange.db.inserts import save_together

    seen: list[tuple[str, Any, bool]] = []

    def before(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(("pre", instance.id_token_id, instance.pk is None))

    def after(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        seen.append(("post", instance.pk, created))

    AccessToken = get_access_token_model()
    id_row, access_row, _refresh_row = token_rows(end_user, portal)
    written = [
        exchanged(ID_TOKEN_TYPE, id_token=id_row),
        exchanged(ACCESS_TOKEN_TYPE, access_token=access_row),
    ]
    pre_save.connect(before, sender=AccessToken)
    post_save.connect(after, sender=AccessToken)
    try:
        save_together([id_row, access_row], [written, events(end_user, portal, 1)], USING)
    finally:
        pre_save.disconnect(before, sender=AccessToken)
        post_save.disconnect(after, sender=AccessToken)
    assert seen == [("pre", id_row.pk, True), ("post", access_row.pk, True)]
    assert ExchangedToken.objects.get(pk=written[1].pk).access_token_id == access_row.pk


def test_dots_token_models_are_written_in_the_one_statement():
    """The fast path's precondition holds for DOT's own token models (else the budgets fail)."""
    from oauth2_provider.models import get_id_token_model, get_refresh_token_model

    for model in (get_id_token_model(), get_access_token_model(), get_refresh_token_model()):
        assert orm_internals.save_is_a_plain_insert(model), model


@pytest.mark.parametrize(
    "change",
    ["save_base overridden", "order_with_respect_to", "a field's own pre_save", "the manager's _insert"],
)
def test_a_model_whose_save_does_more_than_insert_keeps_its_save(end_user, portal, monkeypatch, change):
    """What ``save()`` does beyond the INSERT is kept: a patched ``save_base`` (django-model-utils'
    ``FieldTracker`` does it), ``order_with_respect_to``, a field whose ``pre_save`` may read
    anything, a manager whose ``_insert`` differs: each sends the token rows through ``save()``."""
    from token_exchange.constants import ID_TOKEN_TYPE
    from token_exchange.db.inserts import save_together

    AccessToken = get_access_token_model()
    calls: list[Any] = []
    if change == "save_base overridden":
        original = AccessToken.save_base

        def save_base(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(self)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(AccessToken, "save_base", save_base)
    elif change == "order_with_respect_to":
        monkeypatch.setattr(AccessToken._meta, "order_with_respect_to", AccessToken._meta.get_field("user"))
    elif change == "a field's own pre_save":
        field = AccessToken._meta.get_field("scope")
        monkeypatch.setattr(
            type(field), "pre_save", lambda self, instance, add: getattr(instance, self.attname)
        )
    else:
        own = type("OwnInsert", (QuerySet,), {"_insert": lambda self, *args, **kwargs: None})
        monkeypatch.setattr(AccessToken._base_manager, "_queryset_class", own)
    orm_internals.save_is_a_plain_insert.cache_clear()
    try:
        assert not orm_internals.save_is_a_plain_insert(AccessToken)
        if change == "save_base overridden":
            id_row, access_row, _refresh_row = token_rows(end_user, portal)
            written = [
                exchanged(ID_TOKEN_TYPE, id_token=id_row),
                exchanged(ACCESS_TOKEN_TYPE, access_token=access_row),
            ]
            save_together([id_row, access_row], [written, events(end_user, portal, 1)], USING)
            assert calls == [access_row]
            assert ExchangedToken.objects.get(pk=written[1].pk).access_token_id == access_row.pk
    finally:
        monkeypatch.undo()
        orm_internals.save_is_a_plain_insert.cache_clear()
    assert orm_internals.save_is_a_plain_insert(AccessToken)


def test_an_expression_value_or_a_to_field_reference_keeps_the_rows_apart(end_user, portal, monkeypatch):
    """A value the ORM compiles (``Now()``) is written by ``save()``, not as a parameter; a
    foreign key to an unsaved row that names another column than its primary key (``to_field``)
    could not read it from the earlier part's ``RETURNING`` and is refused for the one statement."""
    from django.db.models.functions import Now
    from oauth2_provider.models import get_id_token_model

    from token_exchange.constants import ID_TOKEN_TYPE
    from token_exchange.db.inserts import save_together

    id_row, access_row, _refresh_row = token_rows(end_user, portal)
    assert orm_internals.rows_insert_plainly([id_row, access_row])
    access_row.expires = Now()
    assert not orm_internals.rows_insert_plainly([id_row, access_row])
    written = [
        exchanged(ID_TOKEN_TYPE, id_token=id_row),
        exchanged(ACCESS_TOKEN_TYPE, access_token=access_row),
    ]
    save_together([id_row, access_row], [written, events(end_user, portal, 1)], USING)
    stored = get_access_token_model().objects.get(pk=access_row.pk)
    assert stored.expires is not None
    assert stored.id_token_id == id_row.pk

    id_row, access_row, _refresh_row = token_rows(end_user, portal)
    field = get_access_token_model()._meta.get_field("id_token")
    monkeypatch.setitem(
        field.__dict__, "foreign_related_fields", (get_id_token_model()._meta.get_field("jti"),)
    )
    assert not orm_internals.rows_insert_plainly([id_row, access_row])

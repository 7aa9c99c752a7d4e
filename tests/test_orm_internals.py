"""``orm_internals``, the one module on Django's private ORM internals: on the installed Django (each
tox cell runs one supported version), its compiled lookups and plain INSERT give exactly the rows
the public ORM gives (field values, related objects attached, ``_state``), and it is enabled on
exactly the versions CI tests."""

from __future__ import annotations

import configparser
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth import get_user_model
from django.db import connections, models, router
from oauth2_provider.models import get_access_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.db import inserts, orm_internals
from token_exchange.db.lookups import PreparedLookup
from token_exchange.issuance import lineage
from token_exchange.models import (
    AuditEvent,
    ClientKey,
    ClientPolicy,
    ExchangedToken,
    ImpersonatorGrant,
    SecuritySettings,
)

AccessToken = get_access_token_model()
pytestmark = pytest.mark.django_db
compiled_only = pytest.mark.skipif(not orm_internals.ENABLED, reason="internals disabled on this Django")


def test_enabled_on_exactly_the_django_versions_ci_tests() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(Path(__file__).resolve().parent.parent / "tox.ini")
    tested = {
        (int(major), int(minor))
        for major, minor in re.findall(r"django(\d)(\d+)\s*:", tox["testenv"]["deps"])
    }
    assert tested == orm_internals.CHECKED_AGAINST, "tox.ini's Django factors and CHECKED_AGAINST differ"
    assert (django.VERSION[:2] in orm_internals.CHECKED_AGAINST) == orm_internals.ENABLED


def state(instance: Any) -> dict[str, Any]:
    """What ``_state`` says about a row (``db``, ``adding``; from Django 6.1 its fetch mode and
    how many peers it was fetched with), without the cache of related rows."""
    values = {
        key: value for key, value in vars(instance._state).items() if key not in ("fields_cache", "peers")
    }
    values["peers"] = len(instance._state.__dict__.get("peers", ()))
    return values


def snapshot(instance: Any, seen: frozenset[int] = frozenset()) -> Any:
    """A row as plain values: its fields, its ``_state`` and, recursively, the related rows
    attached to it (a row met again on the way down is named, not followed)."""
    if instance is None:
        return None
    if id(instance) in seen:
        return ("back to", type(instance).__name__, instance.pk)
    seen = seen | {id(instance)}
    return {
        "type": type(instance),
        "fields": {key: value for key, value in vars(instance).items() if key != "_state"},
        "state": state(instance),
        "related": {
            name: snapshot(related, seen) for name, related in sorted(instance._state.fields_cache.items())
        },
    }


def both_paths(lookup: PreparedLookup[Any], *values: Any) -> tuple[list[Any], list[Any]]:
    model = lookup._queryset().model
    compiled = lookup.compiled.rows(model, router.db_for_read(model), values)
    return compiled, lookup.orm_rows(*values)


def assert_identical(lookup: PreparedLookup[Any], *values: Any, expect: int = 1) -> list[Any]:
    compiled, orm = both_paths(lookup, *values)
    assert len(compiled) == expect
    assert [snapshot(row) for row in compiled] == [snapshot(row) for row in orm]
    return compiled


def tokens() -> PreparedLookup[Any]:
    """``tokens.access_token``'s lookup: the token with everything its claims are made of."""
    return PreparedLookup(
        lambda: AccessToken.objects.select_related(
            "user", "application", "exchanged", *lineage.access_token_related()
        ),
        "token_checksum",
    )


@compiled_only
def test_an_exchanged_token_with_its_user_client_exchange_and_refresh_token(
    token_endpoint, portal, user_tokens, django_assert_num_queries
):
    response = token_endpoint.exchange(
        portal, subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    )
    assert response.status_code == 200, response.json()
    issued = AccessToken.objects.get(exchanged__isnull=False)
    with django_assert_num_queries(2):
        (token,) = assert_identical(tokens(), issued.token_checksum)
    with django_assert_num_queries(0):
        assert token.exchanged.access_token is token
        assert token.user.pk == issued.user_id
        assert token.application.client_id == portal.client_id


@compiled_only
def test_a_login_token_without_an_exchange(user_tokens, django_assert_num_queries):
    login = AccessToken.objects.get()
    (token,) = assert_identical(tokens(), login.token_checksum)
    relation = lineage.refresh_token_relation()
    with django_assert_num_queries(0), pytest.raises(ExchangedToken.DoesNotExist):
        token.exchanged  # noqa: B018 (known absent on both paths: no query)
    if relation is not None:
        with django_assert_num_queries(0):
            assert getattr(token, relation[1]).access_token is token


@compiled_only
def test_a_token_without_user_or_client_and_a_missing_token(end_user):
    orphan = AccessToken.objects.create(token="orphan", scope="read", expires="2099-01-01T00:00:00Z")
    assert_identical(tokens(), AccessToken.objects.get(pk=orphan.pk).token_checksum)
    assert_identical(tokens(), "0" * 64, expect=0)


@compiled_only
def test_client_keys_with_the_clients_policy_two_levels_down(portal, crm):
    for application, kid in ((portal, "a"), (portal, "b"), (crm, "c")):
        ClientKey.objects.create(application=application, kid=kid, public_key="-----BEGIN PUBLIC KEY-----")
    ClientPolicy.objects.filter(application=crm).delete()
    keys = PreparedLookup(
        lambda: ClientKey.objects.select_related("application__token_exchange_policy").order_by("kid"),
        "application__client_id",
    )
    assert_identical(keys, portal.client_id, expect=2)
    (key,) = assert_identical(keys, crm.client_id)
    with pytest.raises(ClientPolicy.DoesNotExist):
        key.application.token_exchange_policy  # noqa: B018


@compiled_only
def test_plain_rows_by_primary_key_and_by_foreign_key(end_user, support, acme):
    User = get_user_model()
    assert_identical(PreparedLookup(lambda: User._default_manager.all(), "pk"), end_user.pk)
    assert_identical(
        PreparedLookup(lambda: User._default_manager.all(), "pk"), end_user.pk, support.pk, expect=2
    )
    SecuritySettings.load()
    assert_identical(
        PreparedLookup(lambda: SecuritySettings.objects.all(), "pk"), SecuritySettings.SINGLETON_PK
    )
    ImpersonatorGrant.objects.create(user=support, role=ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    grants = PreparedLookup(lambda: ImpersonatorGrant.objects.order_by("pk"), "user")
    assert_identical(grants, support.pk, end_user.pk, expect=ImpersonatorGrant.objects.count())
    memberships = PreparedLookup(lambda: User.groups.through.objects.order_by("pk"), "user")
    assert_identical(memberships, support.pk, expect=1)


@compiled_only
def test_deferred_fields_stay_deferred(end_user):
    users = PreparedLookup(lambda: get_user_model()._default_manager.only("username"), "pk")
    (user,) = assert_identical(users, end_user.pk)
    assert "password" not in vars(user)


@compiled_only
@pytest.mark.skipif(django.VERSION < (6, 1), reason="fetch modes came with Django 6.1")
@pytest.mark.parametrize("mode", ["FETCH_ONE", "FETCH_PEERS", "FETCH_RAISE"])
def test_the_querysets_fetch_mode_reaches_every_row_as_in_the_orm(user_tokens, token_endpoint, portal, mode):
    """Django 6.1: ``from_db`` gets the queryset's fetch mode, and peers are tracked per query."""
    fetch_mode = getattr(models, mode)
    token_endpoint.exchange(
        portal, subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    )
    lookup = PreparedLookup(
        lambda: AccessToken.objects.select_related("user", "exchanged").fetch_mode(fetch_mode).order_by("pk"),
        "user",
    )
    user_id = AccessToken.objects.values_list("user_id", flat=True).first()
    for _ in range(2):  # the second call reuses the compiled statement: peers are not carried over
        rows = assert_identical(lookup, user_id, expect=AccessToken.objects.filter(user_id=user_id).count())
        assert all(row._state.fetch_mode is fetch_mode for row in rows)
        assert all(row.user._state.fetch_mode is fetch_mode for row in rows)


def test_on_other_django_versions_lookups_are_the_orms_own(end_user, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(orm_internals, "ENABLED", False)
    lookup = PreparedLookup(lambda: get_user_model()._default_manager.all(), "pk")
    with django_assert_num_queries(1):
        assert lookup.get(end_user.pk) == end_user
    assert not lookup.compiled._compiled, "the compiled path ran"


# Inserts: ``orm_internals.insert_rows`` against ``bulk_create``.

USING = router.db_for_write(AuditEvent)


def written(model: type[models.Model], rows: list[Any]) -> list[dict[str, Any]]:
    """The rows as the database holds them, without what differs by nature (ids, timestamps,
    ``jti``, the tokens each row was made for)."""
    stored = model._default_manager.filter(pk__in=[row.pk for row in rows]).order_by("pk").values()
    differ = ("id", "created_at", "jti", "access_token_id")
    return [{k: v for k, v in row.items() if k not in differ} for row in stored]


def audit_events(end_user: Any, portal: Any) -> list[AuditEvent]:
    return [
        AuditEvent(
            event_type=AuditEvent.EventType.TOKEN_EXCHANGED,
            subject=end_user,
            application=portal,
            payload={"n": n, "note": "é ' \" %s"},
            client_ip="2001:db8::1",
        )
        for n in range(2)
    ]


def new_token(end_user: Any) -> Any:
    return AccessToken.objects.create(
        user=end_user, token=uuid.uuid4().hex, scope="read", expires="2099-01-01T00:00:00Z"
    )


def exchanged_tokens(*tokens: Any) -> list[ExchangedToken]:
    return [
        ExchangedToken(
            access_token=token,
            jti=uuid.uuid4().hex,
            issued_token_type=ACCESS_TOKEN_TYPE,
            audience=["https://aggregates.example.com/"],
            resource=[],
            act={"sub": str(n)},
        )
        for n, token in enumerate(tokens)
    ]


@compiled_only
@pytest.mark.parametrize("kind", ["audit", "exchanged"])
def test_a_plain_insert_writes_what_bulk_create_writes(
    end_user, portal, user_tokens, kind, django_assert_num_queries
):
    make: Callable[[], list[Any]] = (
        (lambda: audit_events(end_user, portal))
        if kind == "audit"
        else (lambda: exchanged_tokens(new_token(end_user), new_token(end_user)))
    )
    ours, theirs = make(), make()
    model = type(ours[0])
    plain = connections[USING].features.can_return_rows_from_bulk_insert  # PostgreSQL, SQLite 3.35+
    assert orm_internals.can_insert_plainly(model, USING) == plain
    with django_assert_num_queries(1):
        inserts.insert_rows(ours, USING)
    model._default_manager.using(USING).bulk_create(theirs)
    assert written(model, ours) == written(model, theirs)
    for mine, bulk in zip(ours, theirs, strict=True):
        assert isinstance(mine.pk, int)
        stored = model._default_manager.get(pk=mine.pk)
        assert [getattr(stored, field.attname) for field in model._meta.concrete_fields] == [
            getattr(mine, field.attname) for field in model._meta.concrete_fields
        ]
        assert state(mine) == state(bulk)


@compiled_only
def test_an_unsaved_related_object_is_refused_as_bulk_create_refuses_it(end_user, portal):
    unsaved = AccessToken(token="never-saved", scope="read", expires="2099-01-01T00:00:00Z")
    record = exchanged_tokens(unsaved)
    with pytest.raises(ValueError, match="unsaved related object"):
        orm_internals.insert_rows(record, USING)


def test_a_model_whose_insert_django_writes_otherwise_is_left_to_bulk_create(monkeypatch):
    """A field with a database default, or one the database fills in, is not plain VALUES.
    (The answer is kept per model, as fields do not change once Django has set up; this test
    changes them, so it forgets the answer each time.)"""
    forget = orm_internals._fields_insert_plainly.cache_clear
    field = AuditEvent._meta.get_field("client_ip")
    forget()
    monkeypatch.setattr(field, "db_default", models.Value("127.0.0.1"))
    assert not orm_internals.can_insert_plainly(AuditEvent, USING)
    monkeypatch.undo()
    forget()
    monkeypatch.setattr(AuditEvent._meta, "db_returning_fields", [AuditEvent._meta.pk, field], raising=False)
    assert not orm_internals.can_insert_plainly(AuditEvent, USING)
    monkeypatch.undo()
    forget()
    returning = connections[USING].features.can_return_rows_from_bulk_insert
    assert orm_internals.can_insert_plainly(AuditEvent, USING) == returning


@compiled_only
def test_annotations_are_set_on_each_row_as_the_orm_sets_them(portal, end_user, acme):
    """The client with its policy and the instance's security settings (``load_client``), and a
    count with an alias beside it: every annotation and ``extra()`` column reaches the rows."""
    from django.contrib.auth.models import Group
    from django.db.models import Count, Value
    from oauth2_provider.models import get_application_model

    from token_exchange.models import SecuritySettings

    SecuritySettings.load()
    clients = PreparedLookup(
        lambda: SecuritySettings.with_security_settings(
            get_application_model().objects.select_related("token_exchange_policy")
        ),
        "client_id",
    )
    (client,) = assert_identical(clients, portal.client_id)
    assert SecuritySettings.of(client).token_exchange_enabled is True
    end_user.groups.add(acme)
    groups = PreparedLookup(
        lambda: Group.objects.alias(x=Value(1)).annotate(members=Count("user"), y=Value(2)), "pk"
    )
    (group,) = assert_identical(groups, acme.pk)
    assert (group.members, group.y) == (acme.user_set.count(), 2)
    extra = PreparedLookup(lambda: Group.objects.extra(select={"one": "1"}), "pk")
    assert assert_identical(extra, acme.pk)[0].one == 1


@compiled_only
def test_a_prepared_query_of_plain_values_gives_the_orms_rows(
    support, end_user_in_acme, acme, django_assert_num_queries
):
    """The impersonation facts' UNION ALL (grants of two users, the groups of one), compiled once
    and run with new values, against the same queryset built with the values."""
    from token_exchange.impersonation import facts

    ImpersonatorGrant.objects.create(user=end_user_in_acme, role=ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    for query in (facts._GRANTS_AND_GROUPS, facts._GRANTS):
        for values in ((support.pk, end_user_in_acme.pk), (end_user_in_acme.pk, support.pk), (support.pk, 0)):
            with django_assert_num_queries(1):
                compiled = query.compiled.rows(router.db_for_read(ImpersonatorGrant), values)
            assert sorted(compiled, key=repr) == sorted(query.orm_rows(*values), key=repr)
            assert compiled or values[1] == 0

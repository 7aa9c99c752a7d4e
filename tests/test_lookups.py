"""``PreparedLookup``: the token endpoint's hot reads, compiled once per connection (on the Django
versions CI tests; the plain ORM elsewhere), must find exactly what the ORM finds (values
converted, related rows attached) and cost one statement. ``tests/test_orm_internals.py`` compares
the two paths row by row."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from oauth2_provider.models import get_access_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.db import orm_internals
from token_exchange.db.lookups import PreparedLookup, UnsupportedQuerySet
from token_exchange.models import ExchangedToken, SecuritySettings

AccessToken = get_access_token_model()
pytestmark = pytest.mark.django_db


def tokens_by_checksum() -> PreparedLookup[Any]:
    return PreparedLookup(
        lambda: AccessToken.objects.select_related("user", "application", "exchanged"), "token_checksum"
    )


def fields(instance: Any) -> dict[str, Any]:
    return {key: value for key, value in vars(instance).items() if key != "_state"}


def assert_same_row(prepared: Any, orm: Any) -> None:
    assert type(prepared) is type(orm)
    assert fields(prepared) == fields(orm)
    assert prepared._state.db == orm._state.db
    assert prepared._state.adding is False
    for related in ("user", "application", "exchanged"):
        ours, theirs = getattr(prepared, related, None), getattr(orm, related, None)
        assert (ours is None) == (theirs is None), related
        if theirs is not None:
            assert fields(ours) == fields(theirs), related


def test_finds_what_the_orm_finds_for_an_exchanged_token(token_endpoint, portal, user_tokens):
    response = token_endpoint.exchange(
        portal, subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    )
    assert response.status_code == 200, response.json()
    issued = AccessToken.objects.select_related("user", "application", "exchanged").get(
        exchanged__isnull=False
    )
    found = tokens_by_checksum().get(issued.token_checksum)
    assert_same_row(found, issued)
    # Converted as the ORM converts them: an aware datetime, JSON lists, the exchange's audience.
    assert found.expires.tzinfo is not None
    assert isinstance(found.exchanged.audience, list)
    assert portal.client_id in found.exchanged.audience
    assert isinstance(found.exchanged, ExchangedToken)


def test_finds_what_the_orm_finds_for_a_login_token_without_an_exchange(user_tokens):
    login = AccessToken.objects.select_related("user", "application", "exchanged").get()
    found = tokens_by_checksum().get(login.token_checksum)
    assert_same_row(found, login)
    with pytest.raises(ExchangedToken.DoesNotExist):
        found.exchanged  # noqa: B018 (the reverse one-to-one is known to be absent, as the ORM has it)


def test_a_token_without_client_or_user_comes_back_with_none(end_user):
    orphan = AccessToken.objects.create(token="orphan", scope="read", expires="2099-01-01T00:00:00Z")
    found = tokens_by_checksum().get(AccessToken.objects.get(pk=orphan.pk).token_checksum)
    assert found is not None
    assert found.pk == orphan.pk
    assert found.user is None
    assert found.application is None


def test_no_row_is_none_and_so_is_a_value_no_column_can_hold(end_user, django_user_model):
    assert tokens_by_checksum().get("0" * 64) is None
    users = PreparedLookup(lambda: django_user_model.objects.all(), "pk")
    assert users.get(end_user.pk).username == end_user.username
    assert users.get(end_user.pk + 1000) is None
    assert users.get(99999999999999999999) is None  # SQLite's driver overflows; PostgreSQL finds none


@pytest.mark.skipif(not orm_internals.ENABLED, reason="the plain ORM on this Django: nothing compiled")
def test_one_statement_each_time_and_sql_compiled_once_per_connection(
    end_user, django_assert_num_queries, monkeypatch
):
    compiled = []
    lookup = PreparedLookup(lambda: SecuritySettings.objects.all(), "pk")
    original = lookup.compiled._compile
    monkeypatch.setattr(lookup.compiled, "_compile", lambda *args: compiled.append(args) or original(*args))
    SecuritySettings.load()
    for _ in range(3):
        with django_assert_num_queries(1):
            assert lookup.get(SecuritySettings.SINGLETON_PK).pk == SecuritySettings.SINGLETON_PK
    assert len(compiled) == 1


@pytest.mark.skipif(not orm_internals.ENABLED, reason="the plain ORM on this Django: nothing compiled")
@pytest.mark.django_db(transaction=True)
def test_each_thread_compiles_for_its_own_connection(end_user, django_user_model):
    lookup = PreparedLookup(lambda: django_user_model.objects.all(), "pk")
    assert lookup.get(end_user.pk) is not None
    found: list[Any] = []

    def other_thread() -> None:
        try:
            found.append(lookup.get(end_user.pk))
            found.append(len(lookup.compiled._compiled))
        finally:
            # This thread's own connection. Django's SQLite backend ignores close() on an
            # in-memory database (closing the last connection would drop it); the test's own
            # connection keeps it alive, so close this one for real, or Python 3.13 reports an
            # unclosed sqlite3 connection when the thread's wrapper is collected.
            BaseDatabaseWrapper.close(connections[router.db_for_read(django_user_model)])

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert found[0].username == end_user.username
    assert found[1] == 2  # this thread's connection and the other's


@pytest.fixture(params=["compiled", "orm"])
def path(request, monkeypatch):
    """Each behaviour on both paths: the compiled one, and the ORM's (other Django versions)."""
    monkeypatch.setattr(orm_internals, "ENABLED", orm_internals.ENABLED and request.param == "compiled")
    return request.param


def test_several_values_in_one_statement_in_the_querysets_order(
    end_user, mallory, django_user_model, django_assert_num_queries, path
):
    users = PreparedLookup(lambda: django_user_model.objects.order_by("-username"), "pk")
    with django_assert_num_queries(1):
        found = users.rows(end_user.pk, mallory.pk, end_user.pk + mallory.pk + 1000)
    assert [user.username for user in found] == sorted([mallory.username, end_user.username], reverse=True)
    with django_assert_num_queries(0):
        assert users.rows() == []


def test_a_lookup_across_a_relation_attaches_the_related_rows(
    end_user, user_tokens, portal, django_assert_num_queries, path
):
    lookup = PreparedLookup(
        lambda: AccessToken.objects.select_related("application"), "application__client_id"
    )
    with django_assert_num_queries(1):
        (token,) = lookup.rows(portal.client_id)
        assert token.application.client_id == portal.client_id
    assert token._state.db == router.db_for_read(AccessToken)


@pytest.mark.skipif(not orm_internals.ENABLED, reason="the plain ORM on this Django: nothing to refuse")
@pytest.mark.parametrize(
    ("queryset", "reason"),
    [
        (lambda: Group.objects.prefetch_related("permissions"), "prefetches"),
        (lambda: Group.objects.values("pk"), "model instances"),
        (lambda: Group.objects.using("default"), "using()"),
    ],
)
def test_a_queryset_whose_rows_the_compiled_path_would_change_is_refused(end_user, queryset, reason):
    """Nothing ModelIterable adds after the SQL is silently dropped: such a lookup is refused."""
    with pytest.raises(UnsupportedQuerySet, match=reason.replace("(", r"\(").replace(")", r"\)")):
        PreparedLookup(queryset, "pk").get(1)


@pytest.mark.skipif(not orm_internals.ENABLED, reason="the plain ORM on this Django: nothing to refuse")
def test_a_related_managers_queryset_is_refused(end_user):
    """A reverse foreign key's manager sets the known owner on every row it returns."""
    with pytest.raises(UnsupportedQuerySet, match="related manager"):
        PreparedLookup(lambda: end_user.impersonator_grants.all(), "pk").get(1)

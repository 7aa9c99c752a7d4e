"""``PreparedLookup``: the token endpoint's hot reads, compiled once per connection, must find
exactly what the ORM finds (values converted, related rows attached) and cost one statement."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from oauth2_provider.models import get_access_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.lookups import PreparedLookup
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


def test_one_statement_each_time_and_sql_compiled_once_per_connection(
    end_user, django_assert_num_queries, monkeypatch
):
    compiled = []
    lookup = PreparedLookup(lambda: SecuritySettings.objects.all(), "pk")
    original = lookup._compile
    monkeypatch.setattr(lookup, "_compile", lambda *args: compiled.append(args) or original(*args))
    SecuritySettings.load()
    for _ in range(3):
        with django_assert_num_queries(1):
            assert lookup.get(SecuritySettings.SINGLETON_PK).pk == SecuritySettings.SINGLETON_PK
    assert len(compiled) == 1


@pytest.mark.django_db(transaction=True)
def test_each_thread_compiles_for_its_own_connection(end_user, django_user_model):
    lookup = PreparedLookup(lambda: django_user_model.objects.all(), "pk")
    assert lookup.get(end_user.pk) is not None
    found: list[Any] = []

    def other_thread() -> None:
        try:
            found.append(lookup.get(end_user.pk))
            found.append(len(lookup._compiled))
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

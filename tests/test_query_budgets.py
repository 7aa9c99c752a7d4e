"""Query budgets of the token endpoint: what one request costs in SQL statements, and that the
cost does not grow with the tables around it (``make bench`` measures the time).

Every count includes the transaction's own statements (BEGIN/COMMIT, or a savepoint inside the
test's transaction). Issue 19 asked for a plain exchange in at most 6 on PostgreSQL and an
impersonation in at most 9; they take 5 and 7. The client is read with its policy and the
instance's security settings in one statement; the impersonation rules' facts (both users'
grants, the subject's groups) are one more; everything an exchange writes (DOT's token rows, the
``ExchangedToken`` rows and the audit rows that name them) is one statement. A database without
data-modifying ``WITH`` (SQLite) writes each token row, the records and the audit rows apart.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import router
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.db import orm_internals
from token_exchange.models import AuditEvent, ImpersonatorGrant, SecuritySettings

from .client_jwt import assertion, assertion_form, register_key
from .conftest import make_app

PLAIN_EXCHANGE = 5
JWT_WITH_ID_TOKEN = 5
IMPERSONATION = 7
# With private_key_jwt the client is read with its keys, in one query, and the security settings
# by themselves.
IMPERSONATION_PRIVATE_KEY_JWT = 8
# Where the writes go apart (SQLite): one statement per token row (an access token, and an ID
# token where one is issued) and one more for the records, beside the audit rows' own.

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def settings_row(db: None) -> None:
    """A running site's state: the settings row exists (the first request creates it)."""
    SecuritySettings.load()


def crowd(django_user_model: Any, portal: Any, support: Any, end_user: Any, acme: Any) -> None:
    """Fill every table a token request reads with rows it must not read: other users, their
    tokens and grants, organizations, clients, and audit rows."""
    AccessToken = get_access_token_model()
    users = django_user_model.objects.bulk_create(
        django_user_model(username=f"crowd-{n}", email=f"crowd-{n}@example.com") for n in range(60)
    )
    groups = Group.objects.bulk_create(Group(name=f"org-{n}") for n in range(10))
    for user in users[:30]:
        user.groups.add(acme, *groups[:3])
    end_user.groups.add(*groups[:5])
    ImpersonatorGrant.objects.bulk_create(
        ImpersonatorGrant(user=user, role=ImpersonatorGrant.Role.END_USER_IMPERSONATOR, organization=acme)
        for user in users[:20]
    )
    ImpersonatorGrant.objects.bulk_create(
        ImpersonatorGrant(user=support, role=ImpersonatorGrant.Role.END_USER_IMPERSONATOR, organization=group)
        for group in groups[:4]
    )
    others = [make_app(f"other-{n}") for n in range(5)]
    expires = timezone.now() + datetime.timedelta(hours=1)
    AccessToken.objects.bulk_create(
        AccessToken(
            user=user,
            application=(portal, *others)[n % 6],
            token=uuid.uuid4().hex,
            token_checksum=uuid.uuid4().hex + uuid.uuid4().hex,
            expires=expires,
            scope="openid read",
        )
        for n, user in enumerate(users * 3)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(event_type=AuditEvent.EventType.TOKEN_EXCHANGED, subject=user, application=portal)
        for user in users * 5
    )


def writes_together() -> bool:
    using = router.db_for_write(AuditEvent)
    return orm_internals.ENABLED and orm_internals.can_insert_together(using)


def statements(assert_max: Any, budget: int, send: Any, *, token_rows: int) -> tuple[Any, int]:
    """Send, within ``budget`` statements (``token_rows`` + 1 more where the writes go apart)."""
    with assert_max(budget if writes_together() else budget + token_rows + 1) as captured:
        response = send()
    assert response.status_code == 200, response.json()
    return response, len(captured.captured_queries)


@pytest.fixture
def crowded(django_user_model, portal, support, end_user_in_acme, acme):
    return lambda: crowd(django_user_model, portal, support, end_user_in_acme, acme)


def test_plain_exchange_costs_at_most_5_statements_whatever_the_table_sizes(
    token_endpoint, portal, user_tokens, crowded, django_assert_max_num_queries
):
    def send():
        return token_endpoint.exchange(
            portal,
            subject_token=user_tokens["access_token"],
            subject_token_type=ACCESS_TOKEN_TYPE,
            scope="read",
        )

    response, small = statements(django_assert_max_num_queries, PLAIN_EXCHANGE, send, token_rows=1)
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE
    crowded()
    _response, large = statements(django_assert_max_num_queries, PLAIN_EXCHANGE, send, token_rows=1)
    assert large == small


def test_exchange_to_a_jwt_with_an_id_token_costs_at_most_5_statements(
    token_endpoint, portal, user_tokens, crowded, django_assert_max_num_queries
):
    def send():
        return token_endpoint.exchange(
            portal,
            subject_token=user_tokens["access_token"],
            subject_token_type=ACCESS_TOKEN_TYPE,
            requested_token_type=JWT_TYPE,
            scope="openid profile email",
        )

    response, small = statements(django_assert_max_num_queries, JWT_WITH_ID_TOKEN, send, token_rows=2)
    assert "id_token" in response.json()
    crowded()
    _response, large = statements(django_assert_max_num_queries, JWT_WITH_ID_TOKEN, send, token_rows=2)
    assert large == small


def impersonation_form(end_user: Any, support_tokens: dict[str, Any]) -> dict[str, str]:
    return {
        "subject_token": str(end_user.pk),
        "subject_token_type": USER_ID_TYPE,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": JWT_TYPE,
        "scope": "openid profile email",
    }


def test_impersonation_to_a_jwt_and_id_token_costs_at_most_7_statements(
    token_endpoint,
    portal,
    end_user_in_acme,
    support_tokens,
    impersonation_allowed,
    crowded,
    django_assert_max_num_queries,
):
    def send():
        return token_endpoint.exchange(portal, **impersonation_form(end_user_in_acme, support_tokens))

    response, small = statements(django_assert_max_num_queries, IMPERSONATION, send, token_rows=2)
    assert {"access_token", "id_token"} <= set(response.json())
    crowded()
    _response, large = statements(django_assert_max_num_queries, IMPERSONATION, send, token_rows=2)
    assert large == small


def test_impersonation_with_private_key_jwt_costs_no_more(
    token_endpoint,
    portal,
    end_user_in_acme,
    support_tokens,
    impersonation_allowed,
    crowded,
    django_assert_max_num_queries,
):
    key = register_key(portal)

    def send():
        form = {
            "grant_type": GRANT_TYPE,
            **impersonation_form(end_user_in_acme, support_tokens),
            **assertion_form(assertion(key)),
        }
        return token_endpoint.post(form)

    _response, small = statements(
        django_assert_max_num_queries, IMPERSONATION_PRIVATE_KEY_JWT, send, token_rows=2
    )
    crowded()
    register_key(portal)  # a second key: still one query for the client's keys
    _response, large = statements(
        django_assert_max_num_queries, IMPERSONATION_PRIVATE_KEY_JWT, send, token_rows=2
    )
    assert large == small

"""Every audit row an impersonated token produces names its actor in the ``actor`` column.

The admin's audit search and filters look at the column, not at the payload: a re-exchange of an
impersonated token (no ``actor_token``), its refresh, and a refused re-exchange must all be found
under the support user, who is the outermost ``act`` (RFC 8693 §4.1).
"""

from __future__ import annotations

from typing import Any

import pytest

from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, USER_ID_TYPE
from token_exchange.models import AuditEvent, SecuritySettings

from .adversarial import TokenClient, last_audit_pk

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]
EventType = AuditEvent.EventType


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def impersonated(
    http: TokenClient,
    portal: Any,
    impersonation_allowed: Any,
    support: Any,
    end_user_in_acme: Any,
    login: Any,
) -> dict[str, Any]:
    actor_tokens = login(support)
    response = http.exchange(
        portal,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=actor_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid offline_access read",
    )
    assert response.status_code == 200, response.text
    return response.json()


def rows_after(pk: int) -> list[tuple[str, Any, Any]]:
    return [
        (row.event_type, row.actor_id, row.subject_id)
        for row in AuditEvent.objects.filter(pk__gt=pk).order_by("pk")
    ]


def test_a_re_exchange_without_an_actor_token_names_the_actor(
    http, portal, impersonated, support, end_user_in_acme
):
    before = last_audit_pk()
    response = http.exchange(
        portal,
        subject_token=impersonated["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read",
    )
    assert response.status_code == 200, response.text
    assert rows_after(before) == [
        (EventType.TOKEN_EXCHANGED, support.pk, end_user_in_acme.pk),
        (EventType.USER_IMPERSONATED, support.pk, end_user_in_acme.pk),
    ]
    assert AuditEvent.objects.filter(actor=support, pk__gt=before).count() == 2


def test_a_refresh_of_an_impersonated_token_names_the_actor(
    http, portal, impersonated, support, end_user_in_acme
):
    before = last_audit_pk()
    response = http.post(
        {"grant_type": "refresh_token", "refresh_token": impersonated["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert response.status_code == 200, response.text
    assert rows_after(before) == [(EventType.USER_IMPERSONATED, support.pk, end_user_in_acme.pk)]


def test_a_refused_re_exchange_names_the_actor(http, portal, impersonated, support, end_user_in_acme):
    SecuritySettings.objects.update(allow_impersonation=False)
    before = last_audit_pk()
    response = http.post(
        {
            "grant_type": GRANT_TYPE,
            "subject_token": impersonated["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
        },
        auth=(portal.client_id, portal.plain_secret),
    )
    assert response.status_code == 400, response.text
    assert rows_after(before) == [(EventType.TOKEN_EXCHANGE_REFUSED, support.pk, end_user_in_acme.pk)]
    row = AuditEvent.objects.get(pk__gt=before)
    assert row.payload["actor"]["user_id"] == str(support.pk)


def test_an_act_from_another_issuer_fills_no_actor_column():
    """A foreign ``act`` names nobody here: the column stays empty rather than pointing at a
    local user who happens to share the id."""
    from token_exchange.issuance import audit

    context = audit.AuditContext(application=None, client_ip=None, issuer="https://idp.example/o")
    assert audit.actor_column(context, {"iss": "https://other.example", "sub": "1"}) == {"actor": None}
    assert audit.actor_column(context, {"iss": "https://idp.example/o", "sub": "1"}) == {"actor_id": "1"}
    assert audit.actor_column(context, None) == {"actor": None}

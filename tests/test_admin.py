"""The admin pages this milestone adds load, and the audit trail cannot be edited."""

from __future__ import annotations

import pytest
from django.test import Client

from token_exchange.models import AuditEvent, ImpersonatorGrant

from .conftest import grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(django_user_model) -> Client:
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(root)
    return client


def test_audit_events_are_read_only(admin_client_, support, end_user, portal):
    event = AuditEvent.objects.create(
        event_type=AuditEvent.EventType.USER_IMPERSONATED,
        actor=support,
        subject=end_user,
        application=portal,
        payload={"actor": {"issuer": "x", "user_id": str(support.pk)}},
    )
    listing = admin_client_.get("/admin/token_exchange/auditevent/")
    assert listing.status_code == 200
    assert b"User impersonated" in listing.content
    assert admin_client_.get("/admin/token_exchange/auditevent/add/").status_code == 403
    detail = f"/admin/token_exchange/auditevent/{event.pk}/change/"
    assert admin_client_.get(detail).status_code == 200  # view only
    assert admin_client_.post(detail, {"event_type": "token.exchanged"}).status_code == 403
    assert admin_client_.post(f"/admin/token_exchange/auditevent/{event.pk}/delete/").status_code == 403
    event.refresh_from_db()
    assert event.event_type == AuditEvent.EventType.USER_IMPERSONATED


def test_impersonator_grants_show_zitadel_role_names(admin_client_, support, django_user_model):
    admin_user = django_user_model.objects.create_user("iam-admin", "a@example.com", "pw")
    grant(admin_user, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    listing = admin_client_.get("/admin/token_exchange/impersonatorgrant/")
    assert listing.status_code == 200
    assert b"Org End User Impersonator" in listing.content
    assert b"IAM Admin Impersonator" in listing.content


def test_client_keys_are_validated_in_the_admin(admin_client_, portal):
    from token_exchange.client_keys import generate_key_pair
    from token_exchange.models import ClientKey

    pair = generate_key_pair("RS256")
    form = {"application": portal.pk, "kid": "k1", "algorithm": "RS256", "active": "on"}
    refused = admin_client_.post(
        "/admin/token_exchange/clientkey/add/", {**form, "public_key": pair.private_pem}
    )
    assert refused.status_code == 200
    assert "This is a private key" in refused.content.decode()
    assert not ClientKey.objects.exists()
    added = admin_client_.post(
        "/admin/token_exchange/clientkey/add/", {**form, "public_key": pair.public_pem}
    )
    assert added.status_code == 302
    assert ClientKey.objects.get().kid == "k1"
    assert admin_client_.get("/admin/token_exchange/clientkey/").status_code == 200

"""Every change to impersonator grants, client keys, client policies and the security-relevant
fields of an application writes one audit row, in the transaction of the change: who, what,
before and after, never a secret (issue 17, §6). Through the admin the actor is the admin user;
from code (the shell, a command) it is empty, and the row is still written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connections, router, transaction
from django.test import Client
from oauth2_provider.models import get_application_model

from token_exchange.client_keys import generate_key_pair
from token_exchange.models import AuditEvent, ClientKey, ClientPolicy, ImpersonatorGrant

from .client_jwt import register_key
from .conftest import application_admin, grant, make_app
from .test_admin import application_form

pytestmark = pytest.mark.django_db
Application = get_application_model()
EventType = AuditEvent.EventType
Role = ImpersonatorGrant.Role


@pytest.fixture
def root(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_browser(root: Any) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def backend(db: None) -> Any:
    """A confidential client whose fixture rows are already audited and cleared away."""
    app = make_app("backend", exchange=False)
    AuditEvent.objects.all().delete()
    return app


def page_form(app: Any, **policy: Any) -> dict[str, Any]:
    """The application page as the browser posts it back: the stored (hashed) secret as it is."""
    return {
        **application_form(app, **policy),
        "client_secret": Application.objects.get(pk=app.pk).client_secret,
    }


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("pk"))


def text(event: AuditEvent) -> str:
    return json.dumps(event.payload)


# --- Impersonator grants -------------------------------------------------------------------------


def test_a_grant_made_in_the_admin_is_audited_with_who_what_and_after(
    admin_browser, root, django_user_model, acme
):
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    response = admin_browser.post(
        "/admin/token_exchange/impersonatorgrant/add/",
        {"user": colleague.pk, "role": Role.END_USER_IMPERSONATOR, "organization": acme.pk},
    )
    assert response.status_code == 302
    row = ImpersonatorGrant.objects.get(user=colleague)
    [event] = events(EventType.IMPERSONATOR_GRANT_CHANGED)
    assert (event.actor, event.subject, event.client_ip) == (root, colleague, "127.0.0.1")
    assert event.payload == {
        "action": "created",
        "target": {"id": row.pk, "user_id": str(colleague.pk)},
        "changed_by": {"user_id": str(root.pk)},
        "before": None,
        "after": {
            "user_id": str(colleague.pk),
            "role": Role.END_USER_IMPERSONATOR,
            "organization_id": str(acme.pk),
            "granted_by_id": str(root.pk),
        },
    }


def test_changing_and_withdrawing_a_grant_are_audited_with_before_and_after(
    admin_browser, root, django_user_model, acme
):
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    row = grant(colleague, Role.END_USER_IMPERSONATOR, acme)
    AuditEvent.objects.all().delete()
    page = f"/admin/token_exchange/impersonatorgrant/{row.pk}/"
    changed = admin_browser.post(f"{page}change/", {"user": colleague.pk, "role": Role.ADMIN_IMPERSONATOR})
    assert changed.status_code == 302
    assert admin_browser.post(f"{page}delete/", {"post": "yes"}).status_code == 302
    change, deletion = events(EventType.IMPERSONATOR_GRANT_CHANGED)
    assert change.payload["action"] == "changed"
    assert change.payload["before"] == {
        "role": Role.END_USER_IMPERSONATOR,
        "organization_id": str(acme.pk),
        "granted_by_id": None,
    }
    assert change.payload["after"] == {
        "role": Role.ADMIN_IMPERSONATOR,
        "organization_id": None,
        "granted_by_id": str(root.pk),
    }
    assert deletion.payload["action"] == "deleted"
    assert deletion.payload["after"] is None
    assert deletion.payload["before"]["role"] == Role.ADMIN_IMPERSONATOR
    assert {change.actor, deletion.actor} == {root}


def test_a_grant_made_from_code_is_audited_without_an_actor(support):
    """The ``support`` fixture grants from code, as a shell or a command would."""
    [event] = events(EventType.IMPERSONATOR_GRANT_CHANGED)
    assert event.actor is None
    assert event.payload["changed_by"] is None
    assert event.payload["action"] == "created"
    assert event.subject == support


def test_the_row_is_in_the_transaction_of_the_change(django_user_model):
    user = django_user_model.objects.create_user("someone", "s@example.com", "pw")
    seen = []

    def grant_then_fail() -> None:
        with transaction.atomic(using=router.db_for_write(ImpersonatorGrant)):
            grant(user, Role.ADMIN_IMPERSONATOR)
            seen.extend(events(EventType.IMPERSONATOR_GRANT_CHANGED))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        grant_then_fail()
    assert len(seen) == 1
    assert not ImpersonatorGrant.objects.exists()
    assert not events(EventType.IMPERSONATOR_GRANT_CHANGED)


def test_deleting_a_user_in_the_admin_audits_their_grants_under_the_admin(
    admin_browser, root, django_user_model, acme
):
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    grant(colleague, Role.END_USER_IMPERSONATOR, acme)
    response = admin_browser.post(f"/admin/auth/user/{colleague.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    connections[
        router.db_for_write(AuditEvent)
    ].check_constraints()  # the row names a user who is gone: SET NULL, no dangling key
    [_created, deletion] = events(EventType.IMPERSONATOR_GRANT_CHANGED)
    assert deletion.actor == root
    assert deletion.subject is None
    assert deletion.payload["target"]["user_id"] == str(colleague.pk)


# --- Client keys and policies --------------------------------------------------------------------


def test_client_keys_are_audited_by_thumbprint_never_by_pem(admin_browser, root, backend):
    pair = generate_key_pair("RS256")
    added = admin_browser.post(
        "/admin/token_exchange/clientkey/add/",
        {
            "application": backend.pk,
            "kid": "k1",
            "algorithm": "RS256",
            "public_key": pair.public_pem,
            "active": "on",
        },
    )
    assert added.status_code == 302
    key = ClientKey.objects.get()
    page = f"/admin/token_exchange/clientkey/{key.pk}/"
    deactivated = admin_browser.post(
        f"{page}change/",
        {"application": backend.pk, "kid": "k1", "algorithm": "RS256", "public_key": pair.public_pem},
    )
    assert deactivated.status_code == 302
    assert admin_browser.post(f"{page}delete/", {"post": "yes"}).status_code == 302
    created, changed, deleted = events(EventType.CLIENT_KEY_CHANGED)
    assert created.payload["after"] == {
        "application_id": str(backend.pk),
        "kid": "k1",
        "algorithm": "RS256",
        "active": True,
        "expires_at": None,
        "thumbprint": pair.kid,  # the RFC 7638 thumbprint
    }
    assert created.payload["target"] == {"id": key.pk, "client_id": "backend", "kid": "k1"}
    assert (changed.payload["before"], changed.payload["after"]) == ({"active": True}, {"active": False})
    assert deleted.payload["before"]["thumbprint"] == pair.kid
    for event in (created, changed, deleted):
        assert (event.actor, event.application) == (root, backend)
        assert "BEGIN PUBLIC KEY" not in text(event)


def test_a_key_registered_from_code_is_audited(backend):
    key_file = register_key(backend)
    [event] = events(EventType.CLIENT_KEY_CHANGED)
    assert event.actor is None
    assert event.payload["after"]["thumbprint"] == key_file.kid


def test_the_policy_inline_on_the_application_page_is_audited(admin_browser, root, backend):
    response = admin_browser.post(
        application_admin(backend),
        page_form(backend, token_exchange_enabled="on"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    [event] = events(EventType.CLIENT_POLICY_CHANGED)
    assert event.actor == root
    assert event.application == backend
    assert event.payload["before"] == {"token_exchange_enabled": False}
    assert event.payload["after"] == {"token_exchange_enabled": True}
    # The application's own fields did not change: no application row.
    assert not events(EventType.APPLICATION_CHANGED)


# --- Applications --------------------------------------------------------------------------------


def test_a_new_client_secret_is_reported_as_changed_never_shown(admin_browser, root, backend):
    stored = Application.objects.get(pk=backend.pk).client_secret
    form = application_form(backend)
    form.update(client_secret="a-brand-new-secret", redirect_uris="https://backend.example.com/cb")
    response = admin_browser.post(application_admin(backend), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    [event] = events(EventType.APPLICATION_CHANGED)
    assert event.actor == root
    assert event.payload["before"]["client_secret"] == "set"
    assert event.payload["after"]["client_secret"] == "changed"
    assert event.payload["after"]["redirect_uris"] == "https://backend.example.com/cb"
    new_stored = Application.objects.get(pk=backend.pk).client_secret
    for secret in ("a-brand-new-secret", stored, new_stored, backend.plain_secret):
        assert secret not in text(event)


def test_saving_without_a_security_relevant_change_writes_nothing(admin_browser, backend):
    form = page_form(backend)
    form["name"] = "Backend renamed"  # shown to users, not trusted: not audited
    response = admin_browser.post(application_admin(backend), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not events(EventType.APPLICATION_CHANGED)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_type", "public"),
        ("authorization_grant_type", "client-credentials"),
        ("skip_authorization", False),
        ("post_logout_redirect_uris", "https://backend.example.com/bye"),
        ("allowed_origins", "https://backend.example.com"),
        ("algorithm", ""),
        ("hash_client_secret", False),
    ],
)
def test_each_security_relevant_field_is_audited_from_code(backend, field, value):
    setattr(backend, field, value)
    backend.save()
    [event] = events(EventType.APPLICATION_CHANGED)
    assert event.payload["action"] == "changed"
    assert field in event.payload["after"]
    if field != "hash_client_secret":
        assert event.payload["after"] == {field: value}


def test_the_owner_is_audited(backend, end_user):
    backend.user = end_user
    backend.save()
    [event] = events(EventType.APPLICATION_CHANGED)
    assert (event.payload["before"], event.payload["after"]) == (
        {"user_id": None},
        {"user_id": str(end_user.pk)},
    )


def test_creating_and_deleting_an_application_cascades_into_audited_rows(admin_browser, root, backend):
    register_key(backend)
    AuditEvent.objects.all().delete()
    meta = Application._meta
    response = admin_browser.post(
        f"/admin/{meta.app_label}/{meta.model_name}/{backend.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    connections[router.db_for_write(AuditEvent)].check_constraints()
    rows = {event.event_type: event for event in AuditEvent.objects.all()}
    assert set(rows) == {
        EventType.APPLICATION_CHANGED,
        EventType.CLIENT_KEY_CHANGED,
        EventType.CLIENT_POLICY_CHANGED,
    }
    for event in rows.values():
        assert event.payload["action"] == "deleted"
        assert event.actor == root
        assert event.application is None  # gone; its client_id stays in the payload
        assert event.payload["target"]["client_id"] == "backend"
    assert rows[EventType.APPLICATION_CHANGED].payload["before"]["client_secret"] == "set"


def test_a_new_application_is_audited_with_its_secret_as_set(db):
    app = make_app("fresh", exchange=None)
    [event] = events(EventType.APPLICATION_CHANGED)
    assert event.payload["action"] == "created"
    assert event.payload["after"]["client_secret"] == "set"
    assert event.payload["after"]["client_id"] == "fresh"
    assert app.plain_secret not in text(event)


# --- The audit admin shows them ------------------------------------------------------------------


def test_the_audit_admin_filters_by_type_and_finds_the_actor(admin_browser, root, django_user_model, backend):
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    admin_browser.post(
        "/admin/token_exchange/impersonatorgrant/add/",
        {"user": colleague.pk, "role": Role.ADMIN_IMPERSONATOR},
    )
    ClientPolicy.objects.filter(application=backend).get().delete()  # from code: no actor
    listing = admin_browser.get(
        f"/admin/token_exchange/auditevent/?event_type__exact={EventType.IMPERSONATOR_GRANT_CHANGED}"
    )
    assert [event.event_type for event in listing.context["cl"].result_list] == [
        EventType.IMPERSONATOR_GRANT_CHANGED
    ]
    by_actor = admin_browser.get("/admin/token_exchange/auditevent/?q=root")
    assert [event.event_type for event in by_actor.context["cl"].result_list] == [
        EventType.IMPERSONATOR_GRANT_CHANGED
    ]
    by_grantee = admin_browser.get("/admin/token_exchange/auditevent/?q=colleague")
    assert len(by_grantee.context["cl"].result_list) == 1
    by_type = admin_browser.get(
        f"/admin/token_exchange/auditevent/?event_type__exact={EventType.CLIENT_POLICY_CHANGED}"
    )
    [policy_event] = by_type.context["cl"].result_list
    page = admin_browser.get(f"/admin/token_exchange/auditevent/{policy_event.pk}/change/")
    assert page.status_code == 200
    assert b"Client policy changed" in page.content
    assert b"&quot;action&quot;: &quot;deleted&quot;" in page.content


def test_the_audit_filter_offers_the_change_event_types(admin_browser):
    page = admin_browser.get("/admin/token_exchange/auditevent/").content.decode()
    for label in (
        "Impersonator grant changed",
        "Client key changed",
        "Client policy changed",
        "Application changed",
    ):
        assert label in page


def test_a_permission_codename_for_the_swapped_application_model_exists():
    opts = Application._meta
    assert Permission.objects.filter(
        codename=f"change_{opts.model_name}", content_type__app_label=opts.app_label
    ).exists()


# --- The users' powers ---------------------------------------------------------------------------


def user_events() -> list[tuple[str, Any, Any, Any]]:
    return [
        (event.payload["action"], event.subject_id, event.payload["before"], event.payload["after"])
        for event in events(EventType.USER_CHANGED)
    ]


def test_a_sign_up_is_no_change_of_powers_but_a_new_superuser_is(django_user_model):
    django_user_model.objects.create_user("customer", "customer@example.com", "pw")
    assert user_events() == []
    boss = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    assert user_events() == [
        ("created", boss.pk, None, {"is_active": True, "is_staff": True, "is_superuser": True})
    ]


def test_the_flags_that_decide_who_may_be_impersonated_are_audited(admin_browser, root, end_user):
    response = admin_browser.post(
        f"/admin/auth/user/{end_user.pk}/change/",
        {
            "username": end_user.username,
            "email": end_user.email,
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
            **inline_management_forms(),
        },
    )
    assert response.status_code == 302, response.content[:2000]
    [event] = [event for event in events(EventType.USER_CHANGED) if event.subject == end_user]
    assert (event.actor, event.subject, event.payload["action"]) == (root, end_user, "changed")
    assert (event.payload["before"], event.payload["after"]) == ({"is_staff": False}, {"is_staff": True})


def inline_management_forms() -> dict[str, str]:
    """The user page's inlines (impersonator roles), posted empty."""
    prefix = "impersonator_grants"
    return {
        f"{prefix}-TOTAL_FORMS": "0",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_joining_an_organization_is_audited_from_either_side(end_user, acme, mallory):
    end_user.groups.add(acme)
    acme.user_set.add(mallory)
    acme.user_set.clear()
    assert user_events() == [
        ("changed", end_user.pk, {"groups": []}, {"groups": [str(acme.pk)]}),
        ("changed", mallory.pk, {"groups": []}, {"groups": [str(acme.pk)]}),
        *sorted(
            [
                ("changed", end_user.pk, {"groups": [str(acme.pk)]}, {"groups": []}),
                ("changed", mallory.pk, {"groups": [str(acme.pk)]}, {"groups": []}),
            ],
            key=lambda row: row[1],
        ),
    ]


def test_a_login_writes_nothing(end_user):
    from django.contrib.auth.models import update_last_login

    update_last_login(None, end_user)
    end_user.set_password("new")
    end_user.save(update_fields=["password"])
    assert user_events() == []

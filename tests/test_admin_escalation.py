"""Narrow admin permissions must not become credentials (issue 17, §6), and the application
form refuses client ids that could pass for resource indicators (§8).

Each attack is played by a staff user holding exactly the narrow permission the review found
abused, through the admin's own pages; for a client key, the key is then tried at /o/token/.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_application_model

from token_exchange.client_keys import generate_key_pair
from token_exchange.models import ClientKey, ClientPolicy, ImpersonatorGrant

from .client_jwt import KeyFile, assertion, assertion_form, register_key
from .conftest import application_admin, form_post, grant, make_app
from .test_admin import application_form

pytestmark = pytest.mark.django_db
Application = get_application_model()
AccessToken = get_access_token_model()
Role = ImpersonatorGrant.Role

KEYS = "/admin/token_exchange/clientkey/"
POLICIES = "/admin/token_exchange/clientpolicy/"
GRANTS = "/admin/token_exchange/impersonatorgrant/"
CHANGE_APPLICATION = f"change_{Application._meta.model_name}"
VIEW_APPLICATION = f"view_{Application._meta.model_name}"


def permissions(*codenames: str) -> list[Permission]:
    found = list(Permission.objects.filter(codename__in=codenames))
    assert sorted(permission.codename for permission in found) == sorted(codenames)
    return found


def staff(django_user_model: Any, username: str, *codenames: str, **fields: Any) -> Any:
    user = django_user_model.objects.create_user(
        username, f"{username}@example.com", "pw", is_staff=True, **fields
    )
    user.user_permissions.add(*permissions(*codenames))
    return user


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def backend(db: None) -> Any:
    """A service that authenticates with private_key_jwt for client_credentials."""
    return make_app("backend", exchange=None, authorization_grant_type="client-credentials")


def client_credentials(key: KeyFile) -> Any:
    return form_post(
        Client(), "/o/token/", {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    )


def key_form(application: Any, pair: Any, **fields: Any) -> dict[str, Any]:
    return {
        "application": application.pk,
        "kid": pair.kid,
        "algorithm": "RS256",
        "public_key": pair.public_pem,
        "active": "on",
        **fields,
    }


# --- Client keys: add_clientkey alone is not the right to become a client -----------------------


def test_add_clientkey_alone_cannot_add_a_key_and_the_key_authenticates_nobody(django_user_model, backend):
    mallory = browser(staff(django_user_model, "mallory", "add_clientkey"))
    pair = generate_key_pair("RS256")
    assert mallory.get(f"{KEYS}add/").status_code == 403
    response = mallory.post(f"{KEYS}add/", key_form(backend, pair))
    assert response.status_code == 403
    assert not ClientKey.objects.exists()
    # The private key mallory kept is nobody's: private_key_jwt with it is refused.
    key_file = KeyFile(backend.client_id, pair.kid, pair.private_pem, "RS256", pair.public_pem)
    refused = client_credentials(key_file)
    assert refused.status_code == 401, refused.content
    assert refused.json()["error"] == "invalid_client"
    assert not AccessToken.objects.exists()


def test_add_and_change_clientkey_with_a_view_of_the_application_cannot_add_one_inline(
    django_user_model, backend
):
    mallory = browser(
        staff(django_user_model, "mallory", "add_clientkey", "change_clientkey", VIEW_APPLICATION)
    )
    pair = generate_key_pair("RS256")
    form = application_form(backend)
    form.update(
        {
            "token_exchange_keys-TOTAL_FORMS": "1",
            "token_exchange_keys-0-kid": pair.kid,
            "token_exchange_keys-0-algorithm": "RS256",
            "token_exchange_keys-0-public_key": pair.public_pem,
            "token_exchange_keys-0-active": "on",
            "token_exchange_keys-0-application": backend.pk,
        }
    )
    assert mallory.post(application_admin(backend), form).status_code == 403
    assert not ClientKey.objects.exists()


def test_change_clientkey_alone_cannot_reactivate_or_replace_a_key(django_user_model, backend):
    retired = register_key(backend, active=False)
    row = ClientKey.objects.get()
    mallory = browser(staff(django_user_model, "mallory", "view_clientkey", "change_clientkey"))
    pair = generate_key_pair("RS256")
    page = mallory.get(f"{KEYS}{row.pk}/change/")
    assert page.status_code == 200  # to look at, read-only
    assert b'name="active"' not in page.content
    response = mallory.post(
        f"{KEYS}{row.pk}/change/", key_form(backend, pair, kid=retired.kid, public_key=pair.public_pem)
    )
    assert response.status_code == 403
    row.refresh_from_db()
    assert (row.active, row.public_key) == (False, retired.public_key)
    assert mallory.post(f"{KEYS}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ClientKey.objects.filter(pk=row.pk).exists()


def test_with_the_right_to_change_the_application_a_key_is_added_and_works(django_user_model, backend):
    operator = browser(staff(django_user_model, "operator", "add_clientkey", CHANGE_APPLICATION))
    pair = generate_key_pair("RS256")
    response = operator.post(f"{KEYS}add/", key_form(backend, pair))
    assert response.status_code == 302, response.content.decode()[:2000]
    key_file = KeyFile(backend.client_id, pair.kid, pair.private_pem, "RS256", pair.public_pem)
    assert client_credentials(key_file).status_code == 200


def test_the_application_choices_are_limited_too(django_user_model, backend, rf):
    """Belt and braces: the form of a user who may not change applications accepts none."""
    from django.contrib import admin

    user = staff(django_user_model, "mallory", "add_clientkey")
    request = rf.get(f"{KEYS}add/")
    request.user = user
    model_admin = admin.site.get_model_admin(ClientKey)
    form = model_admin.get_form(request)(data=key_form(backend, generate_key_pair("RS256")))
    assert not form.is_valid()
    assert "application" in form.errors


# --- Client policies: switching on token exchange is as powerful --------------------------------


def test_clientpolicy_permissions_alone_cannot_enable_token_exchange(django_user_model, backend):
    mallory = browser(
        staff(django_user_model, "mallory", "add_clientpolicy", "change_clientpolicy", "view_clientpolicy")
    )
    response = mallory.post(f"{POLICIES}add/", {"application": backend.pk, "token_exchange_enabled": "on"})
    assert response.status_code == 403
    assert not ClientPolicy.objects.exists()
    policy = ClientPolicy.objects.create(application=backend)
    response = mallory.post(
        f"{POLICIES}{policy.pk}/change/",
        {"application": backend.pk, "token_exchange_enabled": "on", "introspection": "any"},
    )
    assert response.status_code == 403
    policy.refresh_from_db()
    assert (policy.token_exchange_enabled, policy.introspection) == (False, "")


# --- Impersonator grants: four eyes, nothing wider than one's own ------------------------------


def grant_form(user: Any, role: str, organization: Any = None) -> dict[str, Any]:
    return {"user": user.pk, "role": role, "organization": organization.pk if organization else ""}


def test_add_impersonatorgrant_alone_cannot_make_oneself_iam_admin_impersonator(django_user_model):
    user = staff(django_user_model, "mallory", "add_impersonatorgrant")
    mallory = browser(user)
    response = mallory.post(f"{GRANTS}add/", grant_form(user, Role.ADMIN_IMPERSONATOR))
    assert response.status_code == 403
    assert not ImpersonatorGrant.objects.exists()


def test_nobody_grants_themselves_a_role_superusers_included(django_user_model, acme):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    response = browser(root).post(f"{GRANTS}add/", grant_form(root, Role.END_USER_IMPERSONATOR, acme))
    assert response.status_code == 200
    assert "ask another administrator" in response.content.decode()
    assert not ImpersonatorGrant.objects.exists()


def test_a_second_person_grants_and_is_recorded(django_user_model, acme):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    response = browser(root).post(f"{GRANTS}add/", grant_form(colleague, Role.ADMIN_IMPERSONATOR))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ImpersonatorGrant.objects.get(user=colleague).granted_by == root


@pytest.mark.parametrize(
    ("role", "where", "granted"),
    [
        (Role.END_USER_IMPERSONATOR, "acme", True),  # the lead's own role: within
        (Role.ADMIN_IMPERSONATOR, "acme", False),  # a stronger kind
        (Role.END_USER_IMPERSONATOR, None, False),  # the whole site
        (Role.END_USER_IMPERSONATOR, "globex", False),  # an organization the lead holds no role in
    ],
)
def test_a_support_lead_grants_only_roles_within_their_own(django_user_model, acme, role, where, granted):
    from django.contrib.auth.models import Group

    organizations = {"acme": acme, "globex": Group.objects.create(name="Globex"), None: None}
    lead = staff(django_user_model, "lead", "add_impersonatorgrant")
    grant(lead, Role.END_USER_IMPERSONATOR, acme)
    newcomer = django_user_model.objects.create_user("newcomer", "n@example.com", "pw")
    response = browser(lead).post(f"{GRANTS}add/", grant_form(newcomer, role, organizations[where]))
    assert ImpersonatorGrant.objects.filter(user=newcomer).exists() is granted
    if granted:
        assert response.status_code == 302
        assert ImpersonatorGrant.objects.get(user=newcomer).granted_by == lead
    else:
        assert response.status_code == 200
        assert "wider than any you hold" in response.content.decode()
    # And never to themselves, not even the role they hold in another form.
    refused = browser(lead).post(f"{GRANTS}add/", grant_form(lead, Role.END_USER_IMPERSONATOR, acme))
    assert refused.status_code == 200
    assert ImpersonatorGrant.objects.filter(user=lead).count() == 1


def test_the_permission_grants_wider_roles_but_never_to_oneself(django_user_model):
    user = staff(django_user_model, "lead", "add_impersonatorgrant", "grant_any_impersonator_role")
    lead = browser(user)
    newcomer = django_user_model.objects.create_user("newcomer", "n@example.com", "pw")
    assert lead.post(f"{GRANTS}add/", grant_form(newcomer, Role.ADMIN_IMPERSONATOR)).status_code == 302
    assert lead.post(f"{GRANTS}add/", grant_form(user, Role.ADMIN_IMPERSONATOR)).status_code == 200
    assert not ImpersonatorGrant.objects.filter(user=user).exists()


def test_nobody_changes_or_withdraws_their_own_grant(django_user_model, acme):
    user = staff(
        django_user_model,
        "lead",
        "view_impersonatorgrant",
        "change_impersonatorgrant",
        "delete_impersonatorgrant",
        "grant_any_impersonator_role",
    )
    own = grant(user, Role.END_USER_IMPERSONATOR, acme)
    lead = browser(user)
    response = lead.post(f"{GRANTS}{own.pk}/change/", grant_form(user, Role.ADMIN_IMPERSONATOR))
    assert response.status_code == 403
    assert lead.post(f"{GRANTS}{own.pk}/delete/", {"post": "yes"}).status_code == 403
    own.refresh_from_db()
    assert (own.role, own.organization_id) == (Role.END_USER_IMPERSONATOR, acme.pk)


def test_a_narrow_grantor_cannot_change_or_withdraw_a_wider_grant(django_user_model, acme):
    lead_user = staff(
        django_user_model,
        "lead",
        "view_impersonatorgrant",
        "change_impersonatorgrant",
        "delete_impersonatorgrant",
    )
    grant(lead_user, Role.END_USER_IMPERSONATOR, acme)
    boss = django_user_model.objects.create_user("boss", "b@example.com", "pw")
    wider = grant(boss, Role.ADMIN_IMPERSONATOR)
    lead = browser(lead_user)
    # Narrowing it is a change of a grant the lead could not have made.
    narrowed = lead.post(f"{GRANTS}{wider.pk}/change/", grant_form(boss, Role.END_USER_IMPERSONATOR, acme))
    assert narrowed.status_code == 403
    assert lead.post(f"{GRANTS}{wider.pk}/delete/", {"post": "yes"}).status_code == 403
    # The list's bulk action asks only for the model permission: it is refused as a whole.
    bulk = lead.post(GRANTS, {"action": "delete_selected", "_selected_action": [wider.pk], "post": "yes"})
    assert bulk.status_code == 403
    assert ImpersonatorGrant.objects.filter(pk=wider.pk, role=Role.ADMIN_IMPERSONATOR).exists()


def test_moving_a_grant_to_oneself_is_refused(django_user_model, acme):
    user = staff(django_user_model, "lead", "view_impersonatorgrant", "change_impersonatorgrant")
    grant(user, Role.ADMIN_IMPERSONATOR)
    colleague = django_user_model.objects.create_user("colleague", "c@example.com", "pw")
    theirs = grant(colleague, Role.END_USER_IMPERSONATOR, acme)
    response = browser(user).post(
        f"{GRANTS}{theirs.pk}/change/", grant_form(user, Role.END_USER_IMPERSONATOR, acme)
    )
    assert response.status_code == 200
    assert "ask another administrator" in response.content.decode()
    theirs.refresh_from_db()
    assert theirs.user == colleague


# --- The same rules on the user's page (token_exchange.contrib.user_admin) ---------------------


def user_page_form(
    user: Any, *roles: tuple[str, Any], existing: list[ImpersonatorGrant] = (), **delete: Any
) -> dict[str, Any]:
    """The user admin's change form with the impersonator roles inline."""
    form: dict[str, Any] = {
        "username": user.username,
        "email": user.email,
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
        "last_login_0": "",
        "last_login_1": "",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "impersonator_grants-TOTAL_FORMS": str(len(existing) + len(roles)),
        "impersonator_grants-INITIAL_FORMS": str(len(existing)),
        "impersonator_grants-MIN_NUM_FORMS": "0",
        "impersonator_grants-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(existing):
        form[f"impersonator_grants-{index}-id"] = row.pk
        form[f"impersonator_grants-{index}-user"] = user.pk
        form[f"impersonator_grants-{index}-role"] = row.role
        form[f"impersonator_grants-{index}-organization"] = row.organization_id or ""
        if delete.get("delete"):
            form[f"impersonator_grants-{index}-DELETE"] = "on"
    for offset, (role, organization) in enumerate(roles):
        index = len(existing) + offset
        form[f"impersonator_grants-{index}-user"] = user.pk
        form[f"impersonator_grants-{index}-role"] = role
        form[f"impersonator_grants-{index}-organization"] = organization.pk if organization else ""
    return form


def user_page(user: Any) -> str:
    return f"/admin/auth/user/{user.pk}/change/"


def test_a_superuser_cannot_grant_themselves_a_role_on_their_own_page(django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = browser(root)
    page = client.get(user_page(root))
    assert page.status_code == 200
    assert b'name="impersonator_grants-MAX_NUM_FORMS" value="0"' in page.content  # no "Add another"
    client.post(user_page(root), user_page_form(root, (Role.ADMIN_IMPERSONATOR, None)))
    assert not ImpersonatorGrant.objects.exists()


def test_own_roles_are_read_only_on_ones_own_page(django_user_model, acme):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    own = grant(root, Role.END_USER_IMPERSONATOR, acme)
    client = browser(root)
    client.post(user_page(root), user_page_form(root, existing=[own], delete=True))
    assert ImpersonatorGrant.objects.filter(pk=own.pk).exists()


def test_on_another_users_page_the_lead_grants_only_roles_within_their_own(django_user_model, acme):
    lead = staff(
        django_user_model,
        "lead",
        "view_user",
        "change_user",
        "view_impersonatorgrant",
        "add_impersonatorgrant",
        "change_impersonatorgrant",
        "delete_impersonatorgrant",
    )
    grant(lead, Role.END_USER_IMPERSONATOR, acme)
    newcomer = django_user_model.objects.create_user("newcomer", "n@example.com", "pw")
    client = browser(lead)
    wider = client.post(user_page(newcomer), user_page_form(newcomer, (Role.ADMIN_IMPERSONATOR, None)))
    assert wider.status_code == 200
    assert "wider than any you hold" in wider.content.decode()
    assert (
        not ImpersonatorGrant.objects.exists() or not ImpersonatorGrant.objects.filter(user=newcomer).exists()
    )
    within = client.post(user_page(newcomer), user_page_form(newcomer, (Role.END_USER_IMPERSONATOR, acme)))
    assert within.status_code == 302, within.content.decode()[:3000]
    assert ImpersonatorGrant.objects.get(user=newcomer).granted_by == lead
    # Withdrawing the boss's instance-wide role is as wide as granting it.
    boss = django_user_model.objects.create_user("boss", "b@example.com", "pw")
    boss_role = grant(boss, Role.ADMIN_IMPERSONATOR)
    withdrawn = client.post(user_page(boss), user_page_form(boss, existing=[boss_role], delete=True))
    assert withdrawn.status_code == 200
    assert ImpersonatorGrant.objects.filter(pk=boss_role.pk).exists()


# --- §8: client ids that read as absolute URIs --------------------------------------------------


@pytest.mark.parametrize("client_id", ["https://api.example.com/", "urn:example:api", "HTTP://x"])
def test_the_application_form_refuses_a_client_id_that_reads_as_a_uri(admin_client, backend, client_id):
    form = application_form(backend)
    form["client_id"] = client_id
    response = admin_client.post(application_admin(backend), form)
    assert response.status_code == 200
    assert "must not look like an absolute URI" in response.content.decode()
    backend.refresh_from_db()
    assert backend.client_id == "backend"


def test_an_existing_uri_client_id_does_not_block_other_edits(admin_client, crm):
    """The system check reports it; the form refuses only setting one."""
    form = application_form(crm)
    form["name"] = "CRM renamed"
    response = admin_client.post(application_admin(crm), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    crm.refresh_from_db()
    assert crm.name == "CRM renamed"

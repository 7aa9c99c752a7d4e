"""The admin screens, as staff use them: the switches (audited), the application page with its
token exchange policy and keys, impersonator roles, and the read-only audit trail."""

from __future__ import annotations

import datetime
import html
import os
import re
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

import django
import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import AbstractApplication

from token_exchange.admin import (
    AuditQuerySet,
    CappedCountPaginator,
    ImpersonationUserAdminMixin,
    _periods,
    describe_public_key,
)
from token_exchange.client_keys import generate_key_pair
from token_exchange.contrib.user_admin.apps import extend_user_admin
from token_exchange.models import (
    AuditEvent,
    ClientKey,
    ClientPolicy,
    ImpersonationSession,
    ImpersonatorGrant,
    SecuritySettings,
)

from .conftest import application_admin, grant, make_app

pytestmark = pytest.mark.django_db

SETTINGS_PAGE = f"/admin/token_exchange/securitysettings/{SecuritySettings.SINGLETON_PK}/change/"
EventType = AuditEvent.EventType


@pytest.fixture
def admin_client_(django_user_model) -> Client:
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(root)
    return client


def staff_with(django_user_model: Any, *codenames: str) -> Client:
    user = django_user_model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


# --- Security settings --------------------------------------------------------------------------


def test_security_settings_is_one_page_with_the_risks_stated(admin_client_):
    listing = admin_client_.get("/admin/token_exchange/securitysettings/")
    assert listing.status_code == 302
    assert listing["Location"] == SETTINGS_PAGE
    page = admin_client_.get(SETTINGS_PAGE)
    assert page.status_code == 200
    assert b"Risk when on" in page.content
    assert admin_client_.get("/admin/token_exchange/securitysettings/add/").status_code == 403
    assert admin_client_.post(f"{SETTINGS_PAGE[:-7]}delete/").status_code == 403
    assert SecuritySettings.objects.count() == 1


def breadcrumbs(response: Any) -> list[str]:
    """The trail at the top of an admin page, as the user reads it: a ``<div>`` of links joined by
    ``&rsaquo;`` up to Django 6.0, an ``<ol>`` of ``<li>`` from 6.1."""
    content = response.content.decode()
    trail = re.search(r'<(div|ol) class="breadcrumbs">(.*?)</\1>', content, re.DOTALL)
    assert trail is not None
    assert trail[1] == ("ol" if django.VERSION >= (6, 1) else "div"), "the running admin's own markup"
    parts = re.split(r"&rsaquo;|</li>", trail[2])
    return [text for part in parts if (text := " ".join(html.unescape(re.sub(r"<[^>]+>", "", part)).split()))]


def test_security_settings_page_names_itself_once_in_plain_words(admin_client_):
    SecuritySettings.load()
    page = admin_client_.get(SETTINGS_PAGE)
    assert breadcrumbs(page) == ["Home", "Token exchange", "Security settings"]
    assert b"<h2>Security settings</h2>" not in page.content
    # Help texts an administrator understands: no protocol error codes, claims or event codes.
    for jargon in (b"unsupported_grant_type", b"act claim", b"user.impersonated"):
        assert jargon not in page.content
    assert b"sign in to applications as other users" in page.content
    history = admin_client_.get(f"{SETTINGS_PAGE[:-7]}history/")
    assert breadcrumbs(history) == ["Home", "Token exchange", "Security settings", "History"]


def test_changing_a_switch_is_audited_with_who_old_and_new(admin_client_):
    SecuritySettings.load()
    response = admin_client_.post(
        SETTINGS_PAGE, {"token_exchange_enabled": "on", "allow_impersonation": "on"}
    )
    assert response.status_code == 302
    assert SecuritySettings.load().allow_impersonation is True
    [event] = AuditEvent.objects.filter(event_type=EventType.SECURITY_SETTINGS_CHANGED)
    assert event.actor.username == "root"
    assert event.payload["old"] == {"allow_impersonation": False}
    assert event.payload["new"] == {"allow_impersonation": True}
    assert event.client_ip == "127.0.0.1"
    # Saving without a change writes nothing.
    admin_client_.post(SETTINGS_PAGE, {"token_exchange_enabled": "on", "allow_impersonation": "on"})
    assert AuditEvent.objects.filter(event_type=EventType.SECURITY_SETTINGS_CHANGED).count() == 1


def test_only_the_change_permission_changes_it(django_user_model):
    SecuritySettings.load()
    viewer = staff_with(django_user_model, "view_securitysettings")
    assert viewer.get(SETTINGS_PAGE).status_code == 200
    assert viewer.post(SETTINGS_PAGE, {"allow_impersonation": "on"}).status_code == 403
    assert SecuritySettings.load().allow_impersonation is False
    assert not AuditEvent.objects.filter(event_type=EventType.SECURITY_SETTINGS_CHANGED).exists()
    outsider = Client()
    outsider.force_login(django_user_model.objects.create_user("o", "o@example.com", "pw", is_staff=True))
    assert outsider.get("/admin/token_exchange/securitysettings/").status_code == 403


def test_csrf_is_required(admin_client_):
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = admin_client_.cookies
    assert strict.post(SETTINGS_PAGE, {"allow_impersonation": "on"}).status_code == 403
    assert SecuritySettings.load().allow_impersonation is False


# --- Applications: policy and keys inline -------------------------------------------------------


def application_form(app: Any, **policy: Any) -> dict[str, Any]:
    form = {
        "client_id": app.client_id,
        "client_secret": "",
        "hash_client_secret": "on",
        "name": app.name,
        "client_type": app.client_type,
        "authorization_grant_type": app.authorization_grant_type,
        "redirect_uris": app.redirect_uris,
        "post_logout_redirect_uris": "",
        "allowed_origins": "",
        "algorithm": app.algorithm,
        "skip_authorization": "on",
        "token_exchange_policy-TOTAL_FORMS": "1",
        "token_exchange_policy-INITIAL_FORMS": "1" if hasattr(app, "token_exchange_policy") else "0",
        "token_exchange_policy-MIN_NUM_FORMS": "0",
        "token_exchange_policy-MAX_NUM_FORMS": "1",
        "token_exchange_policy-0-application": app.pk,
        "token_exchange_keys-TOTAL_FORMS": "0",
        "token_exchange_keys-INITIAL_FORMS": "0",
        "token_exchange_keys-MIN_NUM_FORMS": "0",
        "token_exchange_keys-MAX_NUM_FORMS": "1000",
    }
    if hasattr(app, "token_exchange_policy"):
        form["token_exchange_policy-0-id"] = app.token_exchange_policy.pk
    # A swapped application model's own fields (tests/settings_swapped.py), as they are.
    dot_fields = {field.name for field in AbstractApplication._meta.get_fields()}
    for field in type(app)._meta.concrete_fields:
        if field.editable and not field.primary_key and field.name not in dot_fields:
            form[field.name] = getattr(app, field.attname)
    for key, value in policy.items():
        form[f"token_exchange_policy-0-{key}"] = value
    return form


def test_the_application_page_has_the_policy_and_keys_inline(admin_client_, portal):
    page = admin_client_.get(application_admin(portal))
    assert page.status_code == 200
    assert b"token_exchange_policy-0-token_exchange_enabled" in page.content
    assert b"token_exchange_policy-0-launch_url" in page.content
    assert b"token_exchange_keys-TOTAL_FORMS" in page.content


def test_a_public_client_cannot_enable_token_exchange_and_the_form_says_why(admin_client_):
    spa = make_app("spa", exchange=None, client_type="public")
    response = admin_client_.post(
        application_admin(spa),
        application_form(spa, token_exchange_enabled="on"),
    )
    assert response.status_code == 200
    assert b"A public client cannot use token exchange" in response.content
    assert not ClientPolicy.objects.filter(application=spa).exists()

    allowed = admin_client_.post(
        application_admin(spa),
        application_form(spa, admin_impersonation_enabled="on", launch_url="https://spa.example.com/launch"),
    )
    assert allowed.status_code == 302, allowed.content.decode()[:3000]
    policy = ClientPolicy.objects.get(application=spa)
    assert (policy.token_exchange_enabled, policy.admin_impersonation_enabled) == (False, True)


def test_switching_an_enabled_client_to_public_is_refused(admin_client_, portal):
    form = application_form(portal, token_exchange_enabled="on")
    form["client_type"] = "public"
    response = admin_client_.post(application_admin(portal), form)
    assert b"A public client cannot use token exchange" in response.content
    portal.refresh_from_db()
    assert portal.client_type == "confidential"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"admin_impersonation_enabled": "on"}, b"needs the application&#x27;s launch URL"),
        ({"launch_url": "http://app.example.com/"}, b"The launch URL must use HTTPS"),
    ],
)
def test_launch_url_rules(admin_client_, portal, policy, message):
    response = admin_client_.post(application_admin(portal), application_form(portal, **policy))
    assert response.status_code == 200
    assert message in response.content


def test_client_keys_are_validated_in_the_admin(admin_client_, portal):
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


def test_client_keys_inline_validates_too(admin_client_, portal):
    pair = generate_key_pair("RS256")
    form = application_form(portal, token_exchange_enabled="on")
    form.update(
        {
            "token_exchange_keys-TOTAL_FORMS": "1",
            "token_exchange_keys-0-kid": "inline",
            "token_exchange_keys-0-algorithm": "ES256",
            "token_exchange_keys-0-public_key": pair.public_pem,
            "token_exchange_keys-0-active": "on",
            "token_exchange_keys-0-application": portal.pk,
        }
    )
    response = admin_client_.post(application_admin(portal), form)
    assert response.status_code == 200
    assert not ClientKey.objects.exists()
    form["token_exchange_keys-0-algorithm"] = "RS256"
    assert admin_client_.post(application_admin(portal), form).status_code == 302
    assert ClientKey.objects.get().kid == "inline"


def test_registered_keys_fold_their_pem_under_a_summary(admin_client_, portal):
    pair = generate_key_pair("RS256")
    ClientKey.objects.create(application=portal, kid=pair.kid, algorithm="RS256", public_key=pair.public_pem)
    page = admin_client_.get(application_admin(portal)).content.decode()
    summary = f"<summary>RSA 2048 · SHA-256 thumbprint {pair.kid[:12]}…</summary>"
    assert f'<details class="token-exchange-public-key">{summary}<textarea' in page
    # A new key's row (the inline's empty form) is an open, narrow textarea.
    assert 'name="token_exchange_keys-__prefix__-public_key" cols="34" rows="4"' in page
    assert describe_public_key(pair.private_pem) is None
    assert describe_public_key("not a key") is None
    assert describe_public_key(generate_key_pair("ES256").public_pem).startswith("EC secp256r1 · ")


def test_the_application_list_shows_client_id_and_token_exchange_in_constant_queries(admin_client_, portal):
    make_app("crm", exchange=False)
    make_app("aggregates", exchange=None)

    def listing() -> tuple[str, int]:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client_.get(application_admin())
        assert response.status_code == 200
        return response.content.decode(), len(queries)

    page, few = listing()
    assert ">Client ID<" in page
    assert ">Token exchange<" in page
    row = re.search(r"<tr>.*?>portal</a>.*?</tr>", page, re.DOTALL)
    assert row is not None
    assert 'break-all">portal</span>' in row[0]
    assert 'alt="True"' in row[0]
    assert page.count('alt="False"') == 2  # crm's policy is off, aggregates has none
    for number in range(10):
        make_app(f"app-{number}", exchange=number % 2 == 0)
    _page, many = listing()
    assert many == few  # the policy comes with each row, not one query per row


# --- Impersonator grants ------------------------------------------------------------------------


def test_impersonator_grants_say_in_plain_words_whom_they_cover(admin_client_, support, django_user_model):
    admin_user = django_user_model.objects.create_user("iam-admin", "a@example.com", "pw")
    grant(admin_user, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    listing = admin_client_.get("/admin/token_exchange/impersonatorgrant/")
    assert listing.status_code == 200
    content = listing.content.decode()
    assert ">Role<" in content
    assert "ZITADEL role" not in content
    assert ">End user impersonator (ACME)</span>" in content
    assert ">Admin impersonator (whole site)</span>" in content
    assert "Members of ACME, except administrators" in content
    assert "Every user, administrators included" in content
    # ZITADEL's names stay only as a tooltip, for those who know them.
    assert 'title="ZITADEL: Org End User Impersonator"' in content
    assert 'title="ZITADEL: IAM Admin Impersonator"' in content
    assert (
        admin_client_.get("/admin/token_exchange/impersonatorgrant/?q=iam-adm").content.count(b"iam-admin")
        >= 1
    )
    filtered = admin_client_.get("/admin/token_exchange/impersonatorgrant/?role__exact=admin_impersonator")
    assert b"End user impersonator (ACME)" not in filtered.content
    assert str(ImpersonatorGrant.objects.get(user=support)) == "support — End user impersonator (ACME)"


def test_the_user_page_lists_and_adds_roles_inline(admin_client_, support):
    page = admin_client_.get(f"/admin/auth/user/{support.pk}/change/")
    assert page.status_code == 200
    assert b"Impersonator roles" in page.content
    assert b"Members of ACME, except administrators" in page.content
    assert b"impersonator_grants-TOTAL_FORMS" in page.content


# --- The user admin: an opt-in --------------------------------------------------------------------


def test_the_contrib_app_adds_the_mixin_keeping_the_class_name():
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.contrib.auth.admin import UserAdmin

    model_admin = admin.site.get_model_admin(get_user_model())
    assert isinstance(model_admin, ImpersonationUserAdminMixin)
    assert isinstance(model_admin, UserAdmin)
    extended = type(model_admin)
    assert (extended.__name__, extended.__qualname__, extended.__module__) == (
        "UserAdmin",
        "UserAdmin",
        "django.contrib.auth.admin",
    )
    assert str(model_admin) == "auth.UserAdmin"


def test_extend_user_admin_once_and_only_when_registered(django_user_model):
    from django.contrib.admin import AdminSite
    from django.contrib.auth.admin import UserAdmin

    site = AdminSite(name="elsewhere")
    extend_user_admin(site)
    assert not site.is_registered(django_user_model)
    site.register(django_user_model, UserAdmin)
    extend_user_admin(site)
    extended = type(site.get_model_admin(django_user_model))
    assert extended.__mro__[1:3] == (ImpersonationUserAdminMixin, UserAdmin)
    extend_user_admin(site)
    assert type(site.get_model_admin(django_user_model)) is extended


def test_importing_the_admin_module_changes_no_user_admin():
    """Without ``token_exchange.contrib.user_admin`` the user admin stays Django's, and W005 says
    what to add. In a fresh process: this one's admin is already set up."""
    program = """
import django
from django.conf import settings
settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "token_exchange.contrib.user_admin"]
django.setup()
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
import token_exchange.admin
from token_exchange import checks
assert type(admin.site.get_model_admin(get_user_model())) is UserAdmin
print([message.id for message in checks.check_admin_screens()])
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['token_exchange.W005']"


# --- Audit events -------------------------------------------------------------------------------


def audit_rows(portal: Any, support: Any, end_user: Any) -> list[AuditEvent]:
    """Three rows of the token path, and no others: the fixtures' own change rows (the portal,
    its policy, support's grant) are left out of these lists."""
    AuditEvent.objects.all().delete()
    now = timezone.now()
    return [
        AuditEvent.objects.create(
            event_type=EventType.USER_IMPERSONATED,
            actor=support,
            subject=end_user,
            application=portal,
            created_at=now - datetime.timedelta(days=40),
            payload={"actor": {"issuer": "x", "user_id": str(support.pk)}, "scope": "openid"},
        ),
        AuditEvent.objects.create(
            event_type=EventType.TOKEN_EXCHANGED, subject=end_user, application=portal, created_at=now
        ),
        AuditEvent.objects.create(event_type=EventType.TOKEN_EXCHANGE_REFUSED, created_at=now),
    ]


def test_audit_events_are_read_only(admin_client_, support, end_user, portal):
    event = audit_rows(portal, support, end_user)[0]
    listing = admin_client_.get("/admin/token_exchange/auditevent/")
    assert listing.status_code == 200
    assert b"User impersonated" in listing.content
    assert admin_client_.get("/admin/token_exchange/auditevent/add/").status_code == 403
    detail = f"/admin/token_exchange/auditevent/{event.pk}/change/"
    page = admin_client_.get(detail)
    assert page.status_code == 200  # view only
    # The payload, readable: indented JSON.
    assert b"&quot;scope&quot;: &quot;openid&quot;" in page.content
    assert b"<pre" in page.content
    # Titled by what happened, in words, not by the event code.
    assert breadcrumbs(page)[-1].startswith("User impersonated at ")
    assert b"user.impersonated at" not in page.content
    assert admin_client_.post(detail, {"event_type": "token.exchanged"}).status_code == 403
    assert admin_client_.post(f"/admin/token_exchange/auditevent/{event.pk}/delete/").status_code == 403
    event.refresh_from_db()
    assert event.event_type == EventType.USER_IMPERSONATED


def test_audit_list_newest_first_with_links_filters_and_search(admin_client_, support, end_user, portal):
    impersonated, exchanged, refused = audit_rows(portal, support, end_user)
    listing = admin_client_.get("/admin/token_exchange/auditevent/")
    results = list(listing.context["cl"].result_list)
    assert results == [refused, exchanged, impersonated]
    assert f'href="/admin/auth/user/{support.pk}/change/"'.encode() in listing.content
    assert f'href="{application_admin(portal)}"'.encode() in listing.content

    def listed(query: str) -> list[AuditEvent]:
        response = admin_client_.get(f"/admin/token_exchange/auditevent/?{query}")
        assert response.status_code == 200
        return list(response.context["cl"].result_list)

    assert listed("event_type__exact=user.impersonated") == [impersonated]
    assert listed(f"application__id__exact={portal.pk}") == [exchanged, impersonated]
    assert listed("q=suppo") == [impersonated]
    assert listed("q=end-user") == [exchanged, impersonated]
    assert listed("q=end-user%40example.com") == [exchanged, impersonated]
    assert listed("q=nobody") == []
    this_year = timezone.localtime(exchanged.created_at)
    assert exchanged in listed(f"created_at__year={this_year.year}&created_at__month={this_year.month}")
    since = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - datetime.timedelta(
        days=7
    )
    assert listed(urlencode({"created_at__gte": str(since)})) == [refused, exchanged]


def test_audit_list_says_why(admin_client_, support, end_user, portal):
    AuditEvent.objects.create(
        event_type=EventType.TOKEN_EXCHANGE_REFUSED,
        application=portal,
        payload={"reason": "actor_not_impersonator", "error": "invalid_request"},
    )
    AuditEvent.objects.create(
        event_type=EventType.IMPERSONATION_STARTED,
        actor=support,
        subject=end_user,
        payload={"reason": "Ticket #4711: customer cannot see their invoices"},
    )
    AuditEvent.objects.create(
        event_type=EventType.IMPERSONATION_ENDED, actor=support, payload={"end_reason": "expired"}
    )
    AuditEvent.objects.create(event_type=EventType.SECURITY_SETTINGS_CHANGED, payload={"old": {}})
    page = admin_client_.get("/admin/token_exchange/auditevent/").content.decode()
    assert ">Reason<" in page
    assert '<span title="actor_not_impersonator">actor not impersonator</span>' in page
    assert "Ticket #4711: customer cannot see their invoices" in page
    assert '<td class="field-reason">Expired</td>' in page
    assert '<td class="field-reason">—</td>' in page


def test_audit_list_never_counts_the_whole_table(admin_client_, support, end_user, portal, monkeypatch):
    audit_rows(portal, support, end_user)
    monkeypatch.setattr(CappedCountPaginator, "LIMIT", 2)
    response = admin_client_.get("/admin/token_exchange/auditevent/?q=end-user")
    assert response.context["cl"].result_count == 2
    assert response.context["cl"].full_result_count is None


def test_impersonation_sessions_list_says_how_each_stands(admin_client_, support, end_user, portal):
    now = timezone.now()
    minutes = datetime.timedelta(minutes=1)

    def session(**fields: Any) -> ImpersonationSession:
        return ImpersonationSession.objects.create(
            actor=support, subject=end_user, application=portal, reason="ticket", **fields
        )

    session(started_at=now - 5 * minutes, expires_at=now + 10 * minutes)
    session(started_at=now - 30 * minutes, expires_at=now - 15 * minutes)  # expired, unnoticed yet
    session(started_at=now - 60 * minutes, expires_at=now, ended_at=now - 50 * minutes, end_reason="stopped")
    page = admin_client_.get("/admin/token_exchange/impersonationsession/").content.decode()
    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', page)
    assert headers == ["started", "actor", "subject", "application", "status"]
    statuses = re.findall(r'<td class="field-status">([^<]*)</td>', page)
    assert [status.split(" ")[0] for status in statuses] == ["Running", "Expired", "Stopped"]


def test_date_hierarchy_periods_come_from_min_and_max():
    tz = timezone.get_current_timezone()
    first = datetime.datetime(2025, 11, 30, 23, 0, tzinfo=tz)
    last = datetime.datetime(2026, 2, 2, 1, 0, tzinfo=tz)
    assert [m.month for m in _periods(first, last, "month")] == [11, 12, 1, 2]
    assert [y.year for y in _periods(first, last, "year")] == [2025, 2026]
    days = list(_periods(first, first + datetime.timedelta(days=2), "day"))
    assert [d.day for d in days] == [30, 1, 2]
    assert AuditQuerySet(AuditEvent).datetimes("created_at", "year") == []

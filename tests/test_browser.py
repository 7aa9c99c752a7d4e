"""The admin as staff see it, in a real browser: Playwright driving Debian's headless Chromium
against the example project on a live server.

Set ``SCREENSHOTS_DIR`` to save the main screens (``make screenshots`` writes docs/screenshots/).
Chromium is found at ``$CHROMIUM_PATH``, else ``chromium`` on the PATH; ``make test`` installs
it when it is missing. Without it these tests fail, unless ``SKIP_BROWSER_TESTS=1``.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import django
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from example_project.demo import data
from token_exchange.client_keys import generate_key_pair
from token_exchange.models import (
    AuditEvent,
    ClientKey,
    ImpersonationSession,
    ImpersonatorGrant,
    SecuritySettings,
)

from .conftest import application_admin

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORDS = {spec.username: spec.password for spec in data.USERS}
EventType = AuditEvent.EventType


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser(django_db_setup: None) -> Iterator[Any]:
    if os.environ.get("SKIP_BROWSER_TESTS") == "1":
        pytest.skip("SKIP_BROWSER_TESTS=1")
    executable = chromium_path()
    if executable is None:
        pytest.fail(
            "Chromium not found: apt-get install -y chromium, or set CHROMIUM_PATH (make test does it)"
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls next to a running loop; these tests' ORM calls are synchronous, so allow them here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def demo(browser: Any, live_server: Any) -> str:
    """The example project's data (``seed_demo``), with the portal SPA at the live server's URL."""
    call_command("seed_demo", stdout=StringIO())
    portal = f"{live_server.url}/portal/"
    spa = get_application_model().objects.get(client_id=data.PORTAL_SPA_CLIENT_ID)
    spa.redirect_uris = portal
    spa.save()
    spa.token_exchange_policy.launch_url = portal
    spa.token_exchange_policy.save()
    return str(live_server.url)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> None:
    directory = os.environ.get("SCREENSHOTS_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=False)


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORDS.get(username, "pw"))
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def assert_fits(page: Any) -> None:
    """Nothing scrolls sideways at the page's 1280 px: not the page, not a change list's table."""
    widths = page.evaluate(
        """() => ({
            page: [document.documentElement.scrollWidth, window.innerWidth],
            lists: [...document.querySelectorAll("#changelist .results")]
                .map(e => [e.scrollWidth, e.clientWidth]),
        })"""
    )
    scroll_width, window_width = widths["page"]
    assert scroll_width <= window_width, widths
    for scroll_width, client_width in widths["lists"]:
        assert scroll_width <= client_width, widths


def breadcrumbs(page: Any) -> list[str]:
    """The trail as a person reads it: the ``<li>`` items from Django 6.1 (the admin's CSS draws
    the separators), the text between the separators before. Styled as the admin's own: markup
    the running admin's CSS does not know would show as bare links on white."""
    background = page.eval_on_selector(".breadcrumbs", "e => getComputedStyle(e).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent")
    items = page.locator("ol.breadcrumbs > li")
    if items.count():
        return [text.strip() for text in items.all_inner_texts()]
    separator = "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}"
    return [part.strip() for part in page.inner_text(".breadcrumbs").split(separator)]


def user_pk(username: str) -> int:
    return int(get_user_model().objects.get(username=username).pk)


def test_toggle_allow_impersonation_and_see_the_audit_row(page, demo):
    log_in(page, demo, "admin")
    page.click("text=Security settings")
    checkbox = page.locator("#id_allow_impersonation")
    assert checkbox.is_checked()  # seed_demo turns it on
    assert "Risk when on" in page.content()
    assert breadcrumbs(page) == ["Home", "Token exchange", "Security settings"]  # once, not twice
    assert "unsupported_grant_type" not in page.inner_text("#content")
    screenshot(page, "security-settings")
    checkbox.uncheck()
    page.click("input[name=_save]")
    page.wait_for_selector("text=was changed successfully")
    assert SecuritySettings.load().allow_impersonation is False

    page.goto(f"{demo}/admin/token_exchange/auditevent/")
    row = page.locator("#result_list tbody tr").first
    assert "Security settings changed" in row.inner_text()
    assert "admin" in row.inner_text()
    assert_fits(page)
    row.locator("th a, td a").first.click()
    payload = page.locator("pre").inner_text()
    assert '"allow_impersonation": false' in payload
    assert '"allow_impersonation": true' in payload


def test_grant_a_role_on_the_user_page(page, demo, django_user_model):
    helpdesk = django_user_model.objects.create_user("helpdesk", "helpdesk@example.com", "pw", is_staff=True)
    log_in(page, demo, "admin")
    page.goto(f"{demo}/admin/auth/user/{helpdesk.pk}/change/")
    page.click("text=Add another Impersonator role")
    page.select_option("select[name=impersonator_grants-0-role]", "end_user_impersonator")
    acme = Group.objects.get(name=data.ORGANIZATION)
    page.select_option("select[name=impersonator_grants-0-organization]", str(acme.pk))
    screenshot(page, "user-roles-inline")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was changed successfully")
    assert "Members of ACME, except administrators" in page.locator("#impersonator_grants-group").inner_text()
    [role] = ImpersonatorGrant.objects.filter(user=helpdesk)
    assert (role.role, role.organization) == ("end_user_impersonator", acme)

    page.goto(f"{demo}/admin/token_exchange/impersonatorgrant/?q=helpdesk")
    listed = page.locator("#result_list")
    assert "End user impersonator (ACME)" in listed.inner_text()
    assert "ZITADEL" not in listed.inner_text()  # only a tooltip
    assert_fits(page)


def test_support_impersonates_a_customer_into_the_portal_and_stops(page, demo):
    customer = user_pk("end-user")
    support = user_pk("support")
    log_in(page, demo, "support")
    page.goto(f"{demo}/admin/auth/user/{customer}/change/")
    screenshot(page, "user-page-impersonate-button")
    page.click("#token-exchange-impersonate")
    page.fill("#id_reason", "Ticket #4711: customer cannot see their invoices")
    page.fill("#id_minutes", "10")
    assert breadcrumbs(page) == [
        "Home",
        "Authentication and Authorization",
        "Users",
        "end-user",
        "Impersonate",
    ]
    # Laid out as other admin forms: labels in one column and fields in another, the help with its
    # field, and the admin's submit row. Up to Django 6.0 the label stands in a column beside the
    # field and the help under the field; from 6.1 the admin stacks label, help, then field.
    names = ("application", "reason", "minutes")
    labels = [page.locator(f"label[for=id_{name}]").bounding_box() for name in names]
    fields = [page.locator(f"#id_{name}").bounding_box() for name in names]
    assert len({round(box["x"]) for box in labels}) == 1
    assert len({round(box["x"]) for box in fields}) == 1
    label, field, help_box = labels[1], fields[1], page.locator("#id_reason_helptext").bounding_box()
    if django.VERSION >= (6, 1):
        assert abs(field["x"] - label["x"]) <= 12
        assert label["y"] + label["height"] <= help_box["y"] < field["y"]
    else:
        assert field["x"] >= label["x"] + 150
        assert abs(help_box["x"] - field["x"]) <= 12  # under the field, not under the label
        assert help_box["y"] >= field["y"] + field["height"]
    assert page.locator(".submit-row input[type=submit].default").is_visible()
    assert_fits(page)
    screenshot(page, "impersonate-form")
    page.click("input[type=submit]")

    # The portal (a public SPA) receives iss and login_hint, signs in through /o/authorize/ with PKCE.
    page.wait_for_selector("#signed-in-as")
    assert page.url == f"{demo}/portal/"  # the code left the address bar; no token ever was in it
    assert page.inner_text("#signed-in-as") == "end user"
    assert page.inner_text("#subject") == str(customer)
    assert page.inner_text("#actor") == str(support)
    banner = page.locator("#token-exchange-impersonation-banner")
    assert re.search(
        r"You \(support\) are acting as end-user for portal \(single-page app\)", banner.inner_text()
    )
    screenshot(page, "portal-acting-as")

    [session] = ImpersonationSession.objects.all()
    assert session.reason == "Ticket #4711: customer cannot see their invoices"
    [impersonated] = AuditEvent.objects.filter(event_type=EventType.USER_IMPERSONATED)
    assert impersonated.payload["impersonation"]["reason"] == session.reason
    assert get_access_token_model().objects.filter(user__pk=customer).count() == 1

    # The admin still belongs to the support user, with the banner on every page.
    page.goto(f"{demo}/admin/")
    assert "support" in page.inner_text("#user-tools").lower()
    assert page.locator("#token-exchange-impersonation-banner").is_visible()
    screenshot(page, "admin-banner")

    page.click("#token-exchange-stop")
    page.wait_for_url(f"{demo}/admin/auth/user/{customer}/change/")
    assert page.locator("#token-exchange-impersonation-banner").count() == 0
    assert page.inner_text(".messagelist .success") == (
        "You stopped acting as end-user in portal (single-page app); its sign-in as them is revoked."
    )
    assert "support" in page.inner_text("#user-tools").lower()
    session.refresh_from_db()
    assert session.end_reason == "stopped"
    assert get_access_token_model().objects.filter(user__pk=customer).count() == 0
    assert AuditEvent.objects.filter(event_type=EventType.IMPERSONATION_ENDED).count() == 1


def test_a_user_without_a_grant_sees_no_button(page, demo, django_user_model):
    helpdesk = django_user_model.objects.create_user("helpdesk", "helpdesk@example.com", "pw", is_staff=True)
    helpdesk.user_permissions.add(Permission.objects.get(codename="view_user"))
    customer = user_pk("end-user")
    log_in(page, demo, "helpdesk")
    page.goto(f"{demo}/admin/auth/user/{customer}/change/")
    assert page.locator("#user_form, .readonly").count() > 0  # the page is there
    assert page.locator("#token-exchange-impersonate").count() == 0
    response = page.goto(f"{demo}/admin/auth/user/{customer}/impersonate/")
    assert response.status == 403
    assert not ImpersonationSession.objects.exists()


def test_the_application_page_shows_the_policy_and_keys(page, demo):
    log_in(page, demo, "admin")
    spa = get_application_model().objects.get(client_id=data.PORTAL_SPA_CLIENT_ID)
    page.goto(demo + application_admin(spa))
    page.check("#id_token_exchange_policy-0-token_exchange_enabled")
    page.click("input[name=_continue]")
    error = page.locator(".errorlist").first.inner_text()
    assert "A public client cannot use token exchange" in error
    page.locator("#token_exchange_policy-group").scroll_into_view_if_needed()
    screenshot(page, "application-policy")


def test_the_client_keys_fit_the_application_page(page, demo):
    spa = get_application_model().objects.get(client_id=data.PORTAL_SPA_CLIENT_ID)
    pairs = [generate_key_pair("RS256"), generate_key_pair("ES256")]
    for pair, algorithm in zip(pairs, ("RS256", "ES256"), strict=True):
        ClientKey.objects.create(
            application=spa, kid=pair.kid, algorithm=algorithm, public_key=pair.public_pem
        )
    log_in(page, demo, "admin")
    page.goto(demo + application_admin(spa))
    keys = page.locator("#token_exchange_keys-group")
    assert keys.locator("details.token-exchange-public-key").count() == 2
    assert_fits(page)
    # The PEM is one click away, and still fits when shown.
    keys.locator("details summary").first.click()
    assert "BEGIN PUBLIC KEY" in keys.locator("details[open] textarea").input_value()
    assert_fits(page)
    keys.scroll_into_view_if_needed()
    screenshot(page, "application-keys")


def test_the_lists_fit_at_1280_px(page, demo):
    """Every list of this app (and DOT's application list) beside its filters, with realistic
    rows: a client ID as long as DOT's generated ones, thumbprint key IDs, long reasons."""
    Application = get_application_model()
    spa = Application.objects.get(client_id=data.PORTAL_SPA_CLIENT_ID)
    crm = Application.objects.create(
        name="crm",
        client_id="Xk2v9QpL7rT4wZ8nB3mC6yH1jF5sD0aGeUiOoPlK",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    pair = generate_key_pair("RS256")
    ClientKey.objects.create(application=crm, kid=pair.kid, public_key=pair.public_pem)
    support = get_user_model().objects.get(username="support")
    customer = get_user_model().objects.get(username="end-user")
    now = timezone.now()
    minutes = datetime.timedelta(minutes=1)
    for started, ended, end_reason in ((95, 90, "stopped"), (60, 40, "replaced"), (40, None, "")):
        ImpersonationSession.objects.create(
            actor=support,
            subject=customer,
            application=spa,
            reason="Ticket #4711: customer cannot see their invoices",
            started_at=now - started * minutes,
            expires_at=now - started * minutes + 60 * minutes,
            ended_at=None if ended is None else now - ended * minutes,
            end_reason=end_reason,
        )
    session = {"id": 3, "reason": "Ticket #4711: customer cannot see their invoices"}
    for event_type, actor, payload in (
        (EventType.IMPERSONATION_STARTED, support, session),
        (EventType.USER_IMPERSONATED, support, {"impersonation": session}),
        (EventType.TOKEN_EXCHANGE_REFUSED, None, {"reason": "subject_token_audience_mismatch"}),
        (EventType.TOKEN_EXCHANGED, None, {}),
        (EventType.IMPERSONATION_ENDED, support, {**session, "end_reason": "stopped"}),
    ):
        AuditEvent.objects.create(
            event_type=event_type, actor=actor, subject=customer, application=spa, payload=payload
        )
    log_in(page, demo, "admin")
    for listing in (
        "/admin/token_exchange/impersonationsession/",
        "/admin/token_exchange/auditevent/",
        "/admin/token_exchange/impersonatorgrant/",
        "/admin/token_exchange/clientkey/",
        application_admin(),
    ):
        page.goto(demo + listing)
        assert page.locator("#result_list tbody tr").count() > 0, listing
        assert_fits(page)
    page.goto(f"{demo}/admin/token_exchange/impersonationsession/")
    statuses = page.locator("#result_list td.field-status").all_inner_texts()
    assert [status.split(" ")[0] for status in statuses] == ["Running", "Replaced", "Stopped"]
    screenshot(page, "impersonation-sessions")
    page.goto(f"{demo}/admin/token_exchange/auditevent/")
    reasons = page.locator("#result_list td.field-reason").all_inner_texts()
    assert "subject token audience mismatch" in reasons
    assert "Stopped" in reasons
    assert "Ticket #4711: customer cannot see their invoices" in reasons
    screenshot(page, "audit-events")
    page.goto(demo + application_admin())
    assert "Xk2v9QpL7rT4wZ8nB3mC6yH1jF5sD0aGeUiOoPlK" in page.inner_text("#result_list")


def test_an_admin_trusts_an_identity_provider_and_links_a_customer(page, demo):
    """Trust for another identity provider, as an admin sets it: the form refuses an issuer
    without an audience (any token it issued to anyone would do), then takes a tenant-bound
    Microsoft Entra ID issuer, and a linked identity maps one of its subjects to a customer."""
    from token_exchange.models import FederatedIdentity, TrustedIssuer

    customer = get_user_model().objects.get(username="end-user")
    tenant = "11111111-2222-3333-4444-555555555555"
    log_in(page, demo, "admin")
    page.goto(f"{demo}/admin/token_exchange/trustedissuer/add/")
    page.fill("#id_name", "Contoso (Microsoft Entra ID)")
    page.fill("#id_issuer", f"https://login.microsoftonline.com/{tenant}/v2.0")
    page.fill("#id_jwks_uri", "https://login.microsoftonline.com/common/discovery/v2.0/keys")
    page.fill("#id_audiences", "[]")
    page.check("#id_accept_access_tokens")
    page.fill("#id_required_claims", f'{{"tid": ["{tenant}"]}}')
    page.fill("#id_scope", "openid read")
    page.click("input[name=_continue]")
    assert "At least one audience" in page.locator(".errorlist").first.inner_text()
    page.fill("#id_audiences", '["api://contoso-portal"]')
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r".*/trustedissuer/\d+/change/"))
    trust = TrustedIssuer.objects.get(name="Contoso (Microsoft Entra ID)")
    assert trust.required_claims == {"tid": [tenant]}

    page.locator("#identities-group a.addlink, #identities-group .add-row a").first.click()
    page.fill("#id_identities-0-subject", "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ")
    page.fill("#id_identities-0-user", str(customer.pk))
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r".*/trustedissuer/\d+/change/"))
    assert FederatedIdentity.objects.get(issuer=trust).user == customer
    assert page.input_value("#id_jwks") == ""  # nothing pasted reads as nothing, not "null"
    assert_fits(page)
    page.locator("fieldset", has_text="What its tokens must be").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -60)")
    screenshot(page, "trusted-issuer")

    page.goto(f"{demo}/admin/token_exchange/federatedidentity/")
    assert "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ" in page.inner_text("#result_list")
    assert_fits(page)
    screenshot(page, "linked-identities")

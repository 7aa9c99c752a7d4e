"""A support user impersonates a customer from the admin, into a public single-page app.

The protocol as a browser and the app see it: the admin form, the redirect to the app's launch
URL (``iss``, ``login_hint``, no token), ``/o/authorize/`` issuing the customer's code, the
token endpoint answering with ``act``, the banner, and Stop revoking what was issued.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.models import (
    AuditEvent,
    ClientPolicy,
    ExchangedToken,
    ImpersonationSession,
    ImpersonatorGrant,
    SecuritySettings,
    is_safe_launch_url,
)

from .conftest import basic, grant, make_app
from .jwt_helpers import verify
from .test_admin import breadcrumbs

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000/o"
SPA_URL = "http://127.0.0.1:8000/portal/"
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()
EventType = AuditEvent.EventType
WITH_REFRESH = "openid profile email offline_access"


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


@pytest.fixture
def portal_spa(db: None) -> Any:
    """A public single-page app (PKCE, no secret) that support may impersonate into."""
    app = make_app(
        "portal-spa",
        exchange=None,
        client_type="public",
        redirect_uris=SPA_URL,
    )
    # The SPA keeps its sign-in with refresh tokens, so its policy lets support obtain them.
    ClientPolicy.objects.create(
        application=app,
        admin_impersonation_enabled=True,
        launch_url=SPA_URL,
        admin_impersonation_scope=WITH_REFRESH,
    )
    return app


def staff(user: Any) -> Any:
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    return user


@pytest.fixture
def support_browser(support: Any) -> Client:
    browser = Client()
    browser.force_login(staff(support))
    return browser


@pytest.fixture
def customer(end_user_in_acme: Any) -> Any:
    return end_user_in_acme


def user_page(user: Any) -> str:
    return f"/admin/auth/user/{user.pk}/change/"


def impersonate_url(user: Any) -> str:
    return f"/admin/auth/user/{user.pk}/impersonate/"


def start(browser: Client, subject: Any, app: Any, *, reason: str = "Ticket #4711", minutes: int = 15) -> Any:
    return browser.post(
        impersonate_url(subject), {"application": app.pk, "reason": reason, "minutes": minutes}
    )


class SinglePageApp:
    """What the portal's JavaScript does: authorize with PKCE, redeem the code without a secret."""

    def __init__(self, browser: Client, app: Any) -> None:
        self.browser, self.app = browser, app

    def authorize(self, *, response_type: str = "code", **extra: str) -> Any:
        self.verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=")
        query = {
            "response_type": response_type,
            "client_id": self.app.client_id,
            "redirect_uri": SPA_URL,
            "scope": "openid profile offline_access",
            "state": "s1",
            "nonce": "n1",
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
            **extra,
        }
        return self.browser.get("/o/authorize/?" + urlencode(query))

    def sign_in(self) -> Any:
        return self.redeem(self.authorize()["Location"])

    def redeem(self, location: str, **extra: str) -> Any:
        """The token request for the code in a redirect ``location`` (a public client: no secret)."""
        code = parse_qs(urlsplit(location).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_URL,
            "client_id": self.app.client_id,
            "code_verifier": self.verifier,
        }
        return Client().post("/o/token/", {**form, **extra})


def refresh(app: Any, refresh_token: str) -> Any:
    return Client().post(
        "/o/token/",
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id},
    )


def test_support_impersonates_a_customer_into_a_public_spa(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    page = support_browser.get(user_page(customer))
    assert page.status_code == 200
    assert b'id="token-exchange-impersonate"' in page.content
    assert support_browser.get(impersonate_url(customer)).status_code == 200

    launched = start(support_browser, customer, portal_spa, reason="Ticket #4711: cannot see invoices")
    assert launched.status_code == 302
    # OpenID Connect third-party initiated login: iss and login_hint, never a token or a code.
    target = urlsplit(launched["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == SPA_URL
    assert parse_qs(target.query) == {"iss": [ISSUER], "login_hint": [str(customer.pk)]}
    [started] = events(EventType.IMPERSONATION_STARTED)
    assert (started.actor, started.subject, started.application) == (support, customer, portal_spa)
    assert started.payload["reason"] == "Ticket #4711: cannot see invoices"

    tokens = SinglePageApp(support_browser, portal_spa).sign_in()
    assert tokens.status_code == 200, tokens.content
    body = tokens.json()
    _header, id_claims = verify(body["id_token"])
    assert id_claims["sub"] == str(customer.pk)
    assert id_claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    assert id_claims["nonce"] == "n1"
    access = AccessToken.objects.get(application=portal_spa)
    assert access.user == customer
    assert access.exchanged.act == {"iss": ISSUER, "sub": str(support.pk)}
    [impersonated] = events(EventType.USER_IMPERSONATED)
    assert impersonated.actor == support
    assert impersonated.subject == customer
    assert impersonated.payload["grant_type"] == "authorization_code"
    assert impersonated.payload["impersonation"]["reason"] == "Ticket #4711: cannot see invoices"
    assert body["access_token"] not in str(impersonated.payload)

    # The banner on this site's pages; the admin itself still belongs to the support user.
    home = support_browser.get("/admin/")
    assert home.status_code == 200
    assert b"token-exchange-impersonation-banner" in home.content
    assert b"are acting as end-user for portal-spa" in home.content
    assert home.wsgi_request.user == support

    stopped = support_browser.post("/o/impersonation/stop/")
    assert stopped.status_code == 302
    assert stopped["Location"] == user_page(customer)  # back where it started
    assert not AccessToken.objects.filter(application=portal_spa).exists()
    assert RefreshToken.objects.get(application=portal_spa).revoked is not None
    [ended] = events(EventType.IMPERSONATION_ENDED)
    assert ended.payload["end_reason"] == "stopped"
    assert ended.payload["revoked"]["access_tokens"] == 1
    assert refresh(portal_spa, body["refresh_token"]).json()["error"] == "invalid_grant"
    after = support_browser.get(stopped["Location"])
    assert b"token-exchange-impersonation-banner" not in after.content
    assert after.wsgi_request.user == support
    assert [str(message) for message in after.context["messages"]] == [
        "You stopped acting as end-user in portal-spa; its sign-in as them is revoked."
    ]


def test_a_user_without_a_grant_sees_no_button_and_gets_403(
    django_user_model, customer, portal_spa, impersonation_allowed
):
    helpdesk = staff(django_user_model.objects.create_user("helpdesk", "h@example.com", "pw"))
    browser = Client()
    browser.force_login(helpdesk)
    page = browser.get(user_page(customer))
    assert page.status_code == 200
    assert b"token-exchange-impersonate" not in page.content
    assert browser.get(impersonate_url(customer)).status_code == 403
    assert start(browser, customer, portal_spa).status_code == 403
    assert not ImpersonationSession.objects.exists()
    assert not AuditEvent.objects.filter(event_type__startswith="impersonation.").exists()


@pytest.mark.parametrize(
    "situation",
    ["switch_off", "no_view_permission", "admin_subject", "no_launchable_app", "anonymous"],
)
def test_everyone_else_sees_nothing(situation, support, customer, portal_spa, impersonation_allowed):
    browser = Client()
    staff(support)
    subject = customer
    if situation == "switch_off":
        impersonation_allowed.allow_impersonation = False
        impersonation_allowed.save()
    elif situation == "no_view_permission":
        support.user_permissions.clear()
    elif situation == "admin_subject":
        subject.is_staff = True  # only admin impersonators may impersonate admins
        subject.save()
    elif situation == "no_launchable_app":
        ClientPolicy.objects.filter(application=portal_spa).update(admin_impersonation_enabled=False)
    if situation != "anonymous":
        browser.force_login(support)
    page = browser.get(user_page(subject))
    assert b"token-exchange-impersonate" not in page.content
    refused = start(browser, subject, portal_spa)
    assert refused.status_code in ((403,) if situation != "anonymous" else (302,))
    assert not ImpersonationSession.objects.exists()


def test_an_application_not_offered_is_refused(support_browser, customer, portal_spa, impersonation_allowed):
    other = make_app("other-spa", exchange=None, client_type="public")
    ClientPolicy.objects.create(application=other, admin_impersonation_enabled=False, launch_url=SPA_URL)
    response = start(support_browser, customer, other)
    assert response.status_code == 200  # the form says the choice is invalid
    assert b"Select a valid choice" in response.content
    assert not ImpersonationSession.objects.exists()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"reason": "", "minutes": 15}, b"This field is required"),
        ({"reason": "   ", "minutes": 15}, b"This field is required"),
        ({"reason": "ticket", "minutes": 61}, b"less than or equal to 60"),
        ({"reason": "ticket", "minutes": 0}, b"greater than or equal to 1"),
    ],
)
def test_reason_is_required_and_duration_capped(
    form, message, support_browser, customer, portal_spa, impersonation_allowed
):
    response = support_browser.post(impersonate_url(customer), {"application": portal_spa.pk, **form})
    assert response.status_code == 200
    assert message in response.content
    assert b'<p class="errornote">' in response.content  # as on every admin form
    assert not ImpersonationSession.objects.exists()


def test_the_impersonate_form_is_laid_out_as_admin_forms_are(
    support_browser, customer, portal_spa, impersonation_allowed
):
    response = support_browser.get(impersonate_url(customer))
    assert breadcrumbs(response) == [
        "Home",
        "Authentication and Authorization",
        "Users",
        "end-user",
        "Impersonate",
    ]
    page = response.content.decode()
    assert re.search(r'<fieldset class="module aligned\s*">', page)
    for name in ("application", "reason", "minutes"):
        assert f'class="form-row field-{name}"' in page
        assert f'class="help" id="id_{name}_helptext"' in page
    assert 'aria-describedby="id_reason_helptext"' in page
    assert (
        '<div class="description">You will sign in to the application you choose as <strong>end-user</strong>'
        in page
    )
    assert 'admin/css/forms.css"' in page
    assert '<div class="submit-row">' in page
    assert 'class="closelink"' in page


def test_duration_setting_caps_the_form_and_the_tokens(
    settings, support_browser, customer, portal_spa, impersonation_allowed
):
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "ADMIN_IMPERSONATION_MAX_SECONDS": 120}
    assert b"less than or equal to 2" in start(support_browser, customer, portal_spa, minutes=3).content
    assert start(support_browser, customer, portal_spa, minutes=2).status_code == 302
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    assert 0 < body["expires_in"] <= 120
    assert verify(body["id_token"])[1]["exp"] <= timezone.now().timestamp() + 120


def test_only_the_chosen_application_signs_in_as_the_customer(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    other = make_app("other-spa", exchange=None, client_type="public", redirect_uris=SPA_URL)
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, other).sign_in().json()
    claims = verify(body["id_token"])[1]
    assert claims["sub"] == str(support.pk)
    assert "act" not in claims


def test_no_token_in_a_url_implicit_and_hybrid_are_refused(
    support_browser, customer, portal_spa, impersonation_allowed
):
    portal_spa.authorization_grant_type = "openid-hybrid"
    portal_spa.save()
    start(support_browser, customer, portal_spa)
    response = SinglePageApp(support_browser, portal_spa).authorize(response_type="code id_token")
    assert response.status_code == 302
    assert "error=access_denied" in response["Location"]
    assert "id_token=" not in response["Location"]
    assert not Grant.objects.exists()
    [refused] = events(EventType.TOKEN_EXCHANGE_REFUSED)
    assert refused.payload["reason"] == "impersonation_needs_code_flow"


def test_expiry_ends_it_and_revokes_its_tokens(support_browser, customer, portal_spa, impersonation_allowed):
    start(support_browser, customer, portal_spa)
    spa = SinglePageApp(support_browser, portal_spa)
    body = spa.sign_in().json()
    location = spa.authorize()["Location"]  # a second code, not yet redeemed
    ImpersonationSession.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    redeemed = spa.redeem(location)
    assert redeemed.status_code == 400
    assert redeemed.json()["error"] == "invalid_grant"
    # The first refusal ends the session and revokes everything issued under it.
    session = ImpersonationSession.objects.get()
    assert session.end_reason == "expired"
    assert not AccessToken.objects.filter(application=portal_spa).exists()
    assert not Grant.objects.exists()
    [ended] = events(EventType.IMPERSONATION_ENDED)
    assert ended.payload["revoked"]["authorization_codes"] == 1
    assert [event.payload["reason"] for event in events(EventType.TOKEN_EXCHANGE_REFUSED)] == [
        "impersonation_expired"
    ]
    assert refresh(portal_spa, body["refresh_token"]).json()["error"] == "invalid_grant"
    page = support_browser.get("/admin/")
    assert b"token-exchange-impersonation-banner" not in page.content


def test_expiry_is_noticed_by_the_next_page(support_browser, customer, portal_spa, impersonation_allowed):
    start(support_browser, customer, portal_spa)
    SinglePageApp(support_browser, portal_spa).sign_in()
    ImpersonationSession.objects.update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    page = support_browser.get("/admin/")
    assert b"token-exchange-impersonation-banner" not in page.content
    assert ImpersonationSession.objects.get().end_reason == "expired"
    assert not AccessToken.objects.filter(application=portal_spa).exists()


def test_switch_off_after_start_refuses_the_sign_in_and_ends_it(
    support_browser, customer, portal_spa, impersonation_allowed
):
    start(support_browser, customer, portal_spa)
    SecuritySettings.objects.update(allow_impersonation=False)
    response = SinglePageApp(support_browser, portal_spa).authorize()
    assert "error=access_denied" in response["Location"]
    assert ImpersonationSession.objects.get().end_reason == "refused"
    assert not Grant.objects.exists()


def test_grant_withdrawn_after_the_code_refuses_the_token(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    start(support_browser, customer, portal_spa)
    spa = SinglePageApp(support_browser, portal_spa)
    location = spa.authorize()["Location"]
    ImpersonatorGrant.objects.filter(user=support).delete()
    response = spa.redeem(location)
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.exists()
    assert events(EventType.TOKEN_EXCHANGE_REFUSED)[0].payload["reason"] == "actor_not_impersonator"


def test_refresh_keeps_act_while_it_lasts(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    refreshed = refresh(portal_spa, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    claims = verify(refreshed.json()["id_token"])[1]
    assert claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    assert ExchangedToken.objects.filter(impersonation__isnull=False, access_token__isnull=False).count() == 1
    support_browser.post("/o/impersonation/stop/")
    assert refresh(portal_spa, refreshed.json()["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.fixture
def backend_signed_in(support_browser: Client, customer: Any, impersonation_allowed: Any) -> tuple[Any, Any]:
    """A confidential client that exchanges tokens, signed in under support's impersonation."""
    backend = make_app("backend", redirect_uris=SPA_URL)
    ClientPolicy.objects.filter(application=backend).update(
        admin_impersonation_enabled=True, launch_url=SPA_URL, admin_impersonation_scope=WITH_REFRESH
    )
    start(support_browser, customer, backend)
    spa = SinglePageApp(support_browser, backend)
    tokens = spa.redeem(spa.authorize()["Location"], client_secret=backend.plain_secret).json()
    return backend, tokens


def test_exchanging_a_token_of_the_impersonation_ends_with_it(
    support_browser, backend_signed_in, token_endpoint
):
    backend, tokens = backend_signed_in
    exchanged = token_endpoint.exchange(
        backend, subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="openid"
    )
    assert exchanged.status_code == 200, exchanged.content
    assert ExchangedToken.objects.filter(impersonation__isnull=False, access_token__isnull=False).count() == 2
    support_browser.post("/o/impersonation/stop/")
    assert not AccessToken.objects.filter(application=backend).exists()
    again = token_endpoint.exchange(
        backend, subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert again.json()["error"] == "invalid_request"


def test_starting_another_replaces_the_first(support_browser, customer, portal_spa, impersonation_allowed):
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    start(support_browser, customer, portal_spa, reason="second ticket")
    first, second = ImpersonationSession.objects.order_by("id")
    assert first.end_reason == "replaced"
    assert second.is_active()
    assert refresh(portal_spa, body["refresh_token"]).json()["error"] == "invalid_grant"


def test_logging_out_stops_it(support_browser, customer, portal_spa, impersonation_allowed):
    start(support_browser, customer, portal_spa)
    SinglePageApp(support_browser, portal_spa).sign_in()
    support_browser.post("/admin/logout/")
    assert ImpersonationSession.objects.get().end_reason == "stopped"
    assert not AccessToken.objects.exists()


def test_stop_needs_post_csrf_and_login(support_browser, customer, portal_spa, impersonation_allowed):
    start(support_browser, customer, portal_spa)
    assert support_browser.get("/o/impersonation/stop/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = support_browser.cookies
    assert strict.post("/o/impersonation/stop/").status_code == 403
    assert Client().post("/o/impersonation/stop/").status_code == 302  # to the login page
    assert ImpersonationSession.objects.get().ended_at is None
    # Nothing was stopped, so nothing says so.
    page = support_browser.get(user_page(customer))
    assert list(page.context["messages"]) == []


def test_another_users_session_id_is_not_theirs(
    support_browser, support, customer, portal_spa, impersonation_allowed, django_user_model
):
    start(support_browser, customer, portal_spa)
    session = ImpersonationSession.objects.get()
    other = Client()
    other.force_login(staff(django_user_model.objects.create_user("other", "o@example.com", "pw")))
    store = other.session
    store["token_exchange_impersonation"] = session.pk
    store.save()
    body = SinglePageApp(other, portal_spa).authorize()
    code = parse_qs(urlsplit(body["Location"]).query)["code"][0]
    assert Grant.objects.get(code=code).user.username == "other"


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://app.example.com/launch", True),
        ("https://app.example.com/launch?x=1", True),
        ("http://127.0.0.1:8000/portal/", True),
        ("http://localhost:3000/", True),
        ("http://app.example.com/", False),
        ("https://app.example.com/#frag", False),
        ("https://user:pw@app.example.com/", False),
        ("javascript:alert(1)", False),
        ("https:///nohost", False),
    ],
)
def test_launch_url_truth_table(url, safe):
    assert is_safe_launch_url(url) is safe


def test_grant_for_the_other_org_is_not_enough(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    ImpersonatorGrant.objects.filter(user=support).delete()
    from django.contrib.auth.models import Group

    grant(support, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, Group.objects.create(name="Other"))
    assert start(support_browser, customer, portal_spa).status_code == 403


# --- Found by review: each failed before its fix ------------------------------------------------


@pytest.mark.parametrize(
    "name", ["token_exchange_impersonation", "token_exchange_refreshed", "token_exchange_context"]
)
def test_parameters_named_like_internal_state_change_nothing(name, django_user_model, portal_spa, support):
    """oauthlib answers unknown request attributes from the parameters; ours are never read so."""
    browser = Client(raise_request_exception=False)
    browser.force_login(django_user_model.objects.create_user("anyone", "a@example.com", "pw"))
    spa = SinglePageApp(browser, portal_spa)
    location = spa.authorize(**{name: str(support.pk)})["Location"]
    response = spa.redeem(location, **{name: "1"})
    assert response.status_code == 200
    assert "act" not in verify(response.json()["id_token"])[1]


def test_stop_committed_during_a_refresh_wins(
    monkeypatch, support_browser, customer, portal_spa, impersonation_allowed
):
    from token_exchange.impersonation import sessions as impersonation_sessions
    from token_exchange.oauth.validator import TokenExchangeValidator

    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    validate = TokenExchangeValidator.validate_refresh_token

    def validate_then_stop(self: Any, *args: Any, **kwargs: Any) -> bool:
        valid = validate(self, *args, **kwargs)
        impersonation_sessions.end(ImpersonationSession.objects.get(), reason="stopped")  # a concurrent Stop
        return bool(valid)

    monkeypatch.setattr(TokenExchangeValidator, "validate_refresh_token", validate_then_stop)
    response = refresh(portal_spa, body["refresh_token"])
    # The refresh re-checks the session under its lock before DOT rotates anything. (Here the
    # simulated Stop shares the refresh's transaction and is rolled back with it; a real Stop
    # commits on its own and has revoked the tokens.)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "The impersonation has ended."}
    assert AccessToken.objects.count() == 1  # nothing new was issued
    assert RefreshToken.objects.count() == 1


def test_stop_committed_during_an_exchange_wins(monkeypatch, backend_signed_in, token_endpoint):
    """The subject token is read, then Stop commits, then the decision locks the session's row:
    it sees the session ended, and nothing is issued. (A Stop that comes after the lock waits
    for the exchange to commit and revokes what it issued: test_concurrency, on PostgreSQL.)"""
    from token_exchange.impersonation import sessions as impersonation_sessions

    backend, tokens = backend_signed_in
    running = impersonation_sessions.running

    def stop_then_lock(pk: int, *, lock: bool = False) -> Any:
        impersonation_sessions.end(ImpersonationSession.objects.get(pk=pk), reason="stopped")
        return running(pk, lock=lock)

    monkeypatch.setattr(impersonation_sessions, "running", stop_then_lock)
    response = token_endpoint.exchange(
        backend, subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert response.json()["error"] == "invalid_request"
    assert not AccessToken.objects.exists()
    assert events(EventType.TOKEN_EXCHANGE_REFUSED)[-1].payload["reason"] == "impersonation_ended"


def test_a_refusal_at_the_token_endpoint_ends_the_session(
    support_browser, support, customer, portal_spa, impersonation_allowed
):
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    ImpersonatorGrant.objects.filter(user=support).delete()
    assert refresh(portal_spa, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert ImpersonationSession.objects.get().end_reason == "refused"
    assert not AccessToken.objects.filter(application=portal_spa).exists()


def test_an_application_no_longer_offered_ends_it(
    support_browser, customer, portal_spa, impersonation_allowed
):
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    ClientPolicy.objects.filter(application=portal_spa).update(admin_impersonation_enabled=False)
    assert refresh(portal_spa, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert ImpersonationSession.objects.get().end_reason == "refused"


def test_a_retry_within_the_refresh_grace_period_answers_the_same_tokens(
    settings, support_browser, customer, portal_spa, impersonation_allowed
):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 60}
    start(support_browser, customer, portal_spa)
    body = SinglePageApp(support_browser, portal_spa).sign_in().json()
    first = refresh(portal_spa, body["refresh_token"])
    retry = refresh(portal_spa, body["refresh_token"])
    assert retry.status_code == 200, retry.content
    assert retry.json()["access_token"] == first.json()["access_token"]
    assert len(events(EventType.USER_IMPERSONATED)) == 3


def test_no_jwt_access_token_from_an_admin_impersonation(backend_signed_in, token_endpoint, aggregates):
    """A JWT would verify offline after Stop; tokens of the session stay revocable rows."""
    from token_exchange.constants import JWT_TYPE

    backend, tokens = backend_signed_in
    response = token_endpoint.exchange(
        backend,
        subject_token=tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
    )
    assert response.json()["error"] == "invalid_request"
    assert events(EventType.TOKEN_EXCHANGE_REFUSED)[-1].payload["reason"] == "jwt_under_admin_impersonation"
    # The tokens of the sign-in have the client in their audience, as DOT's own do.
    ClientPolicy.objects.update_or_create(application=aggregates, defaults={"introspection": "any"})
    introspection = Client().post(
        "/o/introspect/",
        {"token": tokens["access_token"]},
        HTTP_AUTHORIZATION=basic(aggregates.client_id, aggregates.plain_secret),
    )
    assert introspection.status_code == 200, introspection.content[:300]
    introspection = introspection.json()
    assert introspection["aud"] == [backend.client_id]
    assert introspection["act"]["sub"]

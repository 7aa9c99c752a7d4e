"""An admin-started impersonation lives in the support user's browser session, and only there.

Over real HTTP, as a browser and a single-page app do it: support logs in to the admin, starts
impersonating the customer, the app signs in (``/o/authorize/``, then the token endpoint) and
holds a refresh token and an unredeemed code. Then the browser session changes hands (a login
as someone else, a flushed or expired session, a new password, a start from another browser),
and neither the refresh token nor the code works any longer.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connections, router
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from token_exchange.models import AuditEvent, ClientPolicy, ImpersonationSession

from . import test_admin_impersonation as in_process
from .conftest import make_app

pytestmark = pytest.mark.django_db(transaction=True)

SPA_URL = "http://127.0.0.1:8000/portal/"
WITH_REFRESH = "openid profile email offline_access"
STRONG_PASSWORD = "a-new-and-long-passphrase-4711"
EventType = AuditEvent.EventType


class Browser:
    """One browser at the live server: its cookies are its session."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base + path, allow_redirects=False, timeout=10)

    def post(self, path: str, data: dict[str, Any]) -> requests.Response:
        """A form post with Django's CSRF token, as the page's form sends it."""
        if "csrftoken" not in self.http.cookies:
            self.http.get(self.base + "/admin/login/", timeout=10)
        form = {**data, "csrfmiddlewaretoken": self.http.cookies["csrftoken"]}
        return self.http.post(
            self.base + path,
            data=form,
            allow_redirects=False,
            timeout=10,
            headers={"Referer": self.base + path},
        )

    @property
    def session_key(self) -> str:
        return str(self.http.cookies[django_settings.SESSION_COOKIE_NAME])

    def log_in(self, username: str, password: str = "pw") -> None:
        response = self.post("/admin/login/?next=/admin/", {"username": username, "password": password})
        assert response.status_code == 302, response.text[:500]

    def impersonate(self, subject: Any, app: Any, *, reason: str = "Ticket #4711") -> requests.Response:
        return self.post(
            f"/admin/auth/user/{subject.pk}/impersonate/",
            {"application": app.pk, "reason": reason, "minutes": 15},
        )

    def authorize(self, app: Any, *, scope: str) -> tuple[requests.Response, str]:
        """The app's ``/o/authorize/`` in this browser (PKCE); the answer and the code verifier."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        query = {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": SPA_URL,
            "scope": scope,
            "state": "s1",
            "nonce": "n1",
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
        return self.get("/o/authorize/?" + urlencode(query)), verifier

    def code(self, app: Any, *, scope: str = WITH_REFRESH) -> tuple[str, str]:
        response, verifier = self.authorize(app, scope=scope)
        assert response.status_code == 302, response.text[:500]
        return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0], verifier

    def banner(self) -> bool:
        return (
            b"token-exchange-impersonation-banner" in self.http.get(self.base + "/admin/", timeout=10).content
        )


class SinglePageApp:
    """The app's JavaScript at the token endpoint: a public client, no secret."""

    def __init__(self, base: str, app: Any) -> None:
        self.token_url, self.app = base + "/o/token/", app

    def redeem(self, code: str, verifier: str) -> requests.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_URL,
            "client_id": self.app.client_id,
            "code_verifier": verifier,
        }
        return requests.post(self.token_url, data=form, timeout=10)

    def refresh(self, refresh_token: str) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.app.client_id,
        }
        return requests.post(self.token_url, data=form, timeout=10)


def staff(user: Any) -> Any:
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    return user


@pytest.fixture
def spa(db: None) -> Any:
    """A public single-page app whose policy lets support sign in to it, with refresh tokens."""
    app = make_app("portal-spa", exchange=None, client_type="public", redirect_uris=SPA_URL)
    ClientPolicy.objects.create(
        application=app,
        admin_impersonation_enabled=True,
        launch_url=SPA_URL,
        admin_impersonation_scope=WITH_REFRESH,
    )
    return app


@pytest.fixture
def support_browser(live_server: Any, support: Any) -> Browser:
    staff(support)
    browser = Browser(live_server.url)
    browser.log_in("support")
    return browser


@pytest.fixture
def signed_in(
    live_server: Any, support_browser: Browser, end_user_in_acme: Any, spa: Any, impersonation_allowed: Any
) -> dict[str, Any]:
    """Support impersonates the customer into the SPA, which signed in (a refresh token) and
    holds a second code it has not redeemed yet."""
    started = support_browser.impersonate(end_user_in_acme, spa)
    assert started.status_code == 302, started.text[:500]
    app = SinglePageApp(live_server.url, spa)
    tokens = app.redeem(*support_browser.code(spa))
    assert tokens.status_code == 200, tokens.text
    assert "refresh_token" in tokens.json()
    return {
        "app": app,
        "tokens": tokens.json(),
        "unredeemed": support_browser.code(spa),
        "session": ImpersonationSession.objects.get(),
    }


def assert_ended(signed_in: dict[str, Any], end_reason: str, cause: str) -> ImpersonationSession:
    """Neither the refresh token nor the unredeemed code works, and the session says it ended."""
    app: SinglePageApp = signed_in["app"]
    refreshed = app.refresh(signed_in["tokens"]["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    redeemed = app.redeem(*signed_in["unredeemed"])
    assert redeemed.status_code == 400, redeemed.text
    assert redeemed.json()["error"] == "invalid_grant"
    session = ImpersonationSession.objects.get(pk=signed_in["session"].pk)
    assert session.ended_at is not None
    assert session.end_reason == end_reason
    [ended] = AuditEvent.objects.filter(event_type=EventType.IMPERSONATION_ENDED, payload__id=session.pk)
    assert ended.payload["end_reason"] == end_reason
    assert ended.payload["cause"] == cause
    return session


def refusal_reasons() -> list[str]:
    return [
        row.payload["reason"]
        for row in AuditEvent.objects.filter(event_type=EventType.TOKEN_EXCHANGE_REFUSED).order_by("id")
    ]


def test_start_binds_the_impersonation_to_this_browser_session(signed_in, support_browser, support):
    session = signed_in["session"]
    assert session.session_key == support_browser.session_key
    # A digest of the session auth hash, never the hash Django keeps in the session.
    assert session.session_auth_hash
    assert session.session_auth_hash != support.get_session_auth_hash()
    assert session.scope == WITH_REFRESH
    # While the session is the same, everything works.
    refreshed = signed_in["app"].refresh(signed_in["tokens"]["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert support_browser.banner()


def test_a_login_as_another_user_in_the_same_browser_ends_it(signed_in, support_browser, django_user_model):
    staff(django_user_model.objects.create_user("colleague", "colleague@example.com", "pw"))
    support_browser.log_in("colleague")  # Django's login() flushes support's session first
    assert_ended(signed_in, "stopped", "logged_in_as_another_user")
    assert not support_browser.banner()


@pytest.mark.parametrize("how", ["flushed", "expired"])
def test_a_session_gone_from_the_store_ends_it(how, signed_in, support_browser):
    key = support_browser.session_key
    if how == "flushed":
        import_module(django_settings.SESSION_ENGINE).SessionStore(session_key=key).delete()
    else:
        Session.objects.filter(session_key=key).update(
            expire_date=timezone.now() - datetime.timedelta(seconds=1)
        )
    assert_ended(signed_in, "expired", "session_ended")
    # Noticed at the next use of a token (no signal tells of a flush or an expiry).
    assert refusal_reasons()[0] == "session_ended"


def test_changing_the_password_in_the_admin_ends_it(signed_in, support_browser):
    changed = support_browser.post(
        "/admin/password_change/",
        {"old_password": "pw", "new_password1": STRONG_PASSWORD, "new_password2": STRONG_PASSWORD},
    )
    assert changed.status_code == 302, changed.text[:500]
    assert_ended(signed_in, "refused", "password_changed")
    # update_session_auth_hash kept support logged in, under a new session key: not the
    # impersonation's.
    assert not support_browser.banner()


def test_a_password_written_around_save_ends_it_at_the_next_use(signed_in, support, django_user_model):
    django_user_model.objects.filter(pk=support.pk).update(password=make_password(STRONG_PASSWORD))
    assert_ended(signed_in, "refused", "password_changed")
    assert refusal_reasons()[0] == "password_changed"


def test_a_session_that_no_longer_holds_it_ends_it(signed_in, support_browser):
    store = import_module(django_settings.SESSION_ENGINE).SessionStore(
        session_key=support_browser.session_key
    )
    store.load()
    store.pop("token_exchange_impersonation")
    store.save()
    assert_ended(signed_in, "refused", "session_changed_hands")
    assert refusal_reasons()[0] == "session_changed_hands"


def test_starting_from_a_second_browser_ends_the_first(
    live_server, signed_in, support_browser, end_user_in_acme, spa
):
    second = Browser(live_server.url)
    second.log_in("support")
    assert second.impersonate(end_user_in_acme, spa).status_code == 302
    assert_ended(signed_in, "replaced", "replaced")
    [running] = ImpersonationSession.objects.filter(ended_at__isnull=True)
    assert running.session_key == second.session_key
    assert not support_browser.banner()
    assert second.banner()
    tokens = signed_in["app"].redeem(*second.code(spa))
    assert tokens.status_code == 200, tokens.text


def test_the_code_carries_only_the_scopes_the_policy_allows(
    live_server, support_browser, end_user_in_acme, spa, impersonation_allowed
):
    ClientPolicy.objects.filter(application=spa).update(admin_impersonation_scope="openid profile")
    assert support_browser.impersonate(end_user_in_acme, spa).status_code == 302
    assert ImpersonationSession.objects.get().scope == "openid profile"
    app = SinglePageApp(live_server.url, spa)
    tokens = app.redeem(*support_browser.code(spa, scope="openid profile email offline_access"))
    assert tokens.status_code == 200, tokens.text
    assert sorted(tokens.json()["scope"].split(" ")) == ["openid", "profile"]


def test_no_scope_left_is_access_denied(
    live_server, support_browser, end_user_in_acme, spa, impersonation_allowed
):
    ClientPolicy.objects.filter(application=spa).update(admin_impersonation_scope="openid profile")
    support_browser.impersonate(end_user_in_acme, spa)
    response, _verifier = support_browser.authorize(spa, scope="email offline_access")
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["error"] == ["access_denied"]
    assert refusal_reasons() == ["scope_not_allowed_for_impersonation"]
    # Refused, not ended: the support user may still sign in with what the policy allows.
    assert ImpersonationSession.objects.get().ended_at is None


def test_the_default_policy_grants_openid_profile_email(
    live_server, support_browser, end_user_in_acme, spa, impersonation_allowed
):
    ClientPolicy.objects.filter(application=spa).update(
        admin_impersonation_scope=ClientPolicy._meta.get_field("admin_impersonation_scope").default
    )
    support_browser.impersonate(end_user_in_acme, spa)
    tokens = SinglePageApp(live_server.url, spa).redeem(
        *support_browser.code(spa, scope="openid email offline_access")
    )
    assert tokens.status_code == 200, tokens.text
    assert sorted(tokens.json()["scope"].split(" ")) == ["email", "openid"]


# Needs validator.py to ask impersonation_sessions.refresh_allowed before it answers with a
# refresh token (the validator's half of this rule).
def test_no_refresh_token_unless_the_policy_lists_offline_access(
    live_server, support_browser, end_user_in_acme, spa, impersonation_allowed
):
    ClientPolicy.objects.filter(application=spa).update(admin_impersonation_scope="openid profile email")
    support_browser.impersonate(end_user_in_acme, spa)
    tokens = SinglePageApp(live_server.url, spa).redeem(*support_browser.code(spa))
    assert tokens.status_code == 200, tokens.text
    assert "offline_access" not in tokens.json()["scope"].split(" ")
    assert "refresh_token" not in tokens.json()


def test_signed_cookie_sessions_cannot_start_one(
    settings, live_server, support, end_user_in_acme, spa, impersonation_allowed
):
    """Nothing at the server could end an impersonation bound to a session kept in a cookie."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    staff(support)
    browser = Browser(live_server.url)
    browser.log_in("support")
    page = browser.get(f"/admin/auth/user/{end_user_in_acme.pk}/change/")
    assert page.status_code == 200
    assert b'id="token-exchange-impersonate"' not in page.content
    assert browser.impersonate(end_user_in_acme, spa).status_code == 403
    assert not ImpersonationSession.objects.exists()


def test_a_refresh_reads_the_browser_session_twice_by_its_key(
    support, end_user_in_acme, spa, impersonation_allowed
):
    """What the binding costs a refresh: one primary-key read of the session store when the
    refresh is checked, one more under the impersonation's lock before the tokens are saved."""
    browser = Client()
    browser.force_login(staff(support))
    in_process.start(browser, end_user_in_acme, spa)
    tokens = in_process.SinglePageApp(browser, spa).sign_in().json()
    sessions = connections[router.db_for_read(Session)]
    with CaptureQueriesContext(sessions) as captured:
        assert in_process.refresh(spa, tokens["refresh_token"]).status_code == 200
    reads = [query["sql"] for query in captured.captured_queries if '"django_session"' in query["sql"]]
    assert len(reads) == 2, reads
    assert all('"django_session"."session_key" = ' in sql for sql in reads), reads


def test_the_browser_session_under_a_new_key_is_not_the_one_it_was_bound_to(
    support, end_user_in_acme, spa, impersonation_allowed
):
    """``cycle_key`` keeps the session's data under a new key; the impersonation stays with the
    old one, which is gone: the banner's next page ends it."""
    browser = Client()
    browser.force_login(staff(support))
    in_process.start(browser, end_user_in_acme, spa)
    tokens = in_process.SinglePageApp(browser, spa).sign_in().json()
    store = browser.session
    store.cycle_key()
    store.save()
    browser.cookies[django_settings.SESSION_COOKIE_NAME] = store.session_key
    page = browser.get("/admin/")
    assert page.wsgi_request.user == support
    assert b"token-exchange-impersonation-banner" not in page.content
    session = ImpersonationSession.objects.get()
    assert session.end_reason == "refused"
    assert in_process.refresh(spa, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_the_session_key_and_auth_hash_digest_are_never_shown(
    support, end_user_in_acme, spa, impersonation_allowed, admin_client
):
    browser = Client()
    browser.force_login(staff(support))
    in_process.start(browser, end_user_in_acme, spa)
    session = ImpersonationSession.objects.get()
    page = admin_client.get(f"/admin/token_exchange/impersonationsession/{session.pk}/change/")
    assert page.status_code == 200
    assert session.scope.encode() in page.content
    assert session.session_key.encode() not in page.content
    assert session.session_auth_hash.encode() not in page.content
    [started] = AuditEvent.objects.filter(event_type=EventType.IMPERSONATION_STARTED)
    assert session.session_key not in str(started.payload)
    assert session.session_auth_hash not in str(started.payload)


@pytest.mark.parametrize("failure", ["load raises", "cache engine reads an error as empty"])
def test_a_session_store_outage_refuses_without_ending_it(failure, signed_in, monkeypatch):
    """A store that does not answer is no ended session: the request is refused, the impersonation
    goes on, and works again once the store answers."""
    from django.contrib.sessions.backends.cache import SessionStore as CacheStore

    store_class = import_module(django_settings.SESSION_ENGINE).SessionStore
    if failure == "load raises":

        def broken(self: Any) -> Any:
            raise ConnectionError("session store down")

        monkeypatch.setattr(store_class, "load", broken)
    else:
        # Django's cache engine: load() answers {} on a cache error, exists() still finds the key.
        monkeypatch.setattr(store_class, "load", lambda self: {})
        monkeypatch.setattr(store_class, "exists", lambda self, key: True)
        monkeypatch.setattr(
            "token_exchange.impersonation.sessions._swallows_errors", lambda cls: cls is store_class
        )
        assert not issubclass(store_class, CacheStore)  # the test settings use the database engine
    app = signed_in["app"]
    refused = app.refresh(signed_in["tokens"]["refresh_token"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    session = ImpersonationSession.objects.get(pk=signed_in["session"].pk)
    assert session.ended_at is None
    assert refusal_reasons()[-1] == "session_store_unavailable"
    monkeypatch.undo()
    refreshed = app.refresh(signed_in["tokens"]["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text

"""An impersonation lives only as long as its actor's authorization, and an ID token only as long
as the login it came from (issue 17, sections 3 and 4), over real HTTP.

Support impersonates the customer with ``offline_access``; then support's authorization ends in
every way it can: RFC 7009 revocation of the access or of the refresh token, deactivation,
logout, expiry. Each time the impersonated refresh and re-exchange fail and the impersonated
tokens are gone (introspection says inactive), with a ``tokens.revoked`` audit row where the end
had a hook. Support's own routine refresh, on the other hand, keeps the impersonation alive.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, INTROSPECT_ANY, USER_ID_TYPE
from token_exchange.models import AuditEvent, ClientPolicy, ExchangedToken, ImpersonatorGrant

from .adversarial import OneConnectionPerRequest, TokenClient
from .conftest import grant, make_app
from .db_faults import failing_insert
from .test_admin_impersonation import SPA_URL, WITH_REFRESH, SinglePageApp, staff, start

pytestmark = pytest.mark.django_db(transaction=True)

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
REVOKED = AuditEvent.EventType.TOKENS_REVOKED


class Server(TokenClient):
    """The token, revocation and introspection endpoints of the live server."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.base_url = base_url

    def revoke(self, app: Any, token: str, hint: str | None = None) -> None:
        data = {"token": token, **({"token_type_hint": hint} if hint else {})}
        response = OneConnectionPerRequest().post(
            f"{self.base_url}/o/revoke_token/", data=data, auth=(app.client_id, app.plain_secret), timeout=30
        )
        assert response.status_code == 200, response.text

    def active(self, inspector: Any, token: str) -> bool:
        response = OneConnectionPerRequest().post(
            f"{self.base_url}/o/introspect/",
            data={"token": token},
            auth=(inspector.client_id, inspector.plain_secret),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["active"])

    def refresh(self, app: Any, refresh_token: str) -> Any:
        return self.post(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(app.client_id, app.plain_secret),
        )

    def re_exchange(self, app: Any, access_token: str) -> Any:
        return self.exchange(
            app, subject_token=access_token, subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
        )

    def impersonate(self, app: Any, actor_token: str, subject: Any, **params: Any) -> Any:
        return self.exchange(
            app,
            subject_token=str(subject.pk),
            subject_token_type=USER_ID_TYPE,
            actor_token=actor_token,
            actor_token_type=params.pop("actor_token_type", ACCESS_TOKEN_TYPE),
            **params,
        )


@pytest.fixture
def http(live_server: Any) -> Server:
    return Server(live_server.url)


@pytest.fixture
def inspector(db: None) -> Any:
    """A resource server that may introspect any token."""
    app = make_app("inspector", exchange=None)
    ClientPolicy.objects.create(application=app, introspection=INTROSPECT_ANY)
    return app


@pytest.fixture
def actor_tokens(login: Any, support: Any) -> dict[str, Any]:
    """Support's own login at the portal, with a refresh token."""
    return dict(login(support))


@pytest.fixture
def impersonated(
    http: Server, portal: Any, impersonation_allowed: Any, end_user_in_acme: Any, actor_tokens: dict[str, Any]
) -> dict[str, Any]:
    """Tokens support obtained for the customer, with offline_access: a refresh token too."""
    response = http.impersonate(
        portal, actor_tokens["access_token"], end_user_in_acme, scope="openid offline_access read"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"access_token", "refresh_token", "id_token"} <= body.keys()
    return dict(body)


def revocations() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=REVOKED).order_by("pk"))


def assert_ended(http: Server, portal: Any, inspector: Any, impersonated: dict[str, Any]) -> None:
    """The impersonated tokens are gone, and neither a refresh nor a re-exchange brings them back."""
    assert not http.active(inspector, impersonated["access_token"])
    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    exchanged = http.re_exchange(portal, impersonated["access_token"])
    assert exchanged.status_code == 400, exchanged.text
    assert "access_token" not in exchanged.json()
    assert not ExchangedToken.objects.filter(act__isnull=False, access_token__isnull=False).exists()
    assert not RefreshToken.objects.filter(exchanged__act__isnull=False, revoked__isnull=True).exists()


@pytest.mark.parametrize(
    ("which", "hint"),
    [
        ("access_token", "access_token"),
        ("access_token", None),
        ("refresh_token", "refresh_token"),
        ("refresh_token", None),
    ],
)
def test_revoking_the_actors_token_ends_the_impersonation_at_once(
    http, portal, inspector, support, actor_tokens, impersonated, which, hint
):
    assert http.active(inspector, impersonated["access_token"])

    http.revoke(portal, actor_tokens[which], hint)

    # Eagerly, in the revocation's transaction: before any refresh is tried.
    assert not http.active(inspector, impersonated["access_token"])
    [row] = revocations()
    assert row.payload["reason"] == "actor_token_revoked"
    assert row.actor == support
    assert row.application == portal
    assert row.payload["revoked"]["access_tokens"] == 1
    assert row.payload["revoked"]["refresh_tokens"] == 1
    assert row.payload["revoked"]["id_tokens"] == 1
    assert_ended(http, portal, inspector, impersonated)


def test_deactivating_the_actor_ends_the_impersonation_at_once(
    http, portal, inspector, support, impersonated
):
    support.is_active = False
    support.save()

    [row] = revocations()
    assert row.payload["reason"] == "actor_deactivated"
    assert row.actor == support
    assert row.payload["revoked"]["refresh_tokens"] == 1
    assert_ended(http, portal, inspector, impersonated)


def test_the_actors_routine_refresh_keeps_the_impersonation_and_its_revocation_still_ends_it(
    http, portal, inspector, actor_tokens, impersonated
):
    actor = actor_tokens
    for _ in range(2):
        response = http.refresh(portal, actor["refresh_token"])
        assert response.status_code == 200, response.text
        actor = response.json()
    assert not AccessToken.objects.filter(token_checksum=_checksum(actor_tokens["access_token"])).exists()

    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert http.re_exchange(portal, renewed["access_token"]).status_code == 200
    assert http.active(inspector, renewed["access_token"])
    assert revocations() == []

    # The refreshed impersonation keeps the lineage: it ends with support's newest refresh token.
    http.revoke(portal, actor["refresh_token"], "refresh_token")
    assert [row.payload["reason"] for row in revocations()] == ["actor_token_revoked"]
    assert_ended(http, portal, inspector, renewed)


def test_revoking_an_actor_token_a_refresh_replaced_ends_nothing(
    http, portal, inspector, actor_tokens, impersonated
):
    response = http.refresh(portal, actor_tokens["refresh_token"])
    assert response.status_code == 200, response.text

    http.revoke(portal, actor_tokens["refresh_token"], "refresh_token")  # already rotated

    assert http.active(inspector, impersonated["access_token"])
    assert http.refresh(portal, impersonated["refresh_token"]).status_code == 200
    assert revocations() == []


def test_logout_that_deletes_the_actors_tokens_ends_refresh_and_re_exchange(
    http, portal, inspector, support, actor_tokens, impersonated
):
    """DOT's RP-initiated logout (OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS) has no hook: the next
    use finds the ended authorization, is refused, and revokes what hangs off it."""
    AccessToken.objects.filter(user=support).delete()  # what the logout does to the access tokens
    RefreshToken.objects.filter(user=support).update(revoked=timezone.now())  # and refresh tokens

    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    [row] = revocations()
    assert row.payload["reason"] == "actor_authorization_ended"
    assert row.payload["revoked"]["refresh_tokens"] == 1
    refusal = AuditEvent.objects.get(event_type=AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED)
    assert refusal.payload["reason"] == "actor_authorization_ended"
    assert_ended(http, portal, inspector, impersonated)


def test_a_re_exchange_finds_the_ended_authorization_too(http, portal, inspector, support, impersonated):
    AccessToken.objects.filter(user=support).delete()
    RefreshToken.objects.filter(user=support).update(revoked=timezone.now())

    response = http.re_exchange(portal, impersonated["access_token"])

    assert response.status_code == 400, response.text
    assert [row.payload["reason"] for row in revocations()] == ["actor_authorization_ended"]
    assert_ended(http, portal, inspector, impersonated)


def test_expiry_of_the_actors_refresh_token_ends_refreshes(
    http, portal, inspector, settings, support, impersonated
):
    """With REFRESH_TOKEN_EXPIRE_SECONDS, support's authorization expires that long after its
    access token: the impersonation with it."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "REFRESH_TOKEN_EXPIRE_SECONDS": 60}
    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    AccessToken.objects.filter(user=support).update(expires=timezone.now() - datetime.timedelta(seconds=61))

    response = http.refresh(portal, refreshed.json()["refresh_token"])

    assert response.status_code == 400, response.text
    assert [row.payload["reason"] for row in revocations()] == ["actor_authorization_ended"]


def test_expiry_of_an_actor_token_without_refresh_token_ends_refreshes(
    http, portal, inspector, login, impersonation_allowed, support, end_user_in_acme
):
    """An actor token without a refresh token is its own authorization: its expiry ends the
    impersonation, whatever the customer's refresh token would allow. (Support's token here is
    one exchanged for their login without offline_access: it has no refresh token.)"""
    exchanged = http.re_exchange(portal, login(support)["access_token"])
    assert exchanged.status_code == 200, exchanged.text
    actor = exchanged.json()
    assert "refresh_token" not in actor
    customer = login(end_user_in_acme)
    response = http.exchange(
        portal,
        subject_token=customer["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        actor_token=actor["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid offline_access read",
    )
    assert response.status_code == 200, response.text
    impersonated = response.json()
    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text

    AccessToken.objects.filter(token_checksum=_checksum(actor["access_token"])).update(
        expires=timezone.now() - datetime.timedelta(seconds=1)
    )
    response = http.refresh(portal, refreshed.json()["refresh_token"])

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert [row.payload["reason"] for row in revocations()] == ["actor_authorization_ended"]


def test_a_nested_impersonation_lives_by_the_older_actors_authorization_too(
    http, portal, inspector, login, django_user_model, acme, support, actor_tokens, impersonated
):
    lead = django_user_model.objects.create_user("lead", "lead@example.com", "pw")
    lead.groups.add(acme)
    grant(lead, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    response = http.exchange(
        portal,
        subject_token=impersonated["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        actor_token=login(lead)["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid offline_access read",
    )
    assert response.status_code == 200, response.text
    nested = response.json()

    http.revoke(portal, actor_tokens["refresh_token"], "refresh_token")  # the older actor's

    assert not http.active(inspector, nested["access_token"])
    assert http.refresh(portal, nested["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("position", ["subject_token", "actor_token"])
def test_an_id_token_of_a_revoked_login_is_refused(
    http, portal, impersonation_allowed, end_user_in_acme, login, support, position
):
    """Section 4: the user's own ID token as subject, support's as actor."""
    user = end_user_in_acme if position == "subject_token" else support
    tokens = login(user)

    def send() -> Any:
        if position == "subject_token":
            return http.exchange(portal, subject_token=tokens["id_token"], subject_token_type=ID_TOKEN_TYPE)
        return http.impersonate(
            portal, tokens["id_token"], end_user_in_acme, actor_token_type=ID_TOKEN_TYPE, scope="openid"
        )

    assert send().status_code == 200
    http.revoke(portal, tokens["refresh_token"], "refresh_token")

    response = send()

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    refusal = AuditEvent.objects.filter(event_type=AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED).get()
    assert refusal.payload["reason"] == "authorization_ended"


def test_an_id_token_outlives_its_access_token_only_while_the_refresh_token_can_renew_it(
    http, portal, end_user_in_acme, login
):
    tokens = login(end_user_in_acme)
    AccessToken.objects.filter(user=end_user_in_acme).update(
        expires=timezone.now() - datetime.timedelta(seconds=1)
    )
    send = lambda: http.exchange(portal, subject_token=tokens["id_token"], subject_token_type=ID_TOKEN_TYPE)  # noqa: E731
    assert send().status_code == 200

    RefreshToken.objects.filter(user=end_user_in_acme).update(revoked=timezone.now())

    assert send().status_code == 400


def test_an_impersonated_token_from_before_lineage_was_recorded_is_refused(
    http, portal, inspector, impersonated
):
    """Tokens issued before migration 0007 name no authorization: refreshed or re-exchanged, they
    are refused (and revoked), rather than living on unchecked."""
    ExchangedToken.objects.update(actor_token_family=None, actor_access_token=None)

    response = http.refresh(portal, impersonated["refresh_token"])

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def test_other_users_tokens_are_left_alone(
    http, portal, inspector, support, login, end_user_in_acme, impersonated
):
    others = login(end_user_in_acme)
    Group.objects.create(name="unrelated")

    support.is_active = False
    support.save()

    assert http.active(inspector, others["access_token"])
    assert http.refresh(portal, others["refresh_token"]).status_code == 200


def _checksum(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# Admin-started impersonation: refresh tokens only with offline_access --------------------------


@pytest.mark.parametrize(
    ("policy_scope", "refreshable"), [("openid profile email", False), (WITH_REFRESH, True)]
)
def test_an_admin_started_impersonation_gets_a_refresh_token_only_with_offline_access(
    support, end_user_in_acme, impersonation_allowed, policy_scope, refreshable
):
    spa = make_app("portal-spa", exchange=None, client_type="public", redirect_uris=SPA_URL)
    ClientPolicy.objects.create(
        application=spa,
        admin_impersonation_enabled=True,
        launch_url=SPA_URL,
        admin_impersonation_scope=policy_scope,
    )
    browser = Client()
    browser.force_login(staff(support))
    assert start(browser, end_user_in_acme, spa).status_code == 302

    response = SinglePageApp(browser, spa).sign_in()  # asks for offline_access

    assert response.status_code == 200, response.content
    assert ("refresh_token" in response.json()) is refreshable
    assert RefreshToken.objects.filter(application=spa).exists() is refreshable


# Every exchanged token lives by the root it descends from (review findings 1-3) -----------------

TOKEN_REFUSED = AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED
WITH_OFFLINE = "openid offline_access read"


def plain_exchange(http: Server, app: Any, subject_token: str, **params: Any) -> dict[str, Any]:
    """A plain exchange (no actor) of ``subject_token``, by default with offline_access."""
    params.setdefault("scope", "openid offline_access read")
    response = http.exchange(app, subject_token=subject_token, subject_token_type=ACCESS_TOKEN_TYPE, **params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def refusals() -> list[str]:
    return [
        row.payload["reason"] for row in AuditEvent.objects.filter(event_type=TOKEN_REFUSED).order_by("pk")
    ]


def test_an_actor_token_from_a_plain_exchange_lives_by_the_actors_login(
    http, portal, inspector, support, end_user_in_acme, actor_tokens, impersonation_allowed
):
    """Review finding 1: a plain exchange of support's login with offline_access mints a refresh
    token in a family of its own; an impersonation with that token as actor must still end when
    support's login (A1/R1) is revoked, not live on in the new family."""
    derived = plain_exchange(http, portal, actor_tokens["access_token"])
    assert "refresh_token" in derived
    response = http.impersonate(
        portal, derived["access_token"], end_user_in_acme, scope="openid offline_access read"
    )
    assert response.status_code == 200, response.text
    impersonated = response.json()

    http.revoke(portal, actor_tokens["access_token"])
    http.revoke(portal, actor_tokens["refresh_token"])

    assert not http.active(inspector, impersonated["access_token"])
    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    assert http.refresh(portal, derived["refresh_token"]).json()["error"] == "invalid_grant"
    assert {row.payload["reason"] for row in revocations()} == {"actor_token_revoked", "token_revoked"}


def test_revoking_the_exchanged_actor_token_ends_the_impersonation_too(
    http, portal, inspector, support, end_user_in_acme, actor_tokens, impersonation_allowed
):
    """The impersonation lives by support's login and by the exchanged token that acted:
    revoking either ends it, while the login itself lives on."""
    derived = plain_exchange(http, portal, actor_tokens["access_token"])
    impersonated = http.impersonate(
        portal, derived["access_token"], end_user_in_acme, scope="openid offline_access read"
    ).json()

    http.revoke(portal, derived["refresh_token"], "refresh_token")

    assert not http.active(inspector, impersonated["access_token"])
    assert http.refresh(portal, impersonated["refresh_token"]).json()["error"] == "invalid_grant"
    assert http.active(inspector, actor_tokens["access_token"])
    assert [row.payload["reason"] for row in revocations()] == ["actor_token_revoked"]


@pytest.mark.parametrize("ended_by", ["rfc7009", "revoke_family"])
@pytest.mark.parametrize("position", ["subject_token", "actor_token"])
def test_an_exchanged_id_token_is_refused_once_its_login_ended(
    http, portal, support, end_user_in_acme, actor_tokens, impersonation_allowed, position, ended_by
):
    """Review finding 2: an ID token minted by an exchange has no at_hash; it is accepted only
    while the login it descends from lives, as subject and as actor. Revoked at the RFC 7009
    endpoint, the ID token goes with the login at once (the cascade); ended without a hook
    (reuse detection, logout), the reader finds the ended root and refuses it."""
    response = http.exchange(
        portal,
        subject_token=actor_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=ID_TOKEN_TYPE,
        scope="openid",
    )
    assert response.status_code == 200, response.text
    id_token = response.json()["access_token"]

    def send() -> Any:
        if position == "subject_token":
            return http.exchange(
                portal, subject_token=id_token, subject_token_type=ID_TOKEN_TYPE, scope="openid"
            )
        return http.impersonate(
            portal, id_token, end_user_in_acme, actor_token_type=ID_TOKEN_TYPE, scope="openid"
        )

    assert send().status_code == 200
    if ended_by == "rfc7009":
        http.revoke(portal, actor_tokens["refresh_token"], "refresh_token")
    else:
        RefreshToken.revoke_family(
            RefreshToken.objects.get(user=support, exchanged__isnull=True).token_family
        )

    response = send()

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "error_description": "The request was refused."}
    expected = "unknown_token" if ended_by == "rfc7009" else "authorization_ended"
    assert refusals()[-1] == expected
    assert not ExchangedToken.objects.filter(id_token__isnull=False, act__isnull=True).exists()


def test_an_exchanged_token_without_a_recorded_root_is_refused_as_actor(
    http, portal, support, end_user_in_acme, actor_tokens, impersonation_allowed
):
    """Fail closed: an exchanged token that names no authorization (issued before roots were
    recorded) acts for nobody and is never the root of an impersonation without lineage."""
    derived = plain_exchange(http, portal, actor_tokens["access_token"], scope="read")
    ExchangedToken.objects.update(actor_token_family=None, actor_access_token=None)

    response = http.impersonate(portal, derived["access_token"], end_user_in_acme, scope="read")

    assert response.status_code == 400, response.text
    assert response.json()["error_description"] == "The request was refused."
    assert refusals() == ["authorization_ended"]
    assert not ExchangedToken.objects.filter(act__isnull=False).exists()


def test_revoking_the_actors_family_ends_the_impersonation_at_introspection_at_once(
    http, portal, inspector, login, support, end_user_in_acme, impersonation_allowed
):
    """Review finding 3: reuse detection (``RefreshToken.revoke_family``) has no hook; the
    impersonated access token must read inactive at once, not after someone tries a refresh,
    and DOT's own bearer check (here UserInfo) must refuse it too. (Support's login asks for no
    resource, so that the impersonated token is not restricted away from UserInfo.)"""
    actor = login(support, resources=())
    response = http.impersonate(portal, actor["access_token"], end_user_in_acme, scope=WITH_OFFLINE)
    assert response.status_code == 200, response.text
    impersonated = response.json()
    assert http.active(inspector, impersonated["access_token"])
    assert userinfo(http, impersonated["access_token"]) == 200

    RefreshToken.revoke_family(RefreshToken.objects.get(user=support).token_family)

    assert userinfo(http, impersonated["access_token"]) == 401
    # Found ended at the bearer check, and revoked there with what hangs off the authorization.
    assert [row.payload["reason"] for row in revocations()] == ["actor_authorization_ended"]
    assert not RefreshToken.objects.filter(exchanged__act__isnull=False, revoked__isnull=True).exists()
    assert not http.active(inspector, impersonated["access_token"])
    refreshed = http.refresh(portal, impersonated["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"


def test_introspection_alone_finds_an_ended_family(http, portal, inspector, support, impersonated):
    RefreshToken.revoke_family(RefreshToken.objects.get(user=support).token_family)

    assert not http.active(inspector, impersonated["access_token"])

    assert [row.payload["reason"] for row in revocations()] == ["actor_authorization_ended"]
    assert not AccessToken.objects.filter(exchanged__act__isnull=False).exists()


def userinfo(http: Server, access_token: str) -> int:
    response = OneConnectionPerRequest().get(
        f"{http.base_url}/o/userinfo/", headers={"Authorization": f"Bearer {access_token}"}, timeout=30
    )
    return int(response.status_code)


def test_revoking_the_login_revokes_what_a_plain_exchange_issued_in_the_same_transaction(
    http, portal, inspector, end_user, user_tokens
):
    """RFC 7009 on the subject's login: the refresh token a plain exchange issued stops working,
    revoked by the cascade in the revocation's own transaction (if its audit row cannot be
    written, the login's revocation is rolled back too)."""
    exchanged = plain_exchange(http, portal, user_tokens["access_token"])
    revoke = lambda: OneConnectionPerRequest().post(  # noqa: E731
        f"{http.base_url}/o/revoke_token/",
        data={"token": user_tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(portal.client_id, portal.plain_secret),
        timeout=30,
    )

    with failing_insert(AuditEvent, "NEW.event_type = 'tokens.revoked'"):
        assert revoke().status_code == 500
    assert not RefreshToken.objects.filter(user=end_user, revoked__isnull=False).exists()
    assert http.active(inspector, exchanged["access_token"])

    assert revoke().status_code == 200

    # Eagerly: before anyone uses the exchanged tokens again.
    [row] = revocations()
    assert row.payload["reason"] == "token_revoked"
    assert row.subject == end_user
    assert row.payload["revoked"]["refresh_tokens"] == 1
    assert not RefreshToken.objects.filter(exchanged__isnull=False, revoked__isnull=True).exists()
    assert not http.active(inspector, exchanged["access_token"])
    refreshed = http.refresh(portal, exchanged["refresh_token"])
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"


def test_a_plain_exchanged_refresh_fails_once_the_login_ended_without_a_hook(
    http, portal, inspector, end_user, user_tokens
):
    exchanged = plain_exchange(http, portal, user_tokens["access_token"])
    RefreshToken.revoke_family(RefreshToken.objects.get(user=end_user, exchanged__isnull=True).token_family)

    refreshed = http.refresh(portal, exchanged["refresh_token"])

    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    assert refusals() == ["authorization_ended"]
    assert [row.payload["reason"] for row in revocations()] == ["authorization_ended"]
    assert not http.active(inspector, exchanged["access_token"])


def test_a_re_exchange_lives_by_the_login_and_by_the_token_it_was_exchanged_from(
    http, portal, inspector, end_user, user_tokens
):
    first = plain_exchange(http, portal, user_tokens["access_token"])
    second = plain_exchange(http, portal, first["access_token"])

    http.revoke(portal, first["refresh_token"], "refresh_token")

    assert not http.active(inspector, second["access_token"])
    assert http.refresh(portal, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert http.active(inspector, user_tokens["access_token"])  # the login lives on


def test_the_users_routine_refresh_keeps_what_was_exchanged_from_their_login(
    http, portal, inspector, end_user, user_tokens
):
    exchanged = plain_exchange(http, portal, user_tokens["access_token"])
    login_tokens = user_tokens
    for _ in range(2):
        response = http.refresh(portal, login_tokens["refresh_token"])
        assert response.status_code == 200, response.text
        login_tokens = response.json()

    assert http.active(inspector, exchanged["access_token"])
    refreshed = http.refresh(portal, exchanged["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert http.active(inspector, renewed["access_token"])
    assert http.re_exchange(portal, renewed["access_token"]).status_code == 200
    assert revocations() == []

    # The refreshed token keeps the root: it ends with the newest refresh token of the login.
    http.revoke(portal, login_tokens["refresh_token"], "refresh_token")
    assert not http.active(inspector, renewed["access_token"])
    assert http.refresh(portal, renewed["refresh_token"]).json()["error"] == "invalid_grant"


# The second review: a cascade's size, its audit rows, a huge refresh lifetime --------------------


def test_a_lazy_end_names_the_support_user_in_its_audit_row(http, portal, inspector, support, impersonated):
    """Found ended at introspection (no hook told of it): the tokens.revoked row of the impersonated
    tokens names the actor acting in them, so a search for the support user finds it."""
    RefreshToken.revoke_family(RefreshToken.objects.get(user=support).token_family)

    assert not http.active(inspector, impersonated["access_token"])

    [row] = revocations()
    assert (row.payload["reason"], row.actor) == ("actor_authorization_ended", support)


def test_a_customer_ending_their_login_names_the_actor_and_says_who_ended_it(
    http, portal, login, support, end_user_in_acme, impersonation_allowed, actor_tokens
):
    """A delegation on the customer's own token ends when the customer revokes their login: the
    row still names the support user as actor, and the customer as who ended it."""
    customer = login(end_user_in_acme)
    response = http.exchange(
        portal,
        subject_token=customer["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        actor_token=actor_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="read",
    )
    assert response.status_code == 200, response.text

    http.revoke(portal, customer["refresh_token"], "refresh_token")

    impersonated_rows = [row for row in revocations() if row.payload["reason"].startswith("actor_")]
    assert [(row.actor, row.payload["ended_by"]) for row in impersonated_rows] == [
        (support, {"user_id": str(end_user_in_acme.pk)})
    ]


def test_a_large_cascade_is_revoked_in_batches_in_one_transaction(http, portal, login, end_user, monkeypatch):
    """A busy login has many descendants; they are revoked a batch at a time (a query may carry
    only so many parameters), all of them, and counted in one audit row."""
    from token_exchange.issuance import lineage

    monkeypatch.setattr(lineage, "_BATCH", 2)
    tokens = login(end_user)
    issued = [plain_exchange(http, portal, tokens["access_token"], scope="read") for _ in range(5)]

    http.revoke(portal, tokens["refresh_token"], "refresh_token")

    assert not ExchangedToken.objects.filter(access_token__isnull=False).exists()
    [row] = revocations()
    assert row.payload["revoked"]["access_tokens"] == len(issued)


def test_a_huge_refresh_token_lifetime_is_no_error(http, portal, inspector, impersonated, settings):
    """ "Never expires" written as 10^11 seconds: DOT accepts it, and so must the liveness test."""
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "REFRESH_TOKEN_EXPIRE_SECONDS": 10**11}
    from oauth2_provider.settings import oauth2_settings

    oauth2_settings.reload()
    try:
        assert http.active(inspector, impersonated["access_token"])
        refreshed = http.refresh(portal, impersonated["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
    finally:
        del settings.OAUTH2_PROVIDER
        oauth2_settings.reload()

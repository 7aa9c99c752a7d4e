"""Impersonation over the token endpoint: ZITADEL's examples, the switch, refusals and audit."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client, override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from example_project.demo import data
from token_exchange import signals
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, ID_TOKEN_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.issuance import audit
from token_exchange.models import AuditEvent, ImpersonatorGrant, SecuritySettings

from .conftest import grant, make_app, refusals, token_events
from .jwt_helpers import verify
from .test_exchange import introspect

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()
ISSUER = "http://127.0.0.1:8000/o"
EventType = AuditEvent.EventType


def token_rows() -> tuple[int, int, int]:
    return AccessToken.objects.count(), RefreshToken.objects.count(), IDToken.objects.count()


def impersonate(token_endpoint: Any, app: Any, actor_tokens: dict[str, Any], **params: Any) -> Any:
    params.setdefault("actor_token", actor_tokens["access_token"])
    params.setdefault("actor_token_type", ACCESS_TOKEN_TYPE)
    return token_endpoint.exchange(app, **params)


def assert_refused(response: Any, before: tuple[int, int, int], reason: str, error: str = "invalid_request"):
    """Status, error, no token issued, no token rows written, exactly one refusal row."""
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error
    assert "access_token" not in body
    assert token_rows() == before
    rows = refusals()
    assert [row.payload["reason"] for row in rows] == [reason]
    assert not token_events().exclude(event_type=EventType.TOKEN_EXCHANGE_REFUSED).exists()
    return rows[0]


# ZITADEL's examples --------------------------------------------------------------------------


def test_impersonation_by_user_id_gives_a_jwt_with_act(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    """The guide's "Impersonation by user ID example"."""
    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid profile email",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == JWT_TYPE
    assert body["scope"] == "email openid profile"
    _header, claims = verify(body["access_token"])
    assert claims["sub"] == str(end_user_in_acme.pk)
    assert claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    # The user id carries no audience: the actor token's.
    assert data.AGGREGATES_URI in claims["aud"]
    _header, id_claims = verify(body["id_token"])
    assert id_claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    assert id_claims["email"] == "end-user@example.com"
    assert id_claims["name"] == "end user"


def test_delegation_by_token_gives_act_in_introspection_and_apis(
    token_endpoint,
    portal,
    aggregates,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
    user_tokens,
):
    """The guide's "Delegation by token example", with an opaque result."""
    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
    )

    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    assert token.count(".") == 0  # opaque
    claims = introspect(token, aggregates)
    assert claims["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    api = Client().get("/api/aggregates/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.status_code == 200
    assert api.json()["act"] == {"iss": ISSUER, "sub": str(support.pk)}
    # The privileged API refuses the impersonated token; the customer's own token still works.
    assert Client().get("/api/settings/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    own = Client().get("/api/settings/", HTTP_AUTHORIZATION=f"Bearer {user_tokens['access_token']}")
    assert own.status_code == 200


def test_id_token_subject_lends_subject_data_and_the_actor_authorization(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme, user_tokens
):
    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=user_tokens["id_token"],
        subject_token_type=ID_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid email read",
    )

    assert response.status_code == 200, response.content
    _header, claims = verify(response.json()["access_token"])
    assert claims["scope"] == "email openid read"
    assert claims["act"]["sub"] == str(support.pk)


def test_refresh_of_an_impersonated_token_keeps_act_and_is_audited(
    token_endpoint, portal, aggregates, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    """The guide's "Refresh an impersonated token example"."""
    first = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid profile email offline_access",
    ).json()
    assert "refresh_token" in first

    response = token_endpoint.post(
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["expires_in"] <= 3600
    act = {"iss": ISSUER, "sub": str(support.pk)}
    assert introspect(body["access_token"], aggregates)["act"] == act
    _header, id_claims = verify(body["id_token"])
    assert id_claims["act"] == act
    # The refreshed refresh token keeps act too: a second refresh still names the actor.
    again = token_endpoint.post(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert again.status_code == 200, again.content
    assert introspect(again.json()["access_token"], aggregates)["act"] == act

    impersonated = AuditEvent.objects.filter(event_type=EventType.USER_IMPERSONATED).order_by("id")
    assert [event.payload["grant_type"] for event in impersonated] == [
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "refresh_token",
        "refresh_token",
    ]
    assert all(event.actor == support and event.subject == end_user_in_acme for event in impersonated)


@override_settings(TOKEN_EXCHANGE={"IMPERSONATION_TOKEN_EXPIRE_SECONDS": 600})
def test_impersonated_tokens_are_short_lived_and_never_outlive_the_actor_token(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    params = {"subject_token": str(end_user_in_acme.pk), "subject_token_type": USER_ID_TYPE}
    body = impersonate(token_endpoint, portal, support_tokens, **params).json()
    assert 590 <= body["expires_in"] <= 600

    AccessToken.objects.filter(user=support).update(expires=timezone.now() + datetime.timedelta(seconds=120))
    body = impersonate(token_endpoint, portal, support_tokens, **params).json()
    assert 110 <= body["expires_in"] <= 120


# The act claim -------------------------------------------------------------------------------


def test_exchanging_an_impersonated_token_keeps_or_nests_act(
    token_endpoint,
    portal,
    aggregates,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
    login,
    django_user_model,
    acme,
):
    impersonated = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="openid read",
    ).json()["access_token"]
    first_act = {"iss": ISSUER, "sub": str(support.pk)}

    # Without an actor: the same act, even on a narrowed token.
    narrowed = token_endpoint.exchange(
        portal, subject_token=impersonated, subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    ).json()["access_token"]
    assert introspect(narrowed, aggregates)["act"] == first_act

    # With a new actor: the old act is nested inside the new one (RFC 8693 §4.1).
    lead = django_user_model.objects.create_user("lead", "lead@example.com", "pw")
    grant(lead, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    lead_tokens = login(lead)
    nested = impersonate(
        token_endpoint, portal, lead_tokens, subject_token=impersonated, subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert nested.status_code == 200, nested.content
    assert introspect(nested.json()["access_token"], aggregates)["act"] == {
        "iss": ISSUER,
        "sub": str(lead.pk),
        "act": first_act,
    }

    # The chain is bounded.
    with override_settings(TOKEN_EXCHANGE={"MAX_ACT_DEPTH": 2}):
        before = token_rows()
        AuditEvent.objects.all().delete()
        too_deep = impersonate(
            token_endpoint,
            portal,
            support_tokens,
            subject_token=nested.json()["access_token"],
            subject_token_type=ACCESS_TOKEN_TYPE,
        )
        assert_refused(too_deep, before, "act_chain_too_deep")


def test_a_new_actor_cannot_carry_on_for_a_prior_actor_who_lost_the_right(
    token_endpoint,
    portal,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
    login,
    django_user_model,
    acme,
):
    """Nesting an ``act`` re-decides every actor of the chain, as a refresh or a re-exchange of
    the same token does (one decision for every entry point): the prior actor's grant was
    withdrawn, so the token it obtained cannot be laundered through a new actor."""
    impersonated = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="read",
    ).json()["access_token"]
    lead = django_user_model.objects.create_user("lead", "lead@example.com", "pw")
    grant(lead, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    lead_tokens = login(lead)
    ImpersonatorGrant.objects.filter(user=support).delete()
    before = token_rows()
    AuditEvent.objects.all().delete()
    nested = impersonate(
        token_endpoint, portal, lead_tokens, subject_token=impersonated, subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert_refused(nested, before, "actor_not_impersonator")


def test_an_impersonated_token_cannot_act(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme, mallory
):
    impersonated = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
    ).json()
    # The customer holds an impersonator grant (end users of ACME may not be impersonated by
    # holders of act-carrying tokens anyway): the act check comes first.
    grant(end_user_in_acme, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    AuditEvent.objects.all().delete()
    before = token_rows()

    response = impersonate(
        token_endpoint,
        portal,
        impersonated,
        subject_token=str(mallory.pk),
        subject_token_type=USER_ID_TYPE,
    )

    assert_refused(response, before, "actor_token_carries_act")


# The switch and the rules --------------------------------------------------------------------


def test_switch_off_refuses_and_issues_nothing(
    token_endpoint, portal, support, support_tokens, end_user_in_acme
):
    assert SecuritySettings.load().allow_impersonation is False  # refuse by default
    before = token_rows()

    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
    )

    row = assert_refused(response, before, "impersonation_disabled")
    assert response.json()["error_description"] == "The request was refused."
    assert row.application == portal
    assert row.payload["applicationId"] == portal.client_id


@pytest.mark.parametrize(
    ("actor_role", "actor_org", "subject_kind", "reason"),
    [
        ("end_user_impersonator", "acme", "customer", None),
        ("end_user_impersonator", "acme", "globex_customer", "subject_not_covered"),
        ("end_user_impersonator", "acme", "staff", "subject_not_covered"),
        ("end_user_impersonator", None, "globex_customer", None),
        ("end_user_impersonator", None, "staff", "subject_not_covered"),
        ("end_user_impersonator", None, "impersonator", "subject_not_covered"),
        ("admin_impersonator", "acme", "staff", None),
        ("admin_impersonator", "acme", "globex_customer", "subject_not_covered"),
        ("admin_impersonator", None, "globex_customer", None),
        ("admin_impersonator", None, "superuser", "subject_is_superuser"),
        (None, None, "customer", "actor_not_impersonator"),
    ],
)
def test_permission_matrix_over_http(
    token_endpoint,
    portal,
    login,
    impersonation_allowed,
    django_user_model,
    acme,
    actor_role,
    actor_org,
    subject_kind,
    reason,
):
    from django.contrib.auth.models import Group

    globex = Group.objects.create(name="GLOBEX")
    actor = django_user_model.objects.create_user("actor", "actor@example.com", "pw")
    if actor_role is not None:
        grant(actor, actor_role, acme if actor_org == "acme" else None)
    subject = django_user_model.objects.create_user(
        "subject",
        "subject@example.com",
        "pw",
        is_staff=subject_kind == "staff",
        is_superuser=subject_kind == "superuser",
    )
    subject.groups.add(globex if subject_kind == "globex_customer" else acme)
    if subject_kind == "impersonator":
        grant(subject, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    actor_tokens = login(actor)
    before = token_rows()

    response = impersonate(
        token_endpoint, portal, actor_tokens, subject_token=str(subject.pk), subject_token_type=USER_ID_TYPE
    )

    if reason is None:
        assert response.status_code == 200, response.content
        assert refusals() == []
        _header, claims = verify(
            token_endpoint.exchange(
                portal,
                subject_token=response.json()["access_token"],
                subject_token_type=ACCESS_TOKEN_TYPE,
                requested_token_type=JWT_TYPE,
            ).json()["access_token"]
        )
        assert claims["sub"] == str(subject.pk)
        assert claims["act"]["sub"] == str(actor.pk)
    else:
        row = assert_refused(response, before, reason)
        assert row.actor == actor
        assert row.subject == subject


def test_superuser_impersonates_a_superuser_only_with_an_instance_admin_grant(
    token_endpoint, portal, login, impersonation_allowed, django_user_model
):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    other_root = django_user_model.objects.create_superuser("root2", "root2@example.com", "pw")
    root_tokens = login(root)
    params = {"subject_token": str(other_root.pk), "subject_token_type": USER_ID_TYPE}

    refused = impersonate(token_endpoint, portal, root_tokens, **params)
    assert refused.json()["error"] == "invalid_request"
    assert refusals()[0].payload["reason"] == "actor_not_impersonator"

    grant(root, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    assert impersonate(token_endpoint, portal, root_tokens, **params).status_code == 200


@pytest.mark.parametrize(
    ("subject_token", "reason"),
    [
        ("999999", "unknown_user"),
        ("not-a-number", "malformed_user_id"),
        ("99999999999999999999999999", "malformed_user_id"),
        ("99999999999999999999", "unknown_user"),  # 20 digits: beyond any integer column
        ("1\x00", "malformed_user_id"),
    ],
)
def test_user_id_subjects_must_exist(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, subject_token, reason
):
    before = token_rows()
    response = impersonate(
        token_endpoint, portal, support_tokens, subject_token=subject_token, subject_token_type=USER_ID_TYPE
    )
    assert_refused(response, before, reason)


def test_inactive_subject_and_self_impersonation_are_refused(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    end_user_in_acme.is_active = False
    end_user_in_acme.save()
    before = token_rows()
    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
    )
    assert_refused(response, before, "inactive_user")

    AuditEvent.objects.all().delete()
    response = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=support_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
    )
    assert_refused(response, before, "actor_is_subject")


def test_user_id_without_actor_is_refused(token_endpoint, portal, impersonation_allowed, end_user):
    before = token_rows()
    response = token_endpoint.exchange(
        portal, subject_token=str(end_user.pk), subject_token_type=USER_ID_TYPE
    )
    assert_refused(response, before, "invalid_request")


@pytest.mark.parametrize("actor_token_type", [USER_ID_TYPE, JWT_TYPE])
def test_actor_must_present_a_token(
    token_endpoint, portal, impersonation_allowed, support, end_user_in_acme, actor_token_type
):
    before = token_rows()
    response = token_endpoint.exchange(
        portal,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=str(support.pk),
        actor_token_type=actor_token_type,
    )
    assert_refused(response, before, "invalid_request")


def test_actor_token_of_another_client_is_refused(
    token_endpoint, portal, crm, login, impersonation_allowed, support, end_user_in_acme
):
    crm_tokens = login(support, crm, resources=())
    before = token_rows()
    response = impersonate(
        token_endpoint,
        portal,
        crm_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
    )
    row = assert_refused(response, before, "token_of_another_client")
    # The same description as every other refusal (issue 17, section 2).
    assert response.json()["error_description"] == "The request was refused."
    assert row.actor == support


def test_authorization_scopes_must_come_from_the_actor(
    token_endpoint, portal, login, impersonation_allowed, support, end_user_in_acme
):
    openid_only = login(support, scope="openid")
    before = token_rows()
    response = impersonate(
        token_endpoint,
        portal,
        openid_only,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="openid profile email offline_access",
    )
    assert_refused(response, before, "scope_exceeds_actor", error="invalid_scope")

    # Subject data alone is fine: the seed's actor "does not have a profile".
    ok = impersonate(
        token_endpoint,
        portal,
        openid_only,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="openid profile email",
    )
    assert ok.status_code == 200, ok.content


def test_audience_stays_within_subject_and_actor(
    token_endpoint, portal, login, impersonation_allowed, support, end_user_in_acme, user_tokens
):
    actor_tokens = login(support, resources=(data.SETTINGS_URI,))
    subject_tokens = login(end_user_in_acme, resources=(data.AGGREGATES_URI,))
    params = {"subject_token": subject_tokens["access_token"], "subject_token_type": ACCESS_TOKEN_TYPE}

    both = impersonate(
        token_endpoint, portal, actor_tokens, audience=[data.AGGREGATES_URI, data.SETTINGS_URI], **params
    )
    assert both.status_code == 200, both.content

    AuditEvent.objects.all().delete()
    before = token_rows()
    wider = impersonate(token_endpoint, portal, actor_tokens, audience="https://evil.example.com/", **params)
    assert_refused(wider, before, "audience_exceeds_subject", error="invalid_target")


# Audit trail and signals ---------------------------------------------------------------------


def test_audit_rows_have_the_seed_payload_and_no_token(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    form = {
        "grant_type": GRANT_TYPE,
        "subject_token": str(end_user_in_acme.pk),
        "subject_token_type": USER_ID_TYPE,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": JWT_TYPE,
        "scope": "openid profile offline_access",
    }
    response = token_endpoint.post(
        form, auth=(portal.client_id, portal.plain_secret), REMOTE_ADDR="203.0.113.7"
    )
    body = response.json()

    exchanged = AuditEvent.objects.get(event_type=EventType.TOKEN_EXCHANGED)
    impersonated = AuditEvent.objects.get(event_type=EventType.USER_IMPERSONATED)
    payload = impersonated.payload
    assert payload["actor"] == {"issuer": ISSUER, "user_id": str(support.pk)}
    assert payload["applicationId"] == portal.client_id
    assert payload["subject"] == {"user_id": str(end_user_in_acme.pk)}
    assert payload["scope"] == "offline_access openid profile"
    assert payload["requested_token_type"] == JWT_TYPE
    assert payload["subject_token_type"] == USER_ID_TYPE
    assert data.AGGREGATES_URI in payload["audience"]
    assert {token["token_type"] for token in payload["tokens"]} == {
        JWT_TYPE,
        ID_TOKEN_TYPE,
        "urn:ietf:params:oauth:token-type:refresh_token",
    }
    for event in (exchanged, impersonated):
        assert event.actor == support
        assert event.subject == end_user_in_acme
        assert event.application == portal
        assert event.client_ip == "203.0.113.7"
        dumped = json.dumps(event.payload)
        secrets = [body["access_token"], body["refresh_token"], body["id_token"]]
        secrets += [support_tokens[name] for name in ("access_token", "refresh_token", "id_token")]
        for secret in secrets:
            assert secret not in dumped


def test_audit_rows_outlive_deleted_users(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
    )
    support_id = str(support.pk)
    support.delete()
    event = AuditEvent.objects.get(event_type=EventType.USER_IMPERSONATED)
    assert event.actor is None
    assert event.payload["actor"]["user_id"] == support_id


def test_signals_are_sent_after_commit(
    token_endpoint,
    portal,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
    django_capture_on_commit_callbacks,
):
    heard: list[tuple[str, str]] = []

    def receiver(sender: Any, event: AuditEvent, **kwargs: Any) -> None:
        heard.append((event.event_type, str(event.pk)))

    def failing(sender: Any, event: AuditEvent, **kwargs: Any) -> None:
        raise RuntimeError("the SIEM is down")

    for signal in (signals.user_impersonated, signals.token_exchanged, signals.token_exchange_refused):
        signal.connect(receiver, weak=False)
    signals.user_impersonated.connect(failing, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = impersonate(
                token_endpoint,
                portal,
                support_tokens,
                subject_token=str(end_user_in_acme.pk),
                subject_token_type=USER_ID_TYPE,
            )
            assert response.status_code == 200
        assert heard == []  # nothing before commit
        for callback in callbacks:
            callback()  # a failing receiver is logged, never raised
        assert sorted(kind for kind, _pk in heard) == ["token.exchanged", "user.impersonated"]

        with django_capture_on_commit_callbacks(execute=True):
            impersonate(
                token_endpoint,
                portal,
                support_tokens,
                subject_token="999999",
                subject_token_type=USER_ID_TYPE,
            )
        assert heard[-1][0] == "token.exchange_refused"
    finally:
        for signal in (signals.user_impersonated, signals.token_exchanged, signals.token_exchange_refused):
            signal.disconnect(receiver)
        signals.user_impersonated.disconnect(failing)


def test_no_token_without_its_audit_row(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme, monkeypatch
):
    before = token_rows()

    def broken_save(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit table unavailable")

    # The one place audit rows are written (test_faults makes the database itself fail it).
    monkeypatch.setattr(audit, "_save", broken_save)
    with pytest.raises(RuntimeError):
        impersonate(
            token_endpoint,
            portal,
            support_tokens,
            subject_token=str(end_user_in_acme.pk),
            subject_token_type=USER_ID_TYPE,
            scope="openid offline_access",
        )
    assert token_rows() == before


def test_unauthenticated_requests_leave_no_audit_row(token_endpoint, portal, impersonation_allowed):
    response = token_endpoint.exchange(
        portal, auth=(portal.client_id, "wrong"), subject_token="x", subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert response.status_code == 401
    assert not token_events().exists()


def test_every_refusal_after_client_authentication_is_audited(
    token_endpoint, impersonation_allowed, end_user
):
    disabled = make_app("disabled", exchange=False)
    response = token_endpoint.exchange(disabled, subject_token="x", subject_token_type=ACCESS_TOKEN_TYPE)
    assert response.json()["error"] == "unauthorized_client"
    assert [row.payload["reason"] for row in refusals()] == ["unauthorized_client"]


# Refresh re-checks ---------------------------------------------------------------------------


@pytest.fixture
def impersonated_refresh(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    body = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="openid offline_access",
    ).json()
    AuditEvent.objects.all().delete()
    return body["refresh_token"]


def switch_off(**kwargs: Any) -> None:
    row = SecuritySettings.load()
    row.allow_impersonation = False
    row.save()


def withdraw_grant(support: Any, **kwargs: Any) -> None:
    ImpersonatorGrant.objects.filter(user=support).delete()


def deactivate_actor(support: Any, **kwargs: Any) -> None:
    # An update, not save(): saving sends post_save, on which the actor's impersonations are
    # revoked at once (tests/test_lineage.py). Here the refresh's own recheck is on trial.
    type(support).objects.filter(pk=support.pk).update(is_active=False)


def deactivate_subject(end_user: Any, **kwargs: Any) -> None:
    end_user.is_active = False
    end_user.save()


def make_subject_admin(end_user: Any, **kwargs: Any) -> None:
    end_user.is_staff = True
    end_user.save()


def leave_organization(end_user: Any, acme: Any, **kwargs: Any) -> None:
    end_user.groups.remove(acme)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (switch_off, "impersonation_disabled"),
        (withdraw_grant, "actor_not_impersonator"),
        (deactivate_actor, "actor_inactive"),
        (deactivate_subject, "subject_inactive"),
        (make_subject_admin, "subject_not_covered"),
        (leave_organization, "subject_not_covered"),
    ],
)
def test_every_refresh_rechecks_the_policy(
    token_endpoint, portal, impersonated_refresh, support, end_user_in_acme, acme, change, reason
):
    form = {"grant_type": "refresh_token", "refresh_token": impersonated_refresh}
    change(support=support, end_user=end_user_in_acme, acme=acme)
    before = token_rows()

    response = token_endpoint.post(form, auth=(portal.client_id, portal.plain_secret))

    assert_refused(response, before, reason, error="invalid_grant")
    row = refusals()[0]
    assert row.payload["grant_type"] == "refresh_token"
    assert row.actor == support


def test_refresh_with_the_policy_unchanged_succeeds(token_endpoint, portal, impersonated_refresh):
    form = {"grant_type": "refresh_token", "refresh_token": impersonated_refresh}
    response = token_endpoint.post(form, auth=(portal.client_id, portal.plain_secret))
    assert response.status_code == 200, response.content
    assert AuditEvent.objects.get().event_type == EventType.USER_IMPERSONATED


def test_refresh_of_an_ordinary_token_is_not_audited(token_endpoint, portal, user_tokens):
    form = {"grant_type": "refresh_token", "refresh_token": user_tokens["refresh_token"]}
    response = token_endpoint.post(form, auth=(portal.client_id, portal.plain_secret))
    assert response.status_code == 200, response.content
    assert not token_events().exists()


# Found in review: the paths around the obvious ones -----------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [(switch_off, "impersonation_disabled"), (withdraw_grant, "actor_not_impersonator")],
)
def test_an_impersonated_token_is_exchanged_only_while_the_policy_still_holds(
    token_endpoint,
    portal,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
    acme,
    change,
    reason,
):
    impersonated = impersonate(
        token_endpoint,
        portal,
        support_tokens,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        scope="openid read",
    ).json()
    change(support=support, end_user=end_user_in_acme, acme=acme)
    AuditEvent.objects.all().delete()

    for subject_token, subject_token_type in (
        (impersonated["access_token"], ACCESS_TOKEN_TYPE),
        (impersonated["id_token"], ID_TOKEN_TYPE),
    ):
        before = token_rows()
        response = token_endpoint.exchange(
            portal, subject_token=subject_token, subject_token_type=subject_token_type
        )
        assert_refused(response, before, reason)
        AuditEvent.objects.all().delete()


def test_refreshed_impersonated_id_tokens_are_short_lived(token_endpoint, portal, impersonated_refresh):
    response = token_endpoint.post(
        {"grant_type": "refresh_token", "refresh_token": impersonated_refresh},
        auth=(portal.client_id, portal.plain_secret),
    )
    _header, claims = verify(response.json()["id_token"])
    assert claims["exp"] - claims["iat"] <= 3600
    assert "act" in claims


def test_a_refresh_that_fails_midway_leaves_nothing(
    token_endpoint, portal, impersonated_refresh, monkeypatch
):
    form = {"grant_type": "refresh_token", "refresh_token": impersonated_refresh}
    before = (*token_rows(), AuditEvent.objects.count())

    def broken_insert(saved: Any, groups: Any, using: str) -> None:
        raise RuntimeError("audit table unavailable")

    with monkeypatch.context() as patch:
        patch.setattr("token_exchange.issuance.audit.save_together", broken_insert)
        with pytest.raises(RuntimeError):
            token_endpoint.post(form, auth=(portal.client_id, portal.plain_secret))
    assert (*token_rows(), AuditEvent.objects.count()) == before

    # The refresh token is still usable: nothing was consumed.
    response = token_endpoint.post(form, auth=(portal.client_id, portal.plain_secret))
    assert response.status_code == 200, response.content


def test_a_refresh_that_widens_the_audience_is_refused_before_anything_is_written(
    token_endpoint, portal, impersonated_refresh
):
    before = token_rows()
    response = token_endpoint.post(
        {
            "grant_type": "refresh_token",
            "refresh_token": impersonated_refresh,
            "resource": "https://evil.example.com/",
        },
        auth=(portal.client_id, portal.plain_secret),
    )
    assert_refused(response, before, "audience_exceeds_subject", error="invalid_target")


@override_settings(OAUTH2_PROVIDER={**django_settings.OAUTH2_PROVIDER, "ROTATE_REFRESH_TOKEN": False})
def test_a_refresh_without_rotation_is_audited_with_its_tokens(token_endpoint, portal, impersonated_refresh):
    from oauth2_provider.settings import oauth2_settings

    oauth2_settings.reload()
    try:
        response = token_endpoint.post(
            {"grant_type": "refresh_token", "refresh_token": impersonated_refresh},
            auth=(portal.client_id, portal.plain_secret),
        )
        assert response.status_code == 200, response.content
        event = AuditEvent.objects.get(event_type=EventType.USER_IMPERSONATED)
        kinds = sorted(token["token_type"] for token in event.payload["tokens"])
        assert kinds == sorted(
            [ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:refresh_token"]
        )
    finally:
        oauth2_settings.reload()


@pytest.mark.parametrize("spelling", ["1_0", " 2", "٢", "+2", "2 ", "02", "00"])
def test_a_user_id_has_one_spelling(
    token_endpoint, portal, impersonation_allowed, support, support_tokens, end_user_in_acme, spelling
):
    before = token_rows()
    response = impersonate(
        token_endpoint, portal, support_tokens, subject_token=spelling, subject_token_type=USER_ID_TYPE
    )
    assert_refused(response, before, "malformed_user_id")


def forget_oauthlib_cores() -> None:
    """DOT caches its oauthlib server, validator included, on each view class."""
    from oauth2_provider.views.mixins import OAuthLibMixin

    classes = [OAuthLibMixin]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if "_oauthlib_core" in cls.__dict__:
            delattr(cls, "_oauthlib_core")


@pytest.fixture
def may_act_validator():
    from oauth2_provider.settings import oauth2_settings

    changed = {
        **django_settings.OAUTH2_PROVIDER,
        "OAUTH2_VALIDATOR_CLASS": "tests.may_act_validator.MayActValidator",
    }
    with override_settings(OAUTH2_PROVIDER=changed):
        oauth2_settings.reload()
        forget_oauthlib_cores()
        yield
    oauth2_settings.reload()
    forget_oauthlib_cores()


def test_may_act_names_who_may_act_for_the_subject(
    may_act_validator,
    token_endpoint,
    portal,
    login,
    impersonation_allowed,
    support,
    end_user_in_acme,
    acme,
    django_user_model,
):
    customer = login(end_user_in_acme)
    assert verify(customer["id_token"])[1]["may_act"] == {"sub": str(support.pk)}
    lead = django_user_model.objects.create_user("lead", "lead@example.com", "pw")
    grant(lead, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    by_id_token = {"subject_token": customer["id_token"], "subject_token_type": ID_TOKEN_TYPE}

    lead_tokens = login(lead)
    before = token_rows()
    refused = impersonate(token_endpoint, portal, lead_tokens, **by_id_token)
    assert_refused(refused, before, "may_act_mismatch")

    allowed = impersonate(token_endpoint, portal, login(support), **by_id_token)
    assert allowed.status_code == 200, allowed.content


def test_the_facts_are_the_same_with_and_without_the_union(
    support, end_user_in_acme, acme, django_user_model, monkeypatch, django_assert_num_queries
):
    """With the default organizations (the user's groups) both users' grants and the subject's
    groups come in one UNION ALL; with another organization model, whose key may be of another
    type, the groups are read by themselves (a UNION of a text and an integer column is an error
    on PostgreSQL). Both give the same facts."""
    from token_exchange.impersonation import facts

    grant(end_user_in_acme, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, None)  # support holds one for ACME
    assert facts._groups_are_organizations()
    with django_assert_num_queries(1):
        together = facts.chain([(True, str(support.pk))], subject=end_user_in_acme, known=(support,))
    monkeypatch.setattr(facts, "_groups_are_organizations", lambda: False)
    with django_assert_num_queries(2):
        apart = facts.chain([(True, str(support.pk))], subject=end_user_in_acme, known=(support,))
    assert together == apart
    assert together[0].is_admin
    assert acme.pk in together[0].organizations

"""The admin's trusted issuers and linked identities: validated, audited, and withdrawn at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from jwcrypto import jwk

from token_exchange.models import AuditEvent, ClientPolicy, FederatedIdentity, TrustedIssuer

from .conftest import application_admin
from .test_admin import application_form

pytestmark = pytest.mark.django_db
EventType = AuditEvent.EventType
ADD = "/admin/token_exchange/trustedissuer/add/"
# An RSA key pasted with its primes but without "d": still a private key.
_RSA = jwk.JWK.generate(kty="RSA", size=2048).export_private(as_dict=True)
PRIVATE_PARTS = {key: value for key, value in _RSA.items() if key != "d"}
SMALL_RSA = jwk.JWK.generate(kty="RSA", size=1024).export_public(as_dict=True)


@pytest.fixture
def root(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client_(root: Any) -> Client:
    client = Client()
    client.force_login(root)
    return client


def issuer_form(**changes: Any) -> dict[str, Any]:
    form = {
        "name": "Contoso",
        "issuer": "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0",
        "enabled": "on",
        "jwks_uri": "https://login.microsoftonline.com/common/discovery/v2.0/keys",
        "jwks": "null",
        "algorithms": '["RS256"]',
        "audiences": '["api://portal"]',
        "accept_access_tokens": "on",
        "max_token_age_seconds": "3600",
        "max_token_lifetime_seconds": "7200",
        "required_claims": '{"tid": ["11111111-2222-3333-4444-555555555555"]}',
        "scope": "read",
        "resources": "[]",
        "provider_id": "",
        "identities-TOTAL_FORMS": "0",
        "identities-INITIAL_FORMS": "0",
        "identities-MIN_NUM_FORMS": "0",
        "identities-MAX_NUM_FORMS": "1000",
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def errors_of(response: Any) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {key: [str(message) for message in value] for key, value in form.errors.items()}


def test_a_trusted_issuer_is_added_and_audited(admin_client_, root):
    page = admin_client_.get(ADD)
    assert page.status_code == 200
    for heading in ("Its keys", "What its tokens must be", "What is issued for them", "Unlinked subjects"):
        assert heading in page.content.decode()

    response = admin_client_.post(ADD, issuer_form())

    assert response.status_code == 302, errors_of(response)
    row = TrustedIssuer.objects.get()
    assert row.required_claims == {"tid": ["11111111-2222-3333-4444-555555555555"]}
    event = AuditEvent.objects.get(event_type=EventType.TRUSTED_ISSUER_CHANGED)
    assert event.actor == root
    assert event.payload["action"] == "created"
    assert event.payload["after"]["issuer"] == row.issuer


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"audiences": "[]"}, "audiences", "At least one audience"),
        ({"jwks": '{"keys": []}'}, "jwks_uri", "either a JWKS URI or a pasted JWKS"),
        ({"jwks_uri": "", "jwks": "null"}, "jwks_uri", "either a JWKS URI or a pasted JWKS"),
        ({"jwks_uri": "http://idp.example/keys"}, "jwks_uri", "An https URL"),
        ({"algorithms": '["HS256"]'}, "algorithms", "asymmetric"),
        ({"algorithms": "[]"}, "algorithms", "This field is required."),
        ({"required_claims": '{"tid": "one"}'}, "required_claims", "lists of allowed values"),
        ({"resources": '["not a uri"]'}, "resources", "absolute URIs"),
        ({"issuer": "https://idp.example/ x"}, "issuer", "without spaces"),
        (
            {"jwks_uri": "", "jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'},
            "jwks",
            "Only RSA and EC keys.",
        ),
        ({"jwks_uri": "", "jwks": json.dumps({"keys": [PRIVATE_PARTS]})}, "jwks", "public keys only"),
        ({"jwks_uri": "", "jwks": json.dumps({"keys": [SMALL_RSA]})}, "jwks", "at least 2048 bits"),
    ],
)
def test_a_trusted_issuer_that_would_trust_too_much_is_refused(admin_client_, changes, field, message):
    response = admin_client_.post(ADD, issuer_form(**changes))
    assert response.status_code == 200
    found = errors_of(response)
    assert any(message in text for text in found.get(field, [])), found
    assert not TrustedIssuer.objects.exists()
    assert not AuditEvent.objects.filter(event_type=EventType.TRUSTED_ISSUER_CHANGED).exists()


def test_naming_a_trusted_issuer_on_a_client_policy_is_audited(admin_client_, portal, root):
    trust = TrustedIssuer.objects.create(
        name="Partner",
        issuer="https://idp.partner.example",
        jwks_uri="https://idp.partner.example/jwks",
        audiences=["portal"],
        accept_id_tokens=True,
    )
    form = application_form(
        portal, token_exchange_enabled="on", trusted_issuers=[trust.pk], jwt_bearer_enabled="on"
    )
    response = admin_client_.post(application_admin(portal), form)
    assert response.status_code == 302, response.content[:2000]
    policy = ClientPolicy.objects.get(application=portal)
    assert list(policy.trusted_issuers.all()) == [trust]
    assert policy.jwt_bearer_enabled
    changes = [
        row.payload
        for row in AuditEvent.objects.filter(event_type=EventType.CLIENT_POLICY_CHANGED).order_by("pk")
    ]
    assert {"trusted_issuers": []} in [change.get("before") for change in changes]
    assert {"trusted_issuers": ["https://idp.partner.example"]} in [change.get("after") for change in changes]


def test_the_issuer_page_lists_its_linked_identities_and_its_clients(admin_client_, portal, end_user):
    trust = TrustedIssuer.objects.create(
        name="Partner",
        issuer="https://idp.partner.example",
        jwks_uri="https://idp.partner.example/jwks",
        audiences=["portal"],
        accept_id_tokens=True,
    )
    portal.token_exchange_policy.trusted_issuers.add(trust)
    FederatedIdentity.objects.create(issuer=trust, subject="alice", user=end_user)
    page = admin_client_.get(f"/admin/token_exchange/trustedissuer/{trust.pk}/change/").content.decode()
    assert "alice" in page
    assert str(portal) in page
    listing = admin_client_.get("/admin/token_exchange/trustedissuer/").content.decode()
    assert "ID tokens" in listing
    links = admin_client_.get("/admin/token_exchange/federatedidentity/?q=alice").content.decode()
    assert "alice" in links


def test_deleting_a_linked_identity_in_the_admin_is_audited(admin_client_, end_user, root):
    trust = TrustedIssuer.objects.create(
        name="Partner",
        issuer="https://idp.partner.example",
        jwks_uri="https://idp.partner.example/jwks",
        audiences=["portal"],
        accept_id_tokens=True,
    )
    link = FederatedIdentity.objects.create(issuer=trust, subject="alice", user=end_user)
    response = admin_client_.post(
        f"/admin/token_exchange/federatedidentity/{link.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.filter(event_type=EventType.FEDERATED_IDENTITY_CHANGED).latest("pk")
    assert event.payload["action"] == "deleted"
    assert event.payload["before"] == {
        "issuer_id": str(trust.pk),
        "subject": "alice",
        "user_id": str(end_user.pk),
    }
    assert event.actor == root
    assert event.subject == end_user


@pytest.mark.parametrize("model", ["trustedissuer", "federatedidentity"])
def test_only_superusers_decide_trust_whatever_their_permissions(django_user_model, model):
    staff = django_user_model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=[f"{action}_{model}" for action in ("add", "change", "view")])
    )
    client = Client()
    client.force_login(staff)
    assert client.get(f"/admin/token_exchange/{model}/add/").status_code == 403
    assert client.get(f"/admin/token_exchange/{model}/").status_code == 200  # they may look

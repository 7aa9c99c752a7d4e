"""A site that signs its users in with django-allauth accepts their provider's tokens for the same
users (token_exchange.contrib.allauth as FEDERATION_RESOLVER), without linking anyone again.

The customer signs in here through allauth's own OpenID Connect code, from the partner's real
provider (example_project/partner_idp), which writes the ``SocialAccount``; the partner's app
then exchanges a fresh ID token of that customer at our token endpoint, over HTTP.

Runs only under ``DJANGO_SETTINGS_MODULE=tests.settings_allauth`` (``pytest -m allauth``): the
example project has no allauth tables, and deselects these tests with ``-m "not allauth"``. A run
there that forgets to deselect them errors on every one of them, saying so: never a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from django.apps import apps
from django.core.cache import caches
from django.test import RequestFactory

from tests import external_idp as harness
from token_exchange.constants import ID_TOKEN_TYPE, JWT_TYPE
from token_exchange.contrib.allauth import resolve
from token_exchange.models import AuditEvent, ExchangedToken, FederatedIdentity, TrustedIssuer

from .adversarial import (
    REFUSED,
    TOKEN_REFUSED,
    TokenClient,
    audit_rows_after,
    last_audit_pk,
    refused,
    token_rows,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.allauth]

ALLAUTH_INSTALLED = apps.is_installed("allauth.socialaccount")
if ALLAUTH_INSTALLED:
    # Only where allauth's apps are installed: its models cannot even be imported elsewhere, and
    # this module must still import there, to be deselected with -m "not allauth".
    from allauth.socialaccount.models import SocialAccount, SocialApp
    from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter

external_idp = harness.external_idp

PARTNER = "partner"  # the SocialApp's provider_id: what allauth stores as SocialAccount.provider


@pytest.fixture(scope="module", autouse=True)
def allauth_installed() -> None:
    """Every test of a run that collected this module without allauth's apps errors, saying why."""
    if not ALLAUTH_INSTALLED:
        pytest.fail(
            "tests/test_contrib_allauth.py needs django-allauth's apps: run it with "
            "DJANGO_SETTINGS_MODULE=tests.settings_allauth pytest -m allauth, and deselect it "
            "elsewhere with -m 'not allauth'.",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def allauth_settings(settings: Any) -> None:
    assert settings.TOKEN_EXCHANGE["FEDERATION_RESOLVER"] == "token_exchange.contrib.allauth.resolve"
    # The provider listens on plain HTTP on the loopback interface.
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "FEDERATION_ALLOW_HTTP_LOOPBACK": True}
    caches[settings.TOKEN_EXCHANGE.get("FEDERATION_CACHE", "default")].clear()


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def social_app(external_idp: harness.ExternalIdP) -> Any:
    """How this site signs its users in with the partner's provider: an allauth OpenID Connect
    app, configured as allauth's documentation shows."""
    return SocialApp.objects.create(
        provider="openid_connect",
        provider_id=PARTNER,
        name="Partner",
        client_id=harness.PARTNER_APP.client_id,
        secret=harness.PARTNER_APP.client_secret,
        settings={"server_url": external_idp.issuer},
    )


@pytest.fixture
def trust(external_idp: harness.ExternalIdP, portal: Any, social_app: Any) -> TrustedIssuer:
    """The same provider, trusted for the portal's exchanges, known to allauth as ``partner``."""
    row = TrustedIssuer.objects.create(
        name="Partner",
        issuer=external_idp.issuer,
        jwks_uri=external_idp.jwks_uri,
        algorithms=["RS256"],
        audiences=[harness.PARTNER_APP.client_id],
        accept_id_tokens=True,
        scope="openid read",
        provider_id=social_app.provider_id,
    )
    portal.token_exchange_policy.trusted_issuers.add(row)
    return row


@pytest.fixture
def signs_in_with_allauth(external_idp: harness.ExternalIdP, social_app: Any) -> Callable[..., Any]:
    """``(user, sub)``: ``sub`` signs in at the partner's provider and allauth completes the login
    here as its callback view does (the token response, the ID token verified against the
    provider's keys, its userinfo), then connects it to ``user``: the SocialAccount allauth itself
    writes."""

    def sign_in(user: Any, sub: str) -> Any:
        request = RequestFactory().get(f"/accounts/oidc/{PARTNER}/login/callback/")
        request.user = user
        tokens = external_idp.login(sub=sub, email=user.email, email_verified=True)
        adapter = OpenIDConnectOAuth2Adapter(request, PARTNER)
        sociallogin = adapter.complete_login(
            request, social_app, adapter.parse_token(tokens), response=tokens
        )
        sociallogin.connect(request, user)
        return sociallogin.account

    return sign_in


def exchange(http: TokenClient, app: Any, id_token: str, **params: Any) -> Any:
    return http.exchange(app, subject_token=id_token, subject_token_type=ID_TOKEN_TYPE, **params)


# Over HTTP -----------------------------------------------------------------------------------------


def test_a_customer_who_signs_in_with_allauth_is_exchanged_without_relinking(
    http, portal, external_idp, trust, end_user, signs_in_with_allauth
):
    account = signs_in_with_allauth(end_user, "alice")
    # What allauth stores for an OpenID Connect app: its provider_id, and the sub as uid.
    assert (account.provider, account.uid, account.user) == (PARTNER, "alice", end_user)
    assert not FederatedIdentity.objects.exists()

    response = exchange(
        http, portal, external_idp.id_token(sub="alice"), requested_token_type=JWT_TYPE, scope="read"
    )

    assert response.status_code == 200, response.text
    claims = pyjwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(end_user.pk)
    link = FederatedIdentity.objects.get(issuer=trust, subject="alice")
    assert link.user == end_user
    record = ExchangedToken.objects.get(federated_identity=link, access_token__isnull=False)
    assert record.access_token.user == end_user
    # The next token of that subject finds the link written.
    assert exchange(http, portal, external_idp.id_token(sub="alice"), scope="read").status_code == 200
    assert FederatedIdentity.objects.count() == 1


def test_a_subject_without_a_social_account_is_refused(
    http, portal, external_idp, trust, end_user, signs_in_with_allauth
):
    signs_in_with_allauth(end_user, "alice")
    before = last_audit_pk()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="mallory")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )
    row = AuditEvent.objects.get(pk__gt=before)
    assert row.payload["external_subject"] == {"iss": external_idp.issuer, "sub": "mallory"}
    assert not FederatedIdentity.objects.exists()


def test_an_inactive_user_is_refused(http, portal, external_idp, trust, end_user, signs_in_with_allauth):
    signs_in_with_allauth(end_user, "alice")
    end_user.is_active = False
    end_user.save()
    id_token = external_idp.id_token(sub="alice")
    tokens_before = token_rows()
    before = last_audit_pk()

    response = exchange(http, portal, id_token)

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "error_description": TOKEN_REFUSED}
    assert token_rows() == tokens_before
    # Not refused() itself: identities.user_of writes the link (and its federated_identity.changed
    # row) before it looks at is_active, which this test leaves to identities' own tests.
    assert [row for row in audit_rows_after(before) if row[0] == REFUSED] == [(REFUSED, "inactive_user")]
    # Once linked, the refusal is the same.
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="alice")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["inactive_user"],
    )


def test_a_trust_naming_no_sign_in_provider_reads_no_social_account(
    http, portal, external_idp, trust, end_user, signs_in_with_allauth
):
    signs_in_with_allauth(end_user, "alice")
    trust.provider_id = ""
    trust.save()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="alice")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )


def test_another_providers_account_with_the_same_uid_is_not_this_subject(
    http, portal, external_idp, trust, end_user, django_user_model
):
    other = django_user_model.objects.create_user("other", "other@example.com", "pw")
    SocialAccount.objects.create(provider="google", uid="alice", user=other)
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="alice")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )


# The resolver, called as identities.user_of calls it ---------------------------------------------


def test_without_a_social_account_the_default_resolver_matches_a_verified_email(trust, end_user):
    claims = {"sub": "bob", "email": end_user.email, "email_verified": True}
    assert resolve(trust, claims) is None  # the trust matches no emails
    trust.match_verified_email = True
    trust.save()
    assert resolve(trust, claims) == end_user
    assert resolve(trust, {**claims, "email_verified": False}) is None


def test_a_social_account_comes_before_the_email(trust, end_user, django_user_model):
    trust.match_verified_email = True
    trust.save()
    bob = django_user_model.objects.create_user("bob", "bob@partner.example", "pw")
    SocialAccount.objects.create(provider=PARTNER, uid="bob", user=bob)
    claims = {"sub": "bob", "email": end_user.email, "email_verified": True}
    assert resolve(trust, claims) == bob
    trust.provider_id = ""
    trust.save()
    assert resolve(trust, claims) == end_user


def test_without_a_social_account_the_default_resolver_creates_a_user_when_the_trust_says_so(trust):
    trust.create_users = True
    trust.save()
    user = resolve(trust, {"sub": "newcomer", "email": "new@partner.example", "email_verified": True})
    assert user.email == "new@partner.example"
    assert not SocialAccount.objects.exists()

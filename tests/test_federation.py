"""Tokens from another identity provider, exchanged at our token endpoint over HTTP.

The provider is panva's ``oidc-provider`` running in a Node.js process of its own
(``tests/external_idp``): its ID tokens and RFC 9068 JWT access tokens are real, signed with its
keys and published at its JWKS URI, which our server fetches. Tokens it would never issue
(expired, too long-lived, for another audience, with ``alg: none``) are signed here with the
provider's own private key, so only the claim under test differs from a real one.

Every refusal asserts the status, ``error`` and ``error_description``, that nothing was issued,
and the ``token.exchange_refused`` row with its reason.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest
from django.core.cache import caches
from jwcrypto import jwk, jws
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from tests import external_idp as harness
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_BEARER_GRANT_TYPE,
    JWT_TYPE,
    USER_ID_TYPE,
)
from token_exchange.models import (
    AuditEvent,
    ExchangedToken,
    FederatedIdentity,
    SecuritySettings,
    TrustedIssuer,
)

from .adversarial import SCOPE_REFUSED, TARGET_REFUSED, TOKEN_REFUSED, TokenClient, last_audit_pk, refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

EventType = AuditEvent.EventType
AccessToken = get_access_token_model()

PARTNER_API = "https://api.partner.example/"


@pytest.fixture(scope="module")
def external_idp() -> Iterator[harness.ExternalIdP]:
    """The partner's provider; its access tokens live five minutes, as JWT authorization grants
    must here (JWT_BEARER_MAX_LIFETIME_SECONDS)."""
    idp = harness.ExternalIdP.start(keys=[harness.new_rsa_jwk("partner-1")], access_token_ttl=300)
    yield idp
    idp.stop()


@pytest.fixture(autouse=True)
def federation_settings(settings: Any) -> None:
    # The provider listens on plain HTTP on the loopback interface.
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "FEDERATION_ALLOW_HTTP_LOOPBACK": True}
    caches[settings.TOKEN_EXCHANGE.get("FEDERATION_CACHE", "default")].clear()


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def our_issuer() -> str:
    return str(oauth2_settings.OIDC_ISS_ENDPOINT)


@pytest.fixture
def trust(external_idp: harness.ExternalIdP, portal: Any) -> TrustedIssuer:
    """The partner's provider, trusted for the portal: its ID tokens for the partner's app, its
    access tokens for the partner's API (or for us, as JWT authorization grants)."""
    row = TrustedIssuer.objects.create(
        name="Partner",
        issuer=external_idp.issuer,
        jwks_uri=external_idp.jwks_uri,
        algorithms=["RS256"],
        audiences=["partner-app", PARTNER_API],
        accept_id_tokens=True,
        accept_access_tokens=True,
        accept_jwts=True,
        scope="openid read offline_access",
    )
    policy = portal.token_exchange_policy
    policy.trusted_issuers.add(row)
    policy.jwt_bearer_enabled = True
    policy.save()
    return row


@pytest.fixture
def alice(trust: TrustedIssuer, end_user: Any) -> FederatedIdentity:
    """The partner's user "alice" is our end user."""
    return FederatedIdentity.objects.create(issuer=trust, subject="alice", user=end_user)


def exchange(http: TokenClient, app: Any, token: str, token_type: str = ID_TOKEN_TYPE, **params: Any) -> Any:
    return http.exchange(app, subject_token=token, subject_token_type=token_type, **params)


def jwt_bearer(http: TokenClient, app: Any, assertion: str, **params: Any) -> Any:
    return http.post(
        {"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion, **params},
        auth=(app.client_id, app.plain_secret),
    )


def claims_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def header_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.get_unverified_header(token))


def signed(key: dict[str, Any], claims: dict[str, Any], **header: Any) -> str:
    """A JWT signed with ``key`` (a private JWK), its header ``alg`` RS256 and the key's kid
    unless ``header`` says otherwise."""
    protected = {"alg": "RS256", "kid": key["kid"], **header}
    # JWSCore: jwcrypto's JWS would refuse to write the headers some cases are about (crit).
    parts = jws.JWSCore(protected["alg"], jwk.JWK(**key), json.dumps(protected), json.dumps(claims)).sign()
    return f"{parts['protected']}.{parts['payload'].decode()}.{parts['signature']}"


def unsigned(claims: dict[str, Any], **header: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', **header})}.{part(claims)}."


def id_claims(idp: harness.ExternalIdP, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": idp.issuer, "sub": "alice", "aud": "partner-app", "iat": now, "exp": now + 300}
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def audit_of(pk: int, event_type: str) -> AuditEvent:
    return AuditEvent.objects.get(pk__gt=pk, event_type=event_type)


# The exchange ------------------------------------------------------------------------------------


def test_an_id_token_of_the_partner_is_exchanged_for_one_of_ours(
    http, portal, external_idp, alice, end_user, our_issuer
):
    before = last_audit_pk()
    id_token = external_idp.id_token(sub="alice", email="alice@partner.example", email_verified=True)

    response = exchange(http, portal, id_token, requested_token_type=JWT_TYPE, scope="read")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == JWT_TYPE
    assert body["scope"] == "read"
    claims = claims_of(body["access_token"])
    # Ours: our issuer, our user, the requesting client; nothing of the partner's is carried over.
    assert claims["iss"] == our_issuer
    assert claims["sub"] == str(end_user.pk)
    assert claims["aud"] == [portal.client_id]
    assert claims["client_id"] == portal.client_id
    assert "act" not in claims
    assert "email" not in claims
    row = audit_of(before, EventType.TOKEN_EXCHANGED)
    assert row.subject == end_user
    assert row.actor is None
    assert row.payload["external_subject"] == {"iss": external_idp.issuer, "sub": "alice"}
    assert row.payload["subject_token_type"] == ID_TOKEN_TYPE
    record = ExchangedToken.objects.get(access_token__isnull=False, federated_identity=alice)
    assert record.actor_access_token_id == record.access_token_id  # its own authorization


def test_a_jwt_access_token_of_the_partner_is_exchanged_and_its_token_works_here(
    http, portal, aggregates, external_idp, alice, end_user
):
    tokens = external_idp.login(sub="alice", resource=PARTNER_API, scope="openid api")
    assert header_of(tokens["access_token"])["typ"] == "at+jwt"

    response = exchange(http, portal, tokens["access_token"], ACCESS_TOKEN_TYPE, scope="read offline_access")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"read", "offline_access"}
    assert "refresh_token" in body
    introspected = http.session.post(
        http.url.replace("/token/", "/introspect/"),
        data={"token": body["access_token"]},
        auth=(aggregates.client_id, aggregates.plain_secret),
        timeout=30,
    ).json()
    assert introspected["active"] is True
    assert introspected["sub"] == str(end_user.pk)
    assert introspected["client_id"] == portal.client_id
    # And it refreshes like any of ours.
    refreshed = http.post(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert refreshed.status_code == 200, refreshed.text


def test_the_scope_is_never_wider_than_the_trust_allows(http, portal, external_idp, alice):
    id_token = external_idp.id_token(sub="alice")
    refused(
        lambda: exchange(http, portal, id_token, scope="read write"),
        status=400,
        error="invalid_scope",
        description=SCOPE_REFUSED,
        reasons=["scope_exceeds_subject"],
    )
    # Without a scope: what the trust and the client allow.
    response = exchange(http, portal, id_token)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"openid", "read", "offline_access"}


def test_a_rotated_key_is_fetched_once_and_accepted(http, portal, external_idp, alice):
    assert exchange(http, portal, external_idp.id_token(sub="alice"), scope="read").status_code == 200
    old = external_idp.keys[0]
    new = harness.new_rsa_jwk("rotated-" + uuid.uuid4().hex[:8])
    external_idp.rotate([new, old])
    try:
        id_token = external_idp.id_token(sub="alice")
        assert header_of(id_token)["kid"] == new["kid"]
        response = exchange(http, portal, id_token, scope="read")
        assert response.status_code == 200, response.text
    finally:
        external_idp.rotate([old])


# The JWT authorization grant ---------------------------------------------------------------------


def test_the_jwt_bearer_grant_issues_an_access_token_once_per_assertion(
    http, portal, external_idp, alice, end_user, our_issuer
):
    assertion = external_idp.login(sub="alice", resource=our_issuer, scope="openid api")["access_token"]
    assert claims_of(assertion)["aud"] == our_issuer
    before = last_audit_pk()

    response = jwt_bearer(http, portal, assertion, scope="read offline_access")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"read", "offline_access"}
    assert "refresh_token" not in body  # JWT_BEARER_REFRESH_TOKENS is off by default
    assert "issued_token_type" not in body
    token = AccessToken.objects.get(token_checksum__isnull=False, exchanged__federated_identity=alice)
    assert token.user == end_user
    assert token.application == portal
    row = audit_of(before, EventType.TOKEN_EXCHANGED)
    assert row.payload["grant_type"] == JWT_BEARER_GRANT_TYPE
    assert row.payload["external_subject"] == {"iss": external_idp.issuer, "sub": "alice"}

    refused(
        lambda: jwt_bearer(http, portal, assertion, scope="read"),
        status=400,
        error="invalid_grant",
        description=TOKEN_REFUSED,
        reasons=["replayed_jti"],
        secrets=[assertion],
    )


def test_a_jwt_bearer_assertion_must_name_this_server(http, portal, external_idp, alice):
    assertion = external_idp.login(sub="alice", resource=PARTNER_API, scope="openid api")["access_token"]
    refused(
        lambda: jwt_bearer(http, portal, assertion),
        status=400,
        error="invalid_grant",
        description=TOKEN_REFUSED,
        reasons=["wrong_audience"],
    )


def test_a_jwt_bearer_assertion_lives_five_minutes_at_most(
    http, portal, external_idp, trust, alice, our_issuer
):
    key = external_idp.keys[0]
    now = int(time.time())
    assertion = signed(
        key,
        {"iss": trust.issuer, "sub": "alice", "aud": our_issuer, "iat": now, "exp": now + 600, "jti": "j1"},
        typ="at+jwt",
    )
    refused(
        lambda: jwt_bearer(http, portal, assertion),
        status=400,
        error="invalid_grant",
        description=TOKEN_REFUSED,
        reasons=["lifetime_too_long"],
    )


def test_our_own_token_is_no_assertion(http, portal, end_user, login, trust):
    ours = login(end_user)["id_token"]
    refused(
        lambda: jwt_bearer(http, portal, ours),
        status=400,
        error="invalid_grant",
        description=TOKEN_REFUSED,
        reasons=["own_token_as_assertion"],
    )


def test_a_client_without_the_grant_is_unauthorized(http, portal, external_idp, trust, alice, our_issuer):
    portal.token_exchange_policy.jwt_bearer_enabled = False
    portal.token_exchange_policy.save()
    assertion = external_idp.login(sub="alice", resource=our_issuer, scope="openid api")["access_token"]
    refused(
        lambda: jwt_bearer(http, portal, assertion),
        status=400,
        error="unauthorized_client",
        description="This client is not allowed to use the JWT authorization grant.",
        reasons=["unauthorized_client"],
    )


# Refusals: trust -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "RS512"}, "unsupported_alg"),  # not pinned for this issuer
        ({"jku": "https://attacker.example/jwks"}, "key_in_header"),
        ({"x5u": "https://attacker.example/cert"}, "key_in_header"),
        ({"crit": ["exp"]}, "crit_header"),
        ({"kid": "no-such-kid"}, "unknown_kid"),
        ({"typ": "at+jwt"}, "wrong_typ"),  # an access token presented as an ID token
    ],
)
def test_headers_that_are_refused(http, portal, external_idp, alice, header, reason):
    token = signed(external_idp.keys[0], id_claims(external_idp), **header)
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=[reason],
        secrets=[token],
    )


def test_alg_none_is_refused(http, portal, external_idp, alice):
    token = unsigned(id_claims(external_idp), kid=external_idp.keys[0]["kid"])
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unsupported_alg"],
    )


def test_hs256_with_the_issuers_public_key_as_secret_is_refused(http, portal, external_idp, alice):
    public = external_idp.jwks()["keys"][0]
    secret = jwk.JWK.from_json(json.dumps(public)).export_to_pem()
    # PyJWT refuses to HMAC with a PEM; the attacker's tooling does it by hand.
    header = {"alg": "HS256", "kid": public["kid"], "typ": "JWT"}
    token = _hmac_token(header, id_claims(external_idp), secret)
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unsupported_alg"],
    )


def _hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    import hashlib
    import hmac

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    signing_input = f"{part(header)}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


def test_a_token_signed_with_another_trusted_issuers_key_is_refused(http, portal, external_idp, trust, alice):
    """Issuer mix-up: a second trusted provider's key signs a token claiming the first's iss."""
    other_key = harness.new_rsa_jwk("other-idp-key")
    other = harness.ExternalIdP.start(keys=[other_key])
    try:
        second = TrustedIssuer.objects.create(
            name="Other",
            issuer=other.issuer,
            jwks_uri=other.jwks_uri,
            audiences=["partner-app"],
            accept_id_tokens=True,
            scope="read",
        )
        portal.token_exchange_policy.trusted_issuers.add(second)
        # Its own kid: not in the first issuer's set (one refetch, still not there).
        token = signed(other_key, id_claims(external_idp))
        refused(
            lambda: exchange(http, portal, token),
            status=400,
            error="invalid_request",
            description=TOKEN_REFUSED,
            reasons=["unknown_kid"],
        )
        # The first issuer's kid: the first issuer's key, which did not sign it.
        token = signed({**other_key, "kid": external_idp.keys[0]["kid"]}, id_claims(external_idp))
        refused(
            lambda: exchange(http, portal, token),
            status=400,
            error="invalid_request",
            description=TOKEN_REFUSED,
            reasons=["bad_signature"],
        )
    finally:
        other.stop()


def test_an_issuer_the_clients_policy_does_not_name_is_refused(http, portal, crm, external_idp, alice):
    id_token = external_idp.id_token(sub="alice")
    refused(
        lambda: exchange(http, crm, id_token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["wrong_issuer"],
    )


def test_a_disabled_issuer_is_refused(http, portal, external_idp, trust, alice):
    trust.enabled = False
    trust.save()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="alice")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["wrong_issuer"],
    )


def test_a_kind_the_issuer_may_not_present_is_refused(http, portal, external_idp, trust, alice):
    trust.accept_access_tokens = False
    trust.save()
    access_token = external_idp.login(sub="alice", resource=PARTNER_API, scope="openid api")["access_token"]
    refused(
        lambda: exchange(http, portal, access_token, ACCESS_TOKEN_TYPE),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["kind_not_accepted"],
    )


# Refusals: claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # exp, iat and nbf: seconds from the moment the test runs.
        ({"exp": -3600, "iat": -3900}, "expired"),
        ({"iat": 3600, "exp": 3900}, "issued_in_the_future"),
        ({"nbf": 3600}, "not_yet_valid"),
        ({"iat": -7000, "exp": 60}, "too_old"),
        ({"exp": 3 * 86400}, "lifetime_too_long"),
        ({"aud": "someone-else"}, "wrong_audience"),
        ({"aud": ["someone-else", "another"]}, "wrong_audience"),
        ({"sub": None}, "malformed_subject"),
        ({"act": {"sub": "admin"}}, "external_act"),
    ],
)
def test_claims_that_are_refused(http, portal, external_idp, alice, changes, reason):
    now = int(time.time())
    changes = {key: now + value if key in ("exp", "iat", "nbf") else value for key, value in changes.items()}
    token = signed(external_idp.keys[0], id_claims(external_idp, **changes))
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=[reason],
    )


def test_a_tenant_constraint_keeps_other_tenants_out(http, portal, external_idp, trust, alice):
    trust.required_claims = {"tid": ["tenant-1"]}
    trust.save()
    for tid in ("tenant-2", None):
        token = external_idp.id_token(sub="alice", tid=tid)
        refused(
            lambda token=token: exchange(http, portal, token),
            status=400,
            error="invalid_request",
            description=TOKEN_REFUSED,
            reasons=["required_claim_mismatch"],
        )
    token = external_idp.id_token(sub="alice", tid="tenant-1")
    assert exchange(http, portal, token, scope="read").status_code == 200


# Refusals: who the subject is --------------------------------------------------------------------


def test_an_unlinked_subject_is_refused_like_any_other_token(http, portal, external_idp, trust, alice):
    token = external_idp.id_token(sub="mallory", email="end-user@example.com", email_verified=True)
    before = last_audit_pk()
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )
    row = audit_of(before, EventType.TOKEN_EXCHANGE_REFUSED)
    assert row.payload["external_subject"] == {"iss": external_idp.issuer, "sub": "mallory"}
    assert row.subject is None


def test_an_inactive_user_is_refused(http, portal, external_idp, alice, end_user):
    end_user.is_active = False
    end_user.save()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="alice")),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["inactive_user"],
    )


def test_a_verified_email_links_a_customer_when_the_trust_says_so(
    http, portal, external_idp, trust, end_user, admin_user
):
    trust.match_verified_email = True
    trust.save()
    unverified = external_idp.id_token(sub="bob", email=end_user.email, email_verified=False)
    refused(
        lambda: exchange(http, portal, unverified),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )
    # An issuer vouching for an admin's email gets no admin.
    admin_email = external_idp.id_token(sub="eve", email=admin_user.email, email_verified=True)
    refused(
        lambda: exchange(http, portal, admin_email),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )
    verified = external_idp.id_token(sub="bob", email=end_user.email.upper(), email_verified=True)
    response = exchange(http, portal, verified, scope="read")
    assert response.status_code == 200, response.text
    assert FederatedIdentity.objects.get(issuer=trust, subject="bob").user == end_user


def test_a_new_user_is_created_when_the_trust_says_so(http, portal, external_idp, trust, django_user_model):
    trust.create_users = True
    trust.save()
    token = external_idp.id_token(sub="newcomer", email="new@partner.example", email_verified=True)
    response = exchange(http, portal, token, scope="read")
    assert response.status_code == 200, response.text
    user = FederatedIdentity.objects.get(issuer=trust, subject="newcomer").user
    assert user.email == "new@partner.example"
    assert not user.has_usable_password()
    assert not user.is_staff


# Where external tokens are not accepted -----------------------------------------------------------


def test_an_external_token_with_an_actor_is_refused(
    http, portal, external_idp, alice, support, login, impersonation_allowed
):
    actor = login(support)["access_token"]
    refused(
        lambda: exchange(
            http,
            portal,
            external_idp.id_token(sub="alice"),
            actor_token=actor,
            actor_token_type=ACCESS_TOKEN_TYPE,
        ),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["external_subject_with_actor"],
    )


def test_an_external_token_is_no_actor_token(
    http, portal, external_idp, alice, end_user, impersonation_allowed
):
    access_token = external_idp.login(sub="alice", resource=PARTNER_API, scope="openid api")["access_token"]
    response = refused(
        lambda: http.exchange(
            portal,
            subject_token=str(end_user.pk),
            subject_token_type=USER_ID_TYPE,
            actor_token=access_token,
            actor_token_type=ACCESS_TOKEN_TYPE,
        ),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unknown_token"],
    )
    assert access_token not in response.text


def test_an_external_id_token_cannot_become_an_id_token_alone(http, portal, external_idp, alice):
    refused(
        lambda: exchange(
            http,
            portal,
            external_idp.id_token(sub="alice"),
            requested_token_type=ID_TOKEN_TYPE,
            scope="openid",
        ),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["id_token_for_external_subject"],
    )


def test_the_instance_switch_turns_the_jwt_bearer_grant_off(http, portal, external_idp, alice, our_issuer):
    SecuritySettings.objects.update_or_create(pk=1, defaults={"token_exchange_enabled": False})
    assertion = external_idp.login(sub="alice", resource=our_issuer, scope="openid api")["access_token"]
    refused(
        lambda: jwt_bearer(http, portal, assertion),
        status=400,
        error="unsupported_grant_type",
        description="Token exchange is disabled.",
    )


# Withdrawing trust revokes what it let in -------------------------------------------------------


def _issued(http: TokenClient, portal: Any, external_idp: harness.ExternalIdP) -> dict[str, Any]:
    response = exchange(http, portal, external_idp.id_token(sub="alice"), scope="read offline_access")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _alive(access_token: str) -> bool:
    from oauth2_provider.models import get_access_token_model as model

    return model().objects.filter(token_checksum=_checksum(access_token)).exists()


def _checksum(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    "withdraw",
    [
        "delete_link",
        "relink",
        "change_subject",
        "disable_issuer",
        "repoint_issuer",
        "delete_issuer",
        "off_policy",
        "clear_policy",
        "delete_policy",
    ],
)
def test_withdrawing_trust_revokes_the_tokens_and_what_was_exchanged_from_them(
    http, portal, external_idp, trust, alice, end_user, admin_user, withdraw
):
    issued = _issued(http, portal, external_idp)
    # A plain exchange of our token, descending from it.
    narrowed = http.exchange(
        portal, subject_token=issued["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    )
    assert narrowed.status_code == 200, narrowed.text
    before = last_audit_pk()
    assert _alive(issued["access_token"])
    assert _alive(narrowed.json()["access_token"])

    if withdraw == "delete_link":
        alice.delete()
    elif withdraw == "relink":
        alice.user = admin_user
        alice.save()
    elif withdraw == "change_subject":
        alice.subject = "alice-2"
        alice.save()
    elif withdraw == "disable_issuer":
        trust.enabled = False
        trust.save()
    elif withdraw == "repoint_issuer":
        trust.jwks_uri = "https://elsewhere.example/jwks"
        trust.save()
    elif withdraw == "clear_policy":
        portal.token_exchange_policy.trusted_issuers.clear()
    elif withdraw == "delete_policy":
        portal.token_exchange_policy.delete()
    elif withdraw == "delete_issuer":
        trust.delete()
    else:
        portal.token_exchange_policy.trusted_issuers.remove(trust)

    assert not _alive(issued["access_token"])
    assert not _alive(narrowed.json()["access_token"])
    assert not get_refresh_token_model().objects.filter(revoked__isnull=True, user=end_user).exists()
    revoked = AuditEvent.objects.filter(pk__gt=before, event_type=EventType.TOKENS_REVOKED)
    assert [row.payload["reason"] for row in revoked] == ["trust_withdrawn"]


def test_discovery_lists_the_jwt_bearer_grant(http, live_server):
    import requests

    for path in ("/.well-known/oauth-authorization-server/o", "/o/.well-known/openid-configuration"):
        document = requests.get(live_server.url + path, timeout=10).json()
        assert JWT_BEARER_GRANT_TYPE in document["grant_types_supported"], path
        assert GRANT_TYPE in document["grant_types_supported"], path


def test_a_subject_whose_created_user_was_unlinked_is_not_let_back_in(
    http, portal, external_idp, trust, django_user_model
):
    trust.create_users = True
    trust.save()
    token = external_idp.id_token(sub="comeback", email="back@partner.example", email_verified=True)
    assert exchange(http, portal, token, scope="read").status_code == 200
    FederatedIdentity.objects.get(issuer=trust, subject="comeback").delete()
    users = django_user_model.objects.count()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="comeback"), scope="read"),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )
    assert django_user_model.objects.count() == users


def test_an_id_token_comes_with_openid_and_names_our_user(
    http, portal, external_idp, alice, end_user, our_issuer
):
    response = exchange(http, portal, external_idp.id_token(sub="alice"), scope="openid read")
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["id_token"])
    assert claims["iss"] == our_issuer
    assert claims["sub"] == str(end_user.pk)
    assert claims["aud"] == portal.client_id


def test_the_audience_is_one_of_the_trusts_resources_or_the_client(http, portal, external_idp, trust, alice):
    trust.resources = ["https://aggregates.example.com/"]
    trust.save()
    id_token = external_idp.id_token(sub="alice")
    response = exchange(http, portal, id_token, scope="read", audience="https://aggregates.example.com/")
    assert response.status_code == 200, response.text
    record = ExchangedToken.objects.get(access_token__isnull=False, federated_identity=alice)
    assert record.audience == ["https://aggregates.example.com/"]
    assert record.resource == ["https://aggregates.example.com/"]
    refused(
        lambda: exchange(http, portal, id_token, scope="read", audience="https://settings.example.com/"),
        status=400,
        error="invalid_target",
        description=TARGET_REFUSED,
        reasons=["audience_exceeds_subject"],
    )


def test_two_users_with_one_email_match_nobody(
    http, portal, external_idp, trust, end_user, django_user_model
):
    django_user_model.objects.create_user("twin", end_user.email, "pw")
    trust.match_verified_email = True
    trust.save()
    token = external_idp.id_token(sub="bob", email=end_user.email, email_verified=True)
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )


def test_the_jwt_bearer_grant_issues_refresh_tokens_only_when_told(
    http, portal, external_idp, alice, our_issuer, settings
):
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "JWT_BEARER_REFRESH_TOKENS": True}
    assertion = external_idp.login(sub="alice", resource=our_issuer, scope="openid api")["access_token"]
    response = jwt_bearer(http, portal, assertion, scope="read offline_access")
    assert response.status_code == 200, response.text
    assert "refresh_token" in response.json()


def test_withdrawing_trust_reaches_refreshed_tokens_after_cleartokens(http, portal, external_idp, alice):
    issued = _issued(http, portal, external_idp)
    refreshed = http.post(
        {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert refreshed.status_code == 200, refreshed.text
    # What DOT's cleartokens removes with the default grace period: the rotated-away refresh
    # token, and with it its record. (Deleted here: the command itself assumes DOT's own related
    # names, which the swapped models of make test-swapped rename.)
    deleted, _rows = get_refresh_token_model().objects.filter(revoked__isnull=False).delete()
    assert deleted
    assert ExchangedToken.objects.filter(federated_identity=alice).exists()

    alice.delete()

    assert not _alive(refreshed.json()["access_token"])
    again = http.post(
        {"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert again.status_code == 400


@pytest.mark.parametrize("iss", ["\\ud800", "idp\\u0000"], ids=["lone-surrogate", "nul"])
def test_an_issuer_that_no_column_can_hold_is_refused_not_a_server_error(
    http, portal, external_idp, alice, our_issuer, iss
):
    claims = json.dumps(id_claims(external_idp)).replace(json.dumps(external_idp.issuer), f'"{iss}"')
    key = jwk.JWK(**external_idp.keys[0])
    parts = jws.JWSCore("RS256", key, json.dumps({"alg": "RS256", "kid": key["kid"]}), claims).sign()
    token = f"{parts['protected']}.{parts['payload'].decode()}.{parts['signature']}"
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["wrong_issuer"],
    )
    refused(
        lambda: jwt_bearer(http, portal, token),
        status=400,
        error="invalid_grant",
        description=TOKEN_REFUSED,
        reasons=["wrong_issuer"],
    )


def test_a_jwt_bearer_assertion_may_name_the_token_endpoint(
    http, portal, external_idp, trust, alice, our_issuer
):
    endpoint = our_issuer.rsplit("/o", 1)[0] + "/o/token/"
    for aud, status in ((endpoint, 200), ("/o/token/", 400)):
        now = int(time.time())
        claims = {
            "iss": trust.issuer,
            "sub": "alice",
            "aud": aud,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        }
        response = jwt_bearer(http, portal, signed(external_idp.keys[0], claims, typ="at+jwt"))
        assert response.status_code == status, (aud, response.text)


def test_an_access_token_without_at_jwt_is_no_id_token(http, portal, external_idp, alice):
    token = signed(external_idp.keys[0], id_claims(external_idp, scope="api"), typ="JWT")
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["access_token_as_id_token"],
    )


def test_an_email_match_is_exact_and_ascii(http, portal, external_idp, trust, django_user_model):
    django_user_model.objects.create_user("sales", "sales@example.com", "pw")
    trust.match_verified_email = True
    trust.save()
    token = external_idp.id_token(sub="s", email="\u017fales@example.com", email_verified=True)
    refused(
        lambda: exchange(http, portal, token),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["unlinked_subject"],
    )


def test_staff_are_reached_only_through_a_link_an_admin_made(http, portal, external_idp, trust, end_user):
    trust.match_verified_email = True
    trust.save()
    token = external_idp.id_token(sub="bob", email=end_user.email, email_verified=True)
    issued = exchange(http, portal, token, scope="read offline_access")
    assert issued.status_code == 200
    link = FederatedIdentity.objects.get(issuer=trust, subject="bob")
    assert link.linked_by == FederatedIdentity.LinkedBy.AUTOMATIC
    end_user.is_staff = True  # promoted after the automatic link
    end_user.save()
    refused(
        lambda: exchange(http, portal, external_idp.id_token(sub="bob"), scope="read"),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["admin_subject_not_linked_by_an_admin"],
    )
    # What the automatic link issued ended with the promotion: its refresh token too.
    assert not _alive(issued.json()["access_token"])
    refreshed = http.post(
        {"grant_type": "refresh_token", "refresh_token": issued.json()["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
    )
    assert refreshed.status_code == 400, refreshed.text
    # A link an admin made reaches them.
    link.delete()
    FederatedIdentity.objects.create(issuer=trust, subject="bob", user=end_user)
    assert exchange(http, portal, external_idp.id_token(sub="bob"), scope="read").status_code == 200


def test_without_a_target_the_token_is_for_the_client_only(http, portal, external_idp, trust, alice):
    trust.resources = ["https://aggregates.example.com/"]
    trust.save()
    response = exchange(http, portal, external_idp.id_token(sub="alice"), scope="read")
    assert response.status_code == 200, response.text
    record = ExchangedToken.objects.get(access_token__isnull=False, federated_identity=alice)
    assert record.audience == [portal.client_id]
    assert record.resource == []


@pytest.mark.parametrize("who", ["linked", "unlinked", "inactive"])
def test_a_scope_or_target_error_cannot_tell_a_linked_subject_from_another(
    http, portal, external_idp, trust, alice, end_user, who
):
    """The terms are decided from the trust and the client before whom the token names."""
    if who == "inactive":
        end_user.is_active = False
        end_user.save()
    token = external_idp.id_token(sub="nobody" if who == "unlinked" else "alice")
    refused(
        lambda: exchange(http, portal, token, scope="write"),
        status=400,
        error="invalid_scope",
        description=SCOPE_REFUSED,
        reasons=["scope_exceeds_subject"],
    )
    refused(
        lambda: exchange(http, portal, token, scope="read", audience="https://elsewhere.example/"),
        status=400,
        error="invalid_target",
        description=TARGET_REFUSED,
        reasons=["audience_exceeds_subject"],
    )


def test_an_email_no_column_can_hold_matches_nobody(http, portal, external_idp, trust, end_user):
    trust.match_verified_email = True
    trust.create_users = True
    trust.save()
    token = external_idp.id_token(sub="nul", email="end-user\x00@example.com", email_verified=True)
    response = exchange(http, portal, token, scope="read")
    # Not matched (and no 503 on PostgreSQL): a user is created, without that email.
    assert response.status_code == 200, response.text
    assert FederatedIdentity.objects.get(issuer=trust, subject="nul").user.email == ""

"""Authlib's OAuth 2.0 client (``OAuth2Session``) against a live server, at the endpoints it
discovered: the token exchange, impersonation, refresh, introspection and revocation, with
client_secret_basic and with private_key_jwt (each test runs for both discoveries and both
client authentications)."""

from __future__ import annotations

from typing import Any

import pytest
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT

from example_project.demo import data

from ..conftest import make_app
from .conftest import (
    ACCESS_TOKEN,
    JWT,
    TIMEOUT,
    TOKEN_EXCHANGE,
    USER_ID,
    create_client_key,
    private_key_jwt_session,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.interop]


def test_exchange_refresh_introspect_and_revoke(
    discovered, oauth_client, issuer, portal, aggregates_api, end_user, user_tokens
):
    portal_client = oauth_client(portal)
    aggregates_client = oauth_client(aggregates_api)

    # RFC 8693 §2.1: the portal trades the user's token for one meant for the aggregates API.
    token = portal_client.fetch_token(
        discovered["token_endpoint"],
        grant_type=TOKEN_EXCHANGE,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN,
        audience=data.AGGREGATES_URI,
        scope="read offline_access",
    )
    assert token["issued_token_type"] == ACCESS_TOKEN
    assert token["token_type"] == "Bearer"
    assert set(token["scope"].split()) == {"read", "offline_access"}
    assert token["expires_at"] > 0  # Authlib computed it from expires_in

    def introspect(access_token: str) -> Any:
        return aggregates_client.introspect_token(discovered["introspection_endpoint"], token=access_token)

    # RFC 7662: the API learns who the token is for, for whom it was issued and by whom.
    answer = introspect(token["access_token"])
    assert answer.status_code == 200, answer.text
    claims = answer.json()
    assert claims["active"] is True
    assert claims["iss"] == issuer
    assert claims["sub"] == str(end_user.pk)
    assert claims["client_id"] == "portal"
    assert claims["aud"] == [data.AGGREGATES_URI]
    assert set(claims["scope"].split()) == {"read", "offline_access"}
    assert "act" not in claims

    # RFC 6749 §6, with rotation: a new pair; the old access token is no longer active.
    refreshed = portal_client.refresh_token(
        discovered["token_endpoint"], refresh_token=token["refresh_token"]
    )
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert set(refreshed["scope"].split()) == {"read", "offline_access"}
    assert introspect(token["access_token"]).json() == {"active": False}
    new = introspect(refreshed["access_token"]).json()
    assert (new["active"], new["aud"]) == (True, [data.AGGREGATES_URI])

    # RFC 7009: the portal revokes the refresh token; the family it carries ends with it.
    revoked = portal_client.revoke_token(
        discovered["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200, revoked.text
    assert introspect(refreshed["access_token"]).json() == {"active": False}
    with pytest.raises(OAuthError) as refused:
        portal_client.refresh_token(discovered["token_endpoint"], refresh_token=refreshed["refresh_token"])
    assert refused.value.error == "invalid_grant"


def test_impersonation(
    discovered,
    oauth_client,
    issuer,
    portal,
    aggregates_api,
    impersonation_allowed,
    support,
    support_tokens,
    end_user_in_acme,
):
    """The guide's impersonation: the support agent's token is the actor token, the customer is
    named by user id; the issued token says who acts (RFC 8693 §4.1)."""
    portal_client = oauth_client(portal)
    token = portal_client.fetch_token(
        discovered["token_endpoint"],
        grant_type=TOKEN_EXCHANGE,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN,
        requested_token_type=JWT,
        audience=data.AGGREGATES_URI,
        scope="openid read",
    )
    assert token["issued_token_type"] == JWT
    assert token["token_type"] == "Bearer"

    claims = (
        oauth_client(aggregates_api)
        .introspect_token(discovered["introspection_endpoint"], token=token["access_token"])
        .json()
    )
    assert claims["active"] is True
    assert claims["sub"] == str(end_user_in_acme.pk)
    assert claims["act"] == {"iss": issuer, "sub": str(support.pk)}
    assert claims["aud"] == [data.AGGREGATES_URI]

    # The impersonation ends when the portal revokes the token it was given.
    revoked = portal_client.revoke_token(discovered["revocation_endpoint"], token=token["access_token"])
    assert revoked.status_code == 200, revoked.text
    after = oauth_client(aggregates_api).introspect_token(
        discovered["introspection_endpoint"], token=token["access_token"]
    )
    assert after.json() == {"active": False}


def test_a_wrong_client_secret_is_refused_everywhere(discovered, portal, aggregates_api, user_tokens):
    """RFC 6749 §5.2 at the token endpoint; RFC 7662 §2.3 at introspection: 401 invalid_client."""
    with (
        OAuth2Session(portal.client_id, "not-the-secret", default_timeout=TIMEOUT) as portal_client,
        OAuth2Session(
            aggregates_api.client_id, "not-the-secret", default_timeout=TIMEOUT
        ) as aggregates_client,
    ):
        with pytest.raises(OAuthError) as refused:
            portal_client.fetch_token(
                discovered["token_endpoint"],
                grant_type=TOKEN_EXCHANGE,
                subject_token=user_tokens["access_token"],
                subject_token_type=ACCESS_TOKEN,
            )
        assert refused.value.error == "invalid_client"

        answer = aggregates_client.introspect_token(
            discovered["introspection_endpoint"], token=user_tokens["access_token"]
        )
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert user_tokens["access_token"] not in answer.text


def test_an_assertion_signed_with_an_unregistered_key_is_refused(discovered, portal, user_tokens, tmp_path):
    """private_key_jwt: the key file of another client, presented as the portal."""
    other = make_app("other-app")
    key_file = {**create_client_key(other.client_id, tmp_path), "clientId": portal.client_id}
    with (
        private_key_jwt_session(key_file, discovered["token_endpoint"]) as portal_client,
        pytest.raises(OAuthError) as refused,
    ):
        portal_client.fetch_token(
            discovered["token_endpoint"],
            grant_type=TOKEN_EXCHANGE,
            subject_token=user_tokens["access_token"],
            subject_token_type=ACCESS_TOKEN,
        )
    assert refused.value.error == "invalid_client"


def test_private_key_jwt_needs_the_token_endpoint_as_audience(discovered, aggregates_api, tmp_path):
    """Why ``PrivateKeyJWT(token_endpoint)``: without it Authlib makes the URL it posts to the
    assertion's ``aud``; at the introspection endpoint that is neither the issuer nor the token
    endpoint, the two audiences this server accepts (RFC 7523 §3), so the client is refused."""
    key_file = create_client_key(aggregates_api.client_id, tmp_path)
    with OAuth2Session(
        key_file["clientId"],
        key_file["key"],
        token_endpoint_auth_method="private_key_jwt",
        default_timeout=TIMEOUT,
    ) as aggregates_client:
        aggregates_client.register_client_auth_method(PrivateKeyJWT(headers={"kid": key_file["keyId"]}))
        answer = aggregates_client.introspect_token(discovered["introspection_endpoint"], token="anything")
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"

    with private_key_jwt_session(key_file, discovered["token_endpoint"]) as aggregates_client:
        answer = aggregates_client.introspect_token(discovered["introspection_endpoint"], token="anything")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"active": False}

"""The simple token exchanges of ZITADEL's guide, over the token endpoint."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_id_token_model

from example_project.demo import data
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, ID_TOKEN_TYPE, JWT_TYPE
from token_exchange.models import ExchangedToken

from .conftest import CRM, basic
from .jwt_helpers import verify

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()


def introspect(token: str, app: Any) -> dict[str, Any]:
    response = Client().post(
        "/o/introspect/", {"token": token}, HTTP_AUTHORIZATION=basic(app.client_id, app.plain_secret)
    )
    assert response.status_code == 200
    return dict(response.json())


def test_reduce_audience_and_scope(token_endpoint, portal, aggregates, user_tokens, end_user):
    response = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="openid",
        audience=data.AGGREGATES_URI,
    )

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "openid"
    assert "refresh_token" not in body
    assert 0 < body["expires_in"] <= 36000

    claims = introspect(body["access_token"], aggregates)
    assert claims["active"] is True
    assert claims["scope"] == "openid"
    assert claims["aud"] == [data.AGGREGATES_URI]
    assert claims["sub"] == str(end_user.pk)
    assert claims["client_id"] == "portal"
    assert claims["iss"] == "http://127.0.0.1:8000/o"
    assert claims["token_type"] == "Bearer"
    assert claims["jti"]
    assert claims["iat"] <= claims["exp"]
    assert "act" not in claims

    _header, id_claims = verify(body["id_token"])
    assert id_claims["sub"] == str(end_user.pk)
    assert id_claims["aud"] == ["portal", data.AGGREGATES_URI]
    assert id_claims["azp"] == "portal"
    assert "email" not in id_claims  # scope openid only: no profile or email claims

    bearer = {"HTTP_AUTHORIZATION": f"Bearer {body['access_token']}"}
    api = Client().get("/api/aggregates/", **bearer)
    assert api.status_code == 200
    assert api.json() == {"sub": str(end_user.pk), "scope": "openid", "act": None}
    assert Client().get("/api/settings/", **bearer).status_code == 403


def test_change_token_type_to_jwt_keeps_scope_and_audience(token_endpoint, portal, user_tokens, end_user):
    response = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == JWT_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "email offline_access openid profile read write"
    assert "refresh_token" in body  # offline_access came along with the subject's scope
    header, claims = verify(body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert claims["iss"] == "http://127.0.0.1:8000/o"
    assert claims["sub"] == str(end_user.pk)
    assert claims["aud"] == [data.AGGREGATES_URI, data.SETTINGS_URI, "portal"]
    assert claims["client_id"] == "portal"
    assert claims["scope"] == body["scope"]
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert claims["jti"]
    # Stored like any token: DOT finds it by its value.
    checksum = hashlib.sha256(body["access_token"].encode()).hexdigest()
    assert AccessToken.objects.filter(token_checksum=checksum, user=end_user).exists()
    assert ExchangedToken.objects.get(jti=claims["jti"]).access_token.token_checksum == checksum


def test_jwt_back_to_opaque(token_endpoint, portal, user_tokens):
    jwt = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
        scope="read",
    ).json()["access_token"]

    response = token_endpoint.exchange(portal, subject_token=jwt, subject_token_type=ACCESS_TOKEN_TYPE)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["scope"] == "read"
    assert body["access_token"].count(".") == 0


def test_request_an_id_token(token_endpoint, portal, user_tokens, end_user):
    id_tokens_before = get_id_token_model().objects.count()
    response = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=ID_TOKEN_TYPE,
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["issued_token_type"] == ID_TOKEN_TYPE
    assert body["token_type"] == "N_A"
    assert "id_token" not in body
    assert "refresh_token" not in body
    _header, claims = verify(body["access_token"])
    assert claims["sub"] == str(end_user.pk)
    assert claims["email"] == "end-user@example.com"
    assert claims["name"] == "end user"
    assert "portal" in claims["aud"]
    assert get_id_token_model().objects.count() == id_tokens_before + 1


def test_id_token_as_subject(token_endpoint, portal, user_tokens, end_user):
    response = token_endpoint.exchange(
        portal, subject_token=user_tokens["id_token"], subject_token_type=ID_TOKEN_TYPE
    )

    assert response.status_code == 200, response.content
    body = response.json()
    # An ID token carries only the subject-data scopes, whatever the login asked for.
    assert body["scope"] == "email openid profile"
    assert "refresh_token" not in body
    assert verify(body["id_token"])[1]["sub"] == str(end_user.pk)


def test_id_token_subject_cannot_grant_authorization_scopes(token_endpoint, portal, user_tokens):
    response = token_endpoint.exchange(
        portal, subject_token=user_tokens["id_token"], subject_token_type=ID_TOKEN_TYPE, scope="openid read"
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_refresh_after_exchange_keeps_audience_and_scope(token_endpoint, portal, aggregates, user_tokens):
    exchanged = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="openid read offline_access",
        audience=[data.AGGREGATES_URI, "portal"],
    ).json()
    assert "refresh_token" in exchanged

    refreshed = token_endpoint.post(
        {"grant_type": "refresh_token", "refresh_token": exchanged["refresh_token"]},
        auth=("portal", portal.plain_secret),
    )

    assert refreshed.status_code == 200, refreshed.content
    body = refreshed.json()
    assert set(body["scope"].split()) == {"openid", "read", "offline_access"}
    claims = introspect(body["access_token"], aggregates)
    assert claims["aud"] == [data.AGGREGATES_URI, "portal"]
    assert introspect(exchanged["access_token"], aggregates) == {"active": False}

    again = token_endpoint.post(
        {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=("portal", portal.plain_secret),
    )
    assert again.status_code == 200, again.content
    assert introspect(again.json()["access_token"], aggregates)["aud"] == [data.AGGREGATES_URI, "portal"]


def test_refresh_cannot_widen_the_audience(token_endpoint, portal, user_tokens):
    exchanged = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read offline_access",
        audience=data.AGGREGATES_URI,
    ).json()

    response = token_endpoint.post(
        {
            "grant_type": "refresh_token",
            "refresh_token": exchanged["refresh_token"],
            "resource": data.SETTINGS_URI,
        },
        auth=("portal", portal.plain_secret),
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_exchanged_token_never_outlives_its_subject(token_endpoint, portal, user_tokens):
    subject = AccessToken.objects.get(
        token_checksum=hashlib.sha256(user_tokens["access_token"].encode()).hexdigest()
    )
    subject.expires = timezone.now() + datetime.timedelta(seconds=90)
    subject.save()

    for requested in (ACCESS_TOKEN_TYPE, JWT_TYPE, ID_TOKEN_TYPE):
        body = token_endpoint.exchange(
            portal,
            subject_token=user_tokens["access_token"],
            subject_token_type=ACCESS_TOKEN_TYPE,
            requested_token_type=requested,
        ).json()
        assert 0 < body["expires_in"] <= 90, requested


def test_a_client_in_the_audience_may_exchange(token_endpoint, portal, crm, login, end_user):
    tokens = login(end_user, resources=[data.AGGREGATES_URI, CRM])
    forwarded = token_endpoint.exchange(
        portal,
        subject_token=tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read",
        audience=CRM,
    ).json()["access_token"]

    response = token_endpoint.exchange(crm, subject_token=forwarded, subject_token_type=ACCESS_TOKEN_TYPE)

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "read"


def test_a_client_outside_the_audience_may_not_exchange(token_endpoint, portal, crm, user_tokens):
    response = token_endpoint.exchange(
        crm, subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "The request was refused.",
    }


def test_resource_parameter_narrows_like_audience(token_endpoint, portal, aggregates, user_tokens):
    response = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read",
        resource=data.SETTINGS_URI,
    )

    assert response.status_code == 200, response.content
    assert introspect(response.json()["access_token"], aggregates)["aud"] == [data.SETTINGS_URI]


def test_dot_resource_server_checks_hold_for_exchanged_tokens(token_endpoint, portal, user_tokens):
    from oauth2_provider.oauth2_validators import OAuth2Validator
    from oauthlib.common import Request

    token = token_endpoint.exchange(
        portal,
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="read",
        audience=data.AGGREGATES_URI,
    ).json()["access_token"]

    validator = OAuth2Validator()
    assert validator.validate_bearer_token(token, ["read"], Request("https://aggregates.example.com/v1/sum"))
    assert not validator.validate_bearer_token(token, ["read"], Request("https://settings.example.com/v1/"))


def test_revoked_exchanged_token_is_inactive(token_endpoint, portal, aggregates, user_tokens):
    token = token_endpoint.exchange(
        portal, subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="read"
    ).json()["access_token"]

    revoked = Client().post(
        "/o/revoke_token/", {"token": token}, HTTP_AUTHORIZATION=basic("portal", portal.plain_secret)
    )

    assert revoked.status_code == 200
    assert introspect(token, aggregates) == {"active": False}


@pytest.mark.parametrize(
    "path", ["/o/.well-known/openid-configuration", "/o/.well-known/oauth-authorization-server"]
)
def test_discovery_lists_the_grant(path):
    assert GRANT_TYPE in Client().get(path).json()["grant_types_supported"]

"""Every refusal of the grant: RFC 8693 §2.2.2 / RFC 6749 §5.2 errors, nothing issued, no token echoed."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import django
import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from example_project.demo import data
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    INTROSPECT_ANY,
    JWT_TYPE,
    REFRESH_TOKEN_TYPE,
    USER_ID_TYPE,
)
from token_exchange.models import ClientPolicy, SecuritySettings

from .conftest import basic, form_post, make_app

pytestmark = pytest.mark.django_db
AccessToken = get_access_token_model()


def token_rows() -> tuple[int, int, int]:
    return (
        AccessToken.objects.count(),
        get_refresh_token_model().objects.count(),
        get_id_token_model().objects.count(),
    )


def assert_refused(response: Any, status: int, error: str, *secrets: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert body.get("error_description")
    for secret in secrets:
        assert secret not in response.content.decode()


def subject(tokens: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"subject_token": tokens["access_token"], "subject_token_type": ACCESS_TOKEN_TYPE, **params}


BAD_PARAMETERS = [
    pytest.param({"subject_token": None}, "invalid_request", id="missing subject_token"),
    pytest.param({"subject_token_type": None}, "invalid_request", id="missing subject_token_type"),
    pytest.param({"subject_token_type": "urn:example:unknown"}, "invalid_request", id="unknown subject type"),
    pytest.param({"subject_token_type": REFRESH_TOKEN_TYPE}, "invalid_request", id="refresh token subject"),
    pytest.param({"subject_token_type": JWT_TYPE}, "invalid_request", id="jwt subject without actor"),
    pytest.param({"subject_token_type": USER_ID_TYPE}, "invalid_request", id="user_id subject without actor"),
    pytest.param(
        {"requested_token_type": REFRESH_TOKEN_TYPE}, "invalid_request", id="refresh token requested"
    ),
    pytest.param(
        {"requested_token_type": "urn:example:saml"}, "invalid_request", id="unknown requested type"
    ),
    pytest.param({"actor_token": "x"}, "invalid_request", id="actor_token without type"),
    pytest.param({"actor_token_type": ACCESS_TOKEN_TYPE}, "invalid_request", id="actor_token_type alone"),
    pytest.param({"scope": ["read", "write"]}, "invalid_request", id="scope twice"),
    pytest.param({"requested_token_type": [JWT_TYPE, ID_TOKEN_TYPE]}, "invalid_request", id="type twice"),
    pytest.param({"scope": "read admin"}, "invalid_scope", id="scope the subject lacks"),
    pytest.param({"audience": "https://evil.example.com/"}, "invalid_target", id="audience widened"),
    pytest.param({"audience": [data.AGGREGATES_URI, "crm"]}, "invalid_target", id="one audience too many"),
    pytest.param({"resource": "https://evil.example.com/"}, "invalid_target", id="resource widened"),
    pytest.param({"resource": "not a uri"}, "invalid_target", id="resource not a URI"),
    pytest.param({"resource": "https://aggregates.example.com/#x"}, "invalid_target", id="resource fragment"),
    pytest.param({"subject_token": "x" * 20000}, "invalid_request", id="oversized token"),
]


@pytest.mark.parametrize(("override", "error"), BAD_PARAMETERS)
def test_bad_parameters(token_endpoint, portal, user_tokens, override, error):
    form = subject(user_tokens, **override)
    form = {key: value for key, value in form.items() if value is not None}
    before = token_rows()

    response = token_endpoint.exchange(portal, **form)

    assert_refused(response, 400, error, user_tokens["access_token"])
    assert token_rows() == before


def test_subject_token_twice(token_endpoint, portal, user_tokens, mallory, login):
    other = login(mallory)["access_token"]
    response = token_endpoint.exchange(
        portal, subject_token=[other, user_tokens["access_token"]], subject_token_type=ACCESS_TOKEN_TYPE
    )
    assert_refused(response, 400, "invalid_request", other, user_tokens["access_token"])


def _revoke(tokens: dict[str, Any]) -> None:
    AccessToken.objects.get(
        token_checksum=hashlib.sha256(tokens["access_token"].encode()).hexdigest()
    ).revoke()


def _expire(tokens: dict[str, Any]) -> None:
    AccessToken.objects.filter(
        token_checksum=hashlib.sha256(tokens["access_token"].encode()).hexdigest()
    ).update(expires=timezone.now() - datetime.timedelta(seconds=1))


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda tokens: {"subject_token": "no-such-token"}, id="unknown"),
        pytest.param(lambda tokens: {"subject_token": tokens["access_token"][:-1]}, id="truncated"),
        pytest.param(lambda tokens: {"subject_token": tokens["access_token"].swapcase()}, id="case changed"),
        pytest.param(lambda tokens: _expire(tokens), id="expired"),
        pytest.param(lambda tokens: _revoke(tokens), id="revoked"),
        pytest.param(lambda tokens: {"subject_token": tokens["refresh_token"]}, id="refresh token as access"),
        pytest.param(lambda tokens: {"subject_token": tokens["id_token"]}, id="id token as access token"),
        pytest.param(lambda tokens: {"subject_token_type": ID_TOKEN_TYPE}, id="access token as id token"),
        pytest.param(
            lambda tokens: {
                "subject_token": tokens["id_token"][:-4] + "AAAA",
                "subject_token_type": ID_TOKEN_TYPE,
            },
            id="id token with a bad signature",
        ),
    ],
)
def test_invalid_subject_tokens(token_endpoint, portal, user_tokens, spoil):
    override = spoil(user_tokens) or {}
    before = token_rows()

    response = token_endpoint.exchange(portal, **subject(user_tokens, **override))

    assert_refused(response, 400, "invalid_request", user_tokens["access_token"], user_tokens["id_token"])
    assert response.json()["error_description"] == "The request was refused."
    assert token_rows() == before


def test_expired_id_token(token_endpoint, portal, user_tokens):
    get_id_token_model().objects.update(expires=timezone.now() - datetime.timedelta(seconds=1))
    response = token_endpoint.exchange(
        portal, subject_token=user_tokens["id_token"], subject_token_type=ID_TOKEN_TYPE
    )
    assert_refused(response, 400, "invalid_request", user_tokens["id_token"])


def test_inactive_subject(token_endpoint, portal, user_tokens, end_user):
    end_user.is_active = False
    end_user.save()
    response = token_endpoint.exchange(portal, **subject(user_tokens))
    assert_refused(response, 400, "invalid_request")


def test_token_of_another_client(token_endpoint, portal, crm, login, end_user):
    crm_tokens = login(end_user, crm, resources=[])
    response = token_endpoint.exchange(portal, **subject(crm_tokens))
    assert_refused(response, 400, "invalid_request", crm_tokens["access_token"])


def test_client_credentials_token_has_no_subject(token_endpoint, portal, aggregates):
    app_token = token_endpoint.post(
        {"grant_type": "client_credentials"}, auth=("aggregates", aggregates.plain_secret)
    ).json()["access_token"]
    ClientPolicy.objects.filter(application=portal).update(token_exchange_enabled=True)
    response = token_endpoint.exchange(portal, subject_token=app_token, subject_token_type=ACCESS_TOKEN_TYPE)
    assert_refused(response, 400, "invalid_request", app_token)


def test_wrong_client_secret(token_endpoint, portal, user_tokens):
    response = token_endpoint.exchange(portal, auth=("portal", "wrong"), **subject(user_tokens))
    assert_refused(response, 401, "invalid_client", user_tokens["access_token"])


def test_no_client_authentication(token_endpoint, portal, user_tokens):
    response = token_endpoint.post({"grant_type": GRANT_TYPE, **subject(user_tokens)})
    assert_refused(response, 401, "invalid_client")


def test_public_client(token_endpoint, user_tokens):
    spa = make_app("spa", client_type="public")
    response = token_endpoint.post({"grant_type": GRANT_TYPE, "client_id": "spa", **subject(user_tokens)})
    assert_refused(response, 401, "invalid_client")
    response = token_endpoint.exchange(spa, **subject(user_tokens))
    assert_refused(response, 401, "invalid_client")


@pytest.mark.parametrize("policy", [None, False], ids=["no policy", "policy disabled"])
def test_client_without_an_enabled_policy(token_endpoint, user_tokens, policy):
    legacy = make_app("legacy", exchange=policy)
    response = token_endpoint.exchange(legacy, **subject(user_tokens))
    assert_refused(response, 400, "unauthorized_client")


def test_instance_switch_off(token_endpoint, portal, user_tokens):
    settings = SecuritySettings.load()
    settings.token_exchange_enabled = False
    settings.save()
    response = token_endpoint.exchange(portal, **subject(user_tokens))
    assert_refused(response, 400, "unsupported_grant_type")

    settings.token_exchange_enabled = True
    settings.save()
    assert token_endpoint.exchange(portal, **subject(user_tokens)).status_code == 200


def test_instance_switch_off_is_told_only_to_an_authenticated_client(token_endpoint, portal, user_tokens):
    """The switch is read with the client, in its statement: a client that fails authentication
    learns nothing about the instance's configuration."""
    SecuritySettings.objects.filter(pk=SecuritySettings.load().pk).update(token_exchange_enabled=False)
    wrong_secret = token_endpoint.exchange(portal, auth=(portal.client_id, "wrong"), **subject(user_tokens))
    assert_refused(wrong_secret, 401, "invalid_client")
    assert wrong_secret.json()["error_description"] == "Client authentication failed."
    response = token_endpoint.exchange(portal, **subject(user_tokens))
    assert_refused(response, 400, "unsupported_grant_type")
    assert response.json()["error_description"] == "Token exchange is disabled."


def test_security_settings_read_with_the_client_are_the_row(portal):
    from token_exchange.jwt.client_assertion import load_client

    SecuritySettings.objects.filter(pk=SecuritySettings.load().pk).update(allow_impersonation=True)
    row = SecuritySettings.load()
    client = load_client(portal.client_id)
    read_along = SecuritySettings.of(client)
    assert read_along is not row
    assert [getattr(read_along, f.attname) for f in SecuritySettings._meta.concrete_fields] == [
        getattr(row, f.attname) for f in SecuritySettings._meta.concrete_fields
    ]
    assert (read_along._state.adding, read_along._state.db) == (False, row._state.db)
    # A client read another way carries none: the row is read by itself.
    assert SecuritySettings.of(portal).allow_impersonation is True


def test_actor_tokens_are_refused_until_impersonation_exists(token_endpoint, portal, user_tokens):
    response = token_endpoint.exchange(
        portal,
        **subject(user_tokens, actor_token=user_tokens["access_token"], actor_token_type=ACCESS_TOKEN_TYPE),
    )
    assert_refused(response, 400, "invalid_request", user_tokens["access_token"])


def test_tokens_in_the_query_string_are_refused(portal, user_tokens):
    response = form_post(
        Client(),
        f"/o/token/?subject_token={user_tokens['access_token']}",
        {"grant_type": GRANT_TYPE, "subject_token_type": ACCESS_TOKEN_TYPE},
        HTTP_AUTHORIZATION=basic("portal", portal.plain_secret),
    )
    assert_refused(response, 400, "invalid_request", user_tokens["access_token"])


def test_id_token_requested_without_openid(token_endpoint, portal, user_tokens):
    response = token_endpoint.exchange(
        portal, **subject(user_tokens, requested_token_type=ID_TOKEN_TYPE, scope="read")
    )
    assert_refused(response, 400, "invalid_scope")


def test_token_parameters_are_hidden_from_error_reports(rf, portal, user_tokens):
    from token_exchange.oauth.views import TokenView

    request = rf.post(
        "/o/token/",
        {
            "grant_type": GRANT_TYPE,
            **subject(user_tokens),
            "actor_token": "a",
            "actor_token_type": ACCESS_TOKEN_TYPE,
        },
        HTTP_AUTHORIZATION=basic("portal", portal.plain_secret),
    )
    TokenView.as_view()(request)
    for name in ("subject_token", "actor_token", "client_secret", "refresh_token", "client_assertion"):
        assert name in request.sensitive_post_parameters


@pytest.mark.parametrize("view_name", ["IntrospectTokenView", "RevokeTokenView"])
def test_revocation_and_introspection_hide_credentials_from_error_reports(rf, db, view_name):
    from token_exchange.oauth import introspection, views

    request = rf.post("/o/x/", {"token": "t", "client_assertion": "a", "client_secret": "s"})
    getattr(views if view_name == "RevokeTokenView" else introspection, view_name).as_view()(request)
    for name in ("token", "client_secret", "client_assertion"):
        assert name in request.sensitive_post_parameters


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is new in Django 5.1")
@pytest.mark.parametrize("path", ["/o/token/", "/o/introspect/", "/o/revoke_token/"])
def test_the_form_endpoints_need_no_login_under_login_required_middleware(settings, aggregates, path):
    """Django 5.1's LoginRequiredMiddleware: the endpoints keep DOT's login_not_required."""
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.contrib.auth.middleware.LoginRequiredMiddleware"]
    ClientPolicy.objects.update_or_create(application=aggregates, defaults={"introspection": INTROSPECT_ANY})
    response = form_post(
        Client(),
        path,
        {"grant_type": "client_credentials", "token": "t"},
        HTTP_AUTHORIZATION=basic("aggregates", aggregates.plain_secret),
    )
    assert response.status_code == 200, response.content

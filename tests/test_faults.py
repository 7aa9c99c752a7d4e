"""Faults: the database refuses a write in the middle of a token request.

A trigger makes PostgreSQL or SQLite itself fail the INSERT, as a full disk, a lost primary or
a broken constraint would. Whichever write fails (the token, its exchange record, an ID token
or an audit row), the client gets a clean ``503 temporarily_unavailable``, and neither the
tokens nor their audit rows exist: the request was one transaction. Once the fault is gone the
same request succeeds, so nothing was spent by the failed one either.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, USER_ID_TYPE
from token_exchange.models import AuditEvent, ExchangedToken

from .adversarial import TokenClient, audit_rows_after, last_audit_pk, token_rows
from .db_faults import failing_insert

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]

AccessToken = get_access_token_model()


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


def assert_nothing_issued(send: Any, caplog: Any, *secrets: str) -> None:
    """The request fails cleanly, and leaves no token row and no audit row behind."""
    rows, audit = token_rows(), last_audit_pk()
    with caplog.at_level(logging.ERROR, logger="token_exchange"):
        response = send()
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "temporarily_unavailable"
    assert "access_token" not in response.json()
    assert token_rows() == rows
    assert audit_rows_after(audit) == []
    assert "nothing was issued" in caplog.text
    for secret in secrets:
        assert secret not in response.text
        assert secret not in caplog.text


def subject(tokens: dict[str, Any]) -> dict[str, str]:
    return {"subject_token": tokens["access_token"], "subject_token_type": ACCESS_TOKEN_TYPE}


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(AuditEvent, id="audit row"),
        pytest.param(AccessToken, id="access token row"),
        pytest.param(get_refresh_token_model(), id="refresh token row"),
        pytest.param(get_id_token_model(), id="id token row"),
        pytest.param(ExchangedToken, id="exchange record"),
    ],
)
def test_a_failed_write_during_an_exchange_issues_nothing(http, portal, user_tokens, caplog, model):
    form = {**subject(user_tokens), "scope": "openid offline_access read"}
    with failing_insert(model):
        assert_nothing_issued(lambda: http.exchange(portal, **form), caplog, user_tokens["access_token"])

    retried = http.exchange(portal, **form)
    assert retried.status_code == 200, retried.text
    assert {"id_token", "refresh_token"} <= retried.json().keys()


def test_a_failed_impersonation_audit_row_issues_nothing(
    http, portal, impersonation_allowed, support_tokens, end_user_in_acme, caplog
):
    form = {
        "subject_token": str(end_user_in_acme.pk),
        "subject_token_type": USER_ID_TYPE,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN_TYPE,
    }
    # Only the user.impersonated row fails; token.exchanged, written first, is rolled back with it.
    with failing_insert(AuditEvent, "NEW.event_type = 'user.impersonated'"):
        assert_nothing_issued(lambda: http.exchange(portal, **form), caplog, support_tokens["access_token"])

    assert http.exchange(portal, **form).status_code == 200
    assert AuditEvent.objects.filter(event_type="user.impersonated").count() == 1


def test_a_failed_id_token_exchange_issues_nothing(http, portal, user_tokens, caplog):
    form = {**subject(user_tokens), "requested_token_type": ID_TOKEN_TYPE}
    with failing_insert(get_id_token_model()):
        assert_nothing_issued(lambda: http.exchange(portal, **form), caplog)
    assert http.exchange(portal, **form).json()["token_type"] == "N_A"


def test_a_failed_refusal_audit_row_is_no_silent_refusal(http, portal, caplog):
    """Every refusal is recorded; when it cannot be, the client is told to come back."""
    form = {"subject_token": "forged", "subject_token_type": ACCESS_TOKEN_TYPE}
    with failing_insert(AuditEvent):
        assert_nothing_issued(lambda: http.exchange(portal, **form), caplog)
    assert http.exchange(portal, **form).json()["error"] == "invalid_request"


def test_a_failed_refresh_rotates_nothing(http, portal, user_tokens, caplog):
    """DOT's refresh grant under the same transaction: the refresh token is not spent."""
    form = {"grant_type": "refresh_token", "refresh_token": user_tokens["refresh_token"]}
    auth = ("portal", portal.plain_secret)
    with failing_insert(AccessToken):
        assert_nothing_issued(lambda: http.post(form, auth=auth), caplog, user_tokens["refresh_token"])

    rotated = http.post(form, auth=auth)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != user_tokens["refresh_token"]
    assert http.post(form, auth=auth).json()["error"] == "invalid_grant"


def test_a_failed_code_redemption_leaves_the_code_redeemable(http, portal, end_user, caplog):
    """The authorization code grant: the code is spent only together with its tokens."""
    browser = Client()
    browser.force_login(end_user)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": portal.redirect_uris,
        "scope": "openid read",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    location = browser.get("/o/authorize/?" + urlencode(query))["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": portal.redirect_uris,
        "code_verifier": verifier,
    }
    auth = ("portal", portal.plain_secret)
    with failing_insert(AccessToken):
        assert_nothing_issued(lambda: http.post(form, auth=auth), caplog, code)

    assert http.post(form, auth=auth).status_code == 200
    assert http.post(form, auth=auth).json()["error"] == "invalid_grant"

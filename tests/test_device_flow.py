"""RFC 8628, the device authorization grant, end to end: a device asks for a code at
``/o/device-authorization/``, the user enters it and approves (or denies) it in DOT's own pages
(``/o/device/``, ``/o/device-confirm/<client_id>/<user_code>``), and the device polls ``/o/token/``.

What must hold on every supported oauthlib (3.3 never asks the validator about the code; 4 asks
``validate_device_code``, which DOT 3.4.1 does not have): an approved code gives the tokens of
the user who approved it, once; the device that was not approved, was denied or waited too long
gets the §3.5 error as JSON; a code is good only for the client it was issued to; nothing is a 500.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.db import connections, router
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model

from token_exchange.constants import DEVICE_CODE_GRANT_TYPE

from .conftest import basic, form_post, make_app

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
DeviceGrant = get_device_grant_model()

pytestmark = pytest.mark.django_db


@pytest.fixture
def tv(db: None) -> Any:
    """A confidential device client (a smart TV app) that authenticates with its secret."""
    return make_app("tv", exchange=None, authorization_grant_type=DEVICE_CODE_GRANT_TYPE)


@pytest.fixture
def console(db: None) -> Any:
    """Another confidential device client, which must not redeem the TV's codes."""
    return make_app("console", exchange=None, authorization_grant_type=DEVICE_CODE_GRANT_TYPE)


def credentials(app: Any) -> dict[str, str]:
    return {"client_id": app.client_id, "client_secret": app.plain_secret}


def authorize_device(app: Any, scope: str | None = "read offline_access", **auth: str) -> dict[str, Any]:
    """RFC 8628 §3.1: the device asks for a device code and a user code."""
    form = {**(auth or credentials(app)), **({"scope": scope} if scope else {})}
    response = form_post(Client(), "/o/device-authorization/", form)
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def user_decides(user: Any, answer: dict[str, Any], action: str) -> Any:
    """RFC 8628 §3.3: the user enters the user code at DOT's verification page, then accepts or
    denies on DOT's confirmation page (``DeviceUserCodeView``, ``DeviceConfirmView``)."""
    browser = Client()
    browser.force_login(user)
    entered = browser.post("/o/device/", {"user_code": answer["user_code"]})
    assert entered.status_code == 302, entered.content
    decided = browser.post(entered["Location"], {"action": action})
    assert decided.status_code == 302, decided.content
    return decided


def poll(app: Any, device_code: str, **auth: str) -> Any:
    """RFC 8628 §3.4: the device's token request."""
    form = {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": device_code, **(auth or credentials(app))}
    return form_post(Client(raise_request_exception=False), "/o/token/", form)


def assert_error(response: Any, error: str) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


def grant_of(answer: dict[str, Any]) -> Any:
    return DeviceGrant.objects.get(device_code=answer["device_code"])


# The approved device -------------------------------------------------------------------------


def test_an_approved_device_gets_the_tokens_of_the_user_who_approved_it(tv, end_user):
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")

    response = poll(tv, answer["device_code"])

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"read", "offline_access"}
    # oauthlib's device grant is plain OAuth 2.0: a refresh token, never an ID token.
    assert body["refresh_token"]
    assert "id_token" not in body
    token = AccessToken.objects.get()
    assert token.user == end_user
    assert token.application == tv
    assert set(token.scope.split()) == {"read", "offline_access"}
    assert RefreshToken.objects.get().access_token == token
    # The refresh token works like any other: it renews the user's tokens.
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], **credentials(tv)}
    refreshed = form_post(Client(), "/o/token/", refresh)
    assert refreshed.status_code == 200, refreshed.content
    assert AccessToken.objects.latest("pk").user == end_user


def test_a_device_code_without_scope_gets_the_default_scopes(tv, end_user):
    answer = authorize_device(tv, scope=None)
    user_decides(end_user, answer, "accept")

    response = poll(tv, answer["device_code"])

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "openid"
    assert AccessToken.objects.get().user == end_user


def test_a_public_device_client_identified_by_its_client_id(end_user):
    make_app("kiosk", client_type="public", exchange=None, authorization_grant_type=DEVICE_CODE_GRANT_TYPE)
    answer = authorize_device(None, client_id="kiosk")
    user_decides(end_user, answer, "accept")

    response = poll(None, answer["device_code"], client_id="kiosk")

    assert response.status_code == 200, response.content
    assert AccessToken.objects.get().user == end_user


def test_a_client_authenticated_with_http_basic(tv, end_user):
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")

    response = form_post(
        Client(),
        "/o/token/",
        {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": answer["device_code"]},
        HTTP_AUTHORIZATION=basic("tv", tv.plain_secret),
    )

    assert response.status_code == 200, response.content
    assert AccessToken.objects.get().user == end_user


# Once ------------------------------------------------------------------------------------------


def test_a_device_code_gives_tokens_once(tv, end_user):
    """RFC 8628 §3.5: once the tokens are issued the device authorization session has concluded;
    the same device_code again is ``expired_token`` and issues nothing."""
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")
    assert poll(tv, answer["device_code"]).status_code == 200

    again = poll(tv, answer["device_code"])

    assert_error(again, "expired_token")
    assert AccessToken.objects.count() == 1
    assert RefreshToken.objects.count() == 1
    assert grant_of(answer).status == DeviceGrant.EXPIRED


@pytest.mark.parametrize("approved", ["", "read"], ids=["approved without scope", "approved for read"])
def test_the_device_cannot_widen_the_scope_the_user_approved(tv, end_user, approved):
    """RFC 8628 §3.4's token request has no scope: one sent anyway never widens what the user
    approved, also when the approved scope is empty (where oauthlib reads the parameter)."""
    answer = authorize_device(tv, scope="read")
    grant_of(answer).__class__.objects.filter(device_code=answer["device_code"]).update(scope=approved)
    user_decides(end_user, answer, "accept")

    response = poll(tv, answer["device_code"], **credentials(tv), scope="read write offline_access")

    if approved:
        assert response.status_code == 200, response.content
        assert response.json()["scope"] == "read"
        assert AccessToken.objects.get().scope == "read"
    else:
        assert_error(response, "invalid_scope")
        assert not AccessToken.objects.exists()
        assert grant_of(answer).status == DeviceGrant.AUTHORIZED  # refused, not spent


def test_device_code_and_client_credentials_are_hidden_from_error_reports(rf, tv):
    from token_exchange.oauth.views import TokenView

    request = rf.post(
        "/o/token/",
        {
            "grant_type": DEVICE_CODE_GRANT_TYPE,
            "device_code": "d",
            "client_assertion": "a",
            **credentials(tv),
        },
    )
    TokenView.as_view()(request)
    for name in ("device_code", "client_secret", "client_assertion"):
        assert name in request.sensitive_post_parameters


def test_a_refused_token_request_does_not_use_the_code_up(tv, end_user):
    """A poll refused after the code was checked (here: a wrong secret) leaves it for the device."""
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")

    refused = poll(tv, answer["device_code"], client_id="tv", client_secret="wrong")

    assert refused.status_code == 401, refused.content
    assert refused.json()["error"] == "invalid_client"
    assert grant_of(answer).status == DeviceGrant.AUTHORIZED
    assert poll(tv, answer["device_code"]).status_code == 200


# Not approved (yet) ----------------------------------------------------------------------------


def test_a_device_the_user_has_not_approved_yet_is_told_to_wait(tv, end_user):
    answer = authorize_device(tv)

    assert_error(poll(tv, answer["device_code"]), "authorization_pending")

    # Entering the code is not approving it.
    browser = Client()
    browser.force_login(end_user)
    assert browser.post("/o/device/", {"user_code": answer["user_code"]}).status_code == 302
    assert_error(poll(tv, answer["device_code"]), "authorization_pending")
    assert not AccessToken.objects.exists()


def test_a_denied_device_gets_access_denied(tv, end_user):
    answer = authorize_device(tv)
    user_decides(end_user, answer, "deny")

    assert_error(poll(tv, answer["device_code"]), "access_denied")
    assert_error(poll(tv, answer["device_code"]), "access_denied")
    assert not AccessToken.objects.exists()


def lifetime_passes(answer: dict[str, Any]) -> None:
    """The code's ``expires_in`` goes by (DOT keeps it as the grant's ``expires``)."""
    DeviceGrant.objects.filter(device_code=answer["device_code"]).update(
        expires=timezone.now() - datetime.timedelta(seconds=1)
    )


def test_a_code_the_user_enters_too_late_is_expired(tv, end_user):
    answer = authorize_device(tv)
    lifetime_passes(answer)
    browser = Client()
    browser.force_login(end_user)

    entered = browser.post("/o/device/", {"user_code": answer["user_code"]})

    assert entered.status_code == 200  # DOT's page again, saying the code expired
    assert_error(poll(tv, answer["device_code"]), "expired_token")
    assert not AccessToken.objects.exists()


def test_a_code_approved_but_redeemed_after_its_lifetime_is_expired(tv, end_user):
    """RFC 8628 §3.2: ``expires_in`` is the lifetime of the device_code; an approval does not
    extend it."""
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")
    lifetime_passes(answer)

    assert_error(poll(tv, answer["device_code"]), "expired_token")
    assert_error(poll(tv, answer["device_code"]), "expired_token")
    assert not AccessToken.objects.exists()


# Not this client's, not a code -----------------------------------------------------------------


def test_another_clients_device_code_gives_it_nothing(tv, console, end_user):
    """RFC 6749 §5.2 ``invalid_grant``: the code was issued to another client. The refusal does
    not use the code up: the TV, whose code it is, still gets its tokens."""
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")

    stolen = poll(console, answer["device_code"])

    assert_error(stolen, "invalid_grant")
    assert not AccessToken.objects.exists()
    assert grant_of(answer).status == DeviceGrant.AUTHORIZED
    assert poll(tv, answer["device_code"]).status_code == 200
    assert AccessToken.objects.get().application == tv


def test_a_code_whose_approving_user_was_deactivated_gives_nothing(tv, end_user):
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")
    end_user.is_active = False
    end_user.save()

    assert_error(poll(tv, answer["device_code"]), "invalid_grant")
    assert not AccessToken.objects.exists()


def test_an_unknown_device_code_is_invalid_grant(tv):
    """RFC 6749 §5.2 (DOT 3.4.1's view answered 404 ``device_not_found``)."""
    assert_error(poll(tv, "not-a-device-code"), "invalid_grant")
    assert not AccessToken.objects.exists()


def test_a_code_nobody_approved_within_its_lifetime_is_expired(tv):
    """RFC 8628 §3.5: past ``expires_in`` the device is told to stop polling (DOT 3.4.1's view
    answered ``authorization_pending`` until a user entered the code)."""
    answer = authorize_device(tv)
    lifetime_passes(answer)

    assert_error(poll(tv, answer["device_code"]), "expired_token")
    assert grant_of(answer).status == DeviceGrant.EXPIRED


# At once (PostgreSQL) --------------------------------------------------------------------------

PARALLEL = 10


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
@pytest.mark.skipif(
    connections[router.db_for_write(DeviceGrant)].vendor != "postgresql",
    reason="concurrency needs PostgreSQL's row locks and connections",
)
def test_polls_at_once_with_an_approved_code_get_one_set_of_tokens(live_server, tv, end_user):
    answer = authorize_device(tv)
    user_decides(end_user, answer, "accept")
    form = {"grant_type": DEVICE_CODE_GRANT_TYPE, "device_code": answer["device_code"], **credentials(tv)}
    barrier = threading.Barrier(PARALLEL)

    def one(_: int) -> tuple[int, str | None]:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            response = session.post(f"{live_server.url}/o/token/", data=form, timeout=30)
            return response.status_code, response.json().get("error")

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = Counter(pool.map(one, range(PARALLEL)))

    assert results[(200, None)] == 1, results
    # The others: refused by DOT's view once the winner committed, or by the spend before that.
    assert set(results) <= {(200, None), (400, "expired_token"), (400, "invalid_grant")}, results
    assert AccessToken.objects.count() == 1
    assert RefreshToken.objects.count() == 1

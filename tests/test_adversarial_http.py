"""The adversarial suite, over real HTTP: what an attacker's client sends to the token endpoint.

Malformed bodies, every way to get client authentication wrong, opaque tokens that are not (or
no longer) what they claim, requests that widen audience, resource or scope, every impersonation
rule, and policies changed after tokens were issued. Each case asserts the status, the ``error``,
that no token came back and no token row was written, and exactly the audit rows expected
(``tests/adversarial.py``). Incoming JWTs are attacked in ``test_adversarial_jwt.py``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Group
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from example_project.demo import data
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TYPE,
    USER_ID_TYPE,
)
from token_exchange.models import (
    AuditEvent,
    ClientPolicy,
    ExchangedToken,
    ImpersonatorGrant,
    SecuritySettings,
)

from .adversarial import (
    CLIENT_AUTHENTICATION_FAILED,
    SCOPE_REFUSED,
    TARGET_REFUSED,
    TOKEN_REFUSED,
    TokenClient,
    refused,
)
from .conftest import grant, make_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

AccessToken = get_access_token_model()
FORM = "application/x-www-form-urlencoded"
TEN_MB = 10 * 1024 * 1024
DESCRIPTIONS = {
    "invalid_scope": SCOPE_REFUSED,
    "invalid_target": TARGET_REFUSED,
    "invalid_request": TOKEN_REFUSED,
}


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


def exchange_body(tokens: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": tokens["access_token"],
        "subject_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }


def impersonation_body(actor_token: str, subject: Any, **params: Any) -> dict[str, Any]:
    """The actor's access token and the customer's user id: impersonation (ZITADEL's guide)."""
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": str(subject.pk if hasattr(subject, "pk") else subject),
        "subject_token_type": USER_ID_TYPE,
        "actor_token": actor_token,
        "actor_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }


def raw(body: str | bytes, content_type: str = FORM) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": content_type}}


def test_the_baseline_is_issued(http, portal, user_tokens):
    """The request every case below spoils, sent as it should be: a token."""
    response = http.post(exchange_body(user_tokens), auth=("portal", portal.plain_secret))
    assert response.status_code == 200, response.text
    assert response.json()["issued_token_type"] == ACCESS_TOKEN_TYPE


# Form-body shape ---------------------------------------------------------------------------------

# (build the requests.post keyword arguments from the exchange body, status, error, description,
# audit reasons).
# Reasons are empty where the request is refused before the client is authenticated.
SEND_A_FORM = "Send the parameters as application/x-www-form-urlencoded."
UNREADABLE = "The request body could not be read."
BODY_SHAPES = [
    pytest.param(
        lambda form: raw(json.dumps(form), "application/json"),
        400,
        "invalid_request",
        SEND_A_FORM,
        [],
        id="json body",
    ),
    pytest.param(
        lambda form: {"files": {key: (None, value) for key, value in form.items()}},
        400,
        "invalid_request",
        SEND_A_FORM,
        [],
        id="multipart body",
    ),
    pytest.param(
        lambda form: raw("&".join(f"{k}={v}" for k, v in form.items()), "text/plain"),
        400,
        "invalid_request",
        SEND_A_FORM,
        [],
        id="text/plain body",
    ),
    pytest.param(
        lambda form: raw("<grant_type>x</grant_type>", "application/xml"),
        400,
        "invalid_request",
        SEND_A_FORM,
        [],
        id="xml",
    ),
    pytest.param(
        lambda form: raw(
            "&".join(f"{k}={v}" for k, v in form.items()).encode("utf-16"), FORM + "; charset=utf-16"
        ),
        400,
        "invalid_request",
        UNREADABLE,
        [],
        id="utf-16 form",
    ),
    pytest.param(
        lambda form: raw(f"grant_type={GRANT_TYPE}&subject_token=%E9t%E9", FORM + "; charset=latin-1"),
        400,
        "invalid_request",
        UNREADABLE,
        [],
        id="latin-1 form",
    ),
    pytest.param(
        lambda form: raw(
            f"grant_type={GRANT_TYPE}&subject_token={form['subject_token']}%zz&subject_token_type="
            f"{ACCESS_TOKEN_TYPE}"
        ),
        400,
        "invalid_request",
        TOKEN_REFUSED,
        ["unknown_token"],
        id="bad percent-encoding",
    ),
    pytest.param(
        lambda form: raw(
            f"grant_type={GRANT_TYPE}&subject_token=%ff%fe%00&subject_token_type={ACCESS_TOKEN_TYPE}"
        ),
        400,
        "invalid_request",
        TOKEN_REFUSED,
        ["unknown_token"],
        id="percent-encoded bytes that are not UTF-8",
    ),
    pytest.param(
        lambda form: {"data": {**form, "subject_token": form["subject_token"] + "\x00"}},
        400,
        "invalid_request",
        TOKEN_REFUSED,
        ["unknown_token"],
        id="NUL byte in the token",
    ),
    pytest.param(
        lambda form: {"data": {**form, "subject_token_type": ACCESS_TOKEN_TYPE + "\x00"}},
        400,
        "invalid_request",
        "Unsupported token type.",
        ["invalid_request"],
        id="NUL byte in the token type",
    ),
    pytest.param(
        lambda form: {"data": {**form, "grant_type": GRANT_TYPE + "\x00"}},
        400,
        "unsupported_grant_type",
        None,
        [],
        id="NUL byte in the grant type",
    ),
    pytest.param(
        lambda form: {"data": {**form, "subject_token": "a" * TEN_MB}},
        400,
        "invalid_request",
        UNREADABLE,
        [],
        id="10 MB token",
    ),
    pytest.param(
        lambda form: {"data": {**form, "actor_token": "a" * TEN_MB, "actor_token_type": ACCESS_TOKEN_TYPE}},
        400,
        "invalid_request",
        UNREADABLE,
        [],
        id="10 MB actor token",
    ),
    pytest.param(
        lambda form: {"data": {**form, "subject_token": "a" * 2_000_000}},
        400,
        "invalid_request",
        "A token parameter is too long.",
        ["invalid_request"],
        id="2 MB token, under Django's body limit",
    ),
    pytest.param(
        lambda form: {"data": [*form.items(), *((f"p{i}", "x") for i in range(1500))]},
        400,
        "invalid_request",
        UNREADABLE,
        [],
        id="1,500 parameters",
    ),
    pytest.param(lambda form: {"data": {}}, 400, "unsupported_grant_type", None, [], id="empty body"),
]


@pytest.mark.parametrize(("shape", "status", "error", "description", "reasons"), BODY_SHAPES)
def test_body_shapes(http, portal, user_tokens, shape, status, error, description, reasons):
    request = shape(exchange_body(user_tokens))
    refused(
        lambda: http.post(auth=("portal", portal.plain_secret), **request),
        status=status,
        error=error,
        description=description,
        reasons=reasons,
        secrets=[user_tokens["access_token"], portal.plain_secret],
    )


@pytest.mark.parametrize(
    "parameter",
    ["subject_token", "subject_token_type", "actor_token", "client_secret", "grant_type", "scope"],
)
def test_parameters_in_the_query_string(http, portal, user_tokens, parameter):
    """RFC 6749 §3.2: the token endpoint takes its parameters in the body, never in the URL."""
    value = exchange_body(user_tokens, actor_token="x", client_secret="s", scope="read")[parameter]
    refused(
        lambda: http.session.post(
            http.url,
            params={parameter: value},
            data=exchange_body(user_tokens),
            auth=("portal", portal.plain_secret),
            timeout=30,
        ),
        status=400,
        error="invalid_request",
        description="URL query parameters are not allowed",
        secrets=[user_tokens["access_token"]],
    )


@pytest.mark.parametrize(
    "parameter",
    ["grant_type", "subject_token", "subject_token_type", "requested_token_type", "scope", "actor_token"],
)
def test_repeated_parameters(http, portal, user_tokens, login, mallory, parameter):
    """Only audience and resource may repeat (RFC 8693 §2.1); which copy would win is not asked."""
    other = {
        "grant_type": "client_credentials",
        "subject_token": login(mallory)["access_token"],
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": JWT_TYPE,
        "scope": "openid",
        "actor_token": "x",
    }
    form = exchange_body(user_tokens, requested_token_type=ACCESS_TOKEN_TYPE, scope="read", actor_token="x")
    body = [*form.items(), (parameter, other[parameter])]
    refused(
        lambda: http.post(body, auth=("portal", portal.plain_secret)),
        status=400,
        error="invalid_request",
        description=f"Duplicate {parameter} parameter.",
        secrets=[user_tokens["access_token"], other["subject_token"]],
    )


@pytest.mark.parametrize(
    ("empty", "error", "description", "reasons"),
    [
        pytest.param("grant_type", "unsupported_grant_type", None, [], id="grant_type"),
        pytest.param(
            "subject_token",
            "invalid_request",
            "Missing subject_token parameter.",
            ["invalid_request"],
            id="subject_token",
        ),
        pytest.param(
            "subject_token_type",
            "invalid_request",
            "Missing subject_token_type parameter.",
            ["invalid_request"],
            id="subject_token_type",
        ),
        pytest.param(
            "audience", "invalid_target", "An audience value is empty.", ["invalid_target"], id="audience"
        ),
        pytest.param(
            "resource",
            "invalid_target",
            "A resource is not an absolute URI without a fragment.",
            ["invalid_target"],
            id="resource",
        ),
        pytest.param(
            "actor_token_type",
            "invalid_request",
            "actor_token and actor_token_type must be sent together.",
            ["invalid_request"],
            id="actor_token_type",
        ),
    ],
)
def test_empty_values(http, portal, user_tokens, empty, error, description, reasons):
    extra = {"actor_token": user_tokens["access_token"]} if empty == "actor_token_type" else {}
    form = {**exchange_body(user_tokens, **extra), empty: ""}
    refused(
        lambda: http.post(form, auth=("portal", portal.plain_secret)),
        status=400,
        error=error,
        description=description,
        reasons=reasons,
        secrets=[user_tokens["access_token"]],
    )


# Client authentication ---------------------------------------------------------------------------

CLIENT_AUTH = [
    pytest.param({}, {}, id="none"),
    pytest.param({"client_id": "portal"}, {}, id="client_id alone"),
    pytest.param({"client_id": "portal", "client_secret": ""}, {}, id="empty secret in the body"),
    pytest.param({"client_id": "portal", "client_secret": "wrong"}, {}, id="wrong secret in the body"),
    pytest.param({}, {"auth": ("portal", "wrong")}, id="wrong secret"),
    pytest.param({}, {"auth": ("portal", "")}, id="empty secret"),
    pytest.param({}, {"auth": ("portal", "PORTAL-SECRET")}, id="secret in another case"),
    pytest.param({}, {"auth": ("portal", "portal-secret ")}, id="secret with a trailing space"),
    pytest.param({}, {"auth": ("portal", "crm-secret")}, id="another client's secret"),
    pytest.param({}, {"auth": ("nobody", "portal-secret")}, id="unknown client"),
    pytest.param({}, {"auth": ("x" * 5000, "portal-secret")}, id="5,000-character client_id"),
    pytest.param({}, {"headers": {"Authorization": "Basic %%%"}}, id="basic: not base64"),
    pytest.param({}, {"headers": {"Authorization": "Basic cG9ydGFs"}}, id="basic: no colon"),
    pytest.param({}, {"headers": {"Authorization": "Basic /w=="}}, id="basic: not UTF-8"),
    pytest.param({}, {"headers": {"Authorization": "Bearer portal-secret"}}, id="bearer instead of basic"),
    pytest.param(
        {"client_secret": "portal-secret"},
        {"auth": ("portal", "portal-secret")},
        id="basic and the body at once",
    ),
    pytest.param(
        {"client_secret": "wrong"}, {"auth": ("portal", "portal-secret")}, id="basic and a wrong body secret"
    ),
    pytest.param(
        {"client_id": "crm"},
        {"auth": ("portal", "portal-secret")},
        id="basic for one client, client_id of another",
    ),
    pytest.param(
        {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": "a.b.c"},
        {"auth": ("portal", "portal-secret")},
        id="basic and an assertion at once",
    ),
    pytest.param(
        {
            "client_id": "portal",
            "client_secret": "portal-secret",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
        },
        {},
        id="assertion type without an assertion",
    ),
]


@pytest.mark.parametrize(("body", "request_options"), CLIENT_AUTH)
def test_client_authentication(http, portal, crm, user_tokens, body, request_options):
    """invalid_client (401), and no audit row: nobody is known to attribute it to."""
    form = {**exchange_body(user_tokens), **body}
    refused(
        lambda: http.post(form, **request_options),
        status=401,
        error="invalid_client",
        description=CLIENT_AUTHENTICATION_FAILED,
        secrets=[user_tokens["access_token"], "portal-secret"],
    )


@pytest.mark.parametrize(
    ("request_options", "description"),
    [
        pytest.param({"form": {"client_id": "spa"}}, CLIENT_AUTHENTICATION_FAILED, id="client_id alone"),
        pytest.param(
            {"auth": ("spa", "spa-secret")}, "Public clients cannot use token exchange.", id="with its secret"
        ),
        pytest.param({"auth": ("spa", "")}, CLIENT_AUTHENTICATION_FAILED, id="basic with no secret"),
    ],
)
def test_public_clients_never_exchange(http, user_tokens, request_options, description):
    spa = make_app("spa", client_type="public")
    form = {**exchange_body(user_tokens), **request_options.get("form", {})}
    refused(
        lambda: http.post(form, auth=request_options.get("auth")),
        status=401,
        error="invalid_client",
        description=description,
        secrets=[user_tokens["access_token"]],
    )
    assert spa.token_exchange_policy.token_exchange_enabled


# Opaque tokens -----------------------------------------------------------------------------------


def _row(token: str) -> Any:
    return AccessToken.objects.filter(token_checksum=hashlib.sha256(token.encode()).hexdigest())


def _revoke(tokens: dict[str, Any]) -> str:
    _row(tokens["access_token"]).get().revoke()
    return tokens["access_token"]


def _expire(tokens: dict[str, Any]) -> str:
    _row(tokens["access_token"]).update(expires=timezone.now() - datetime.timedelta(seconds=1))
    return tokens["access_token"]


OPAQUE = [
    pytest.param(_revoke, "unknown_token", id="revoked"),
    pytest.param(_expire, "expired_token", id="expired"),
    pytest.param(lambda tokens: tokens["access_token"][:-1], "unknown_token", id="truncated"),
    pytest.param(lambda tokens: tokens["access_token"] + "x", "unknown_token", id="extended"),
    pytest.param(lambda tokens: tokens["access_token"].swapcase(), "unknown_token", id="case changed"),
    pytest.param(lambda tokens: tokens["refresh_token"], "unknown_token", id="a refresh token"),
    pytest.param(
        lambda tokens: hashlib.sha256(tokens["access_token"].encode()).hexdigest(),
        "unknown_token",
        id="its checksum",
    ),
    pytest.param(lambda tokens: " " + tokens["access_token"], "unknown_token", id="leading space"),
]


@pytest.mark.parametrize(("spoil", "reason"), OPAQUE)
@pytest.mark.parametrize("position", ["subject", "actor"])
def test_opaque_tokens(
    http,
    portal,
    user_tokens,
    impersonation_allowed,
    support,
    end_user_in_acme,
    login,
    spoil,
    reason,
    position,
):
    if position == "subject":
        form = exchange_body(user_tokens, subject_token=spoil(user_tokens))
        secrets = [user_tokens["access_token"]]
    else:
        actor_tokens = login(support)
        form = impersonation_body(spoil(actor_tokens), end_user_in_acme)
        secrets = [actor_tokens["access_token"]]
    refused(
        lambda: http.post(form, auth=("portal", portal.plain_secret)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=[reason],
        secrets=secrets,
    )


def test_another_clients_token(http, portal, crm, login, end_user):
    crm_tokens = login(end_user, crm, resources=[])
    refused(
        lambda: http.exchange(portal, **exchange_body(crm_tokens)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["token_of_another_client"],
        secrets=[crm_tokens["access_token"]],
    )


def test_a_client_credentials_token_has_no_subject(http, portal, aggregates):
    app_token = http.post(
        {"grant_type": "client_credentials"}, auth=("aggregates", "aggregates-secret")
    ).json()
    refused(
        lambda: http.exchange(portal, **exchange_body(app_token)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["token_without_user"],
        secrets=[app_token["access_token"]],
    )


# Widening: audience, resource and scope ----------------------------------------------------------


def _narrowed(http: TokenClient, portal: Any, tokens: dict[str, Any]) -> dict[str, Any]:
    """The login's token, exchanged down to the aggregates API and the read scope."""
    response = http.exchange(portal, **exchange_body(tokens, audience=data.AGGREGATES_URI, scope="read"))
    assert response.status_code == 200, response.text
    return response.json()


WIDENING = [
    pytest.param(
        {"audience": "https://evil.example.com/"}, "invalid_target", "audience_exceeds_subject", id="aud"
    ),
    pytest.param(
        {"resource": "https://evil.example.com/"}, "invalid_target", "audience_exceeds_subject", id="res"
    ),
    pytest.param(
        {"audience": [data.AGGREGATES_URI, "https://evil.example.com/"]},
        "invalid_target",
        "audience_exceeds_subject",
        id="one audience too many",
    ),
    pytest.param(
        {"audience": "https://aggregates.example.com"},
        "invalid_target",
        "audience_exceeds_subject",
        id="look-alike audience without the slash",
    ),
    pytest.param(
        {"audience": "HTTPS://AGGREGATES.EXAMPLE.COM/"},
        "invalid_target",
        "audience_exceeds_subject",
        id="look-alike audience in capitals",
    ),
    pytest.param(
        {"scope": "read admin"}, "invalid_scope", "scope_exceeds_subject", id="scope the subject lacks"
    ),
    pytest.param({"scope": "READ"}, "invalid_scope", "scope_exceeds_subject", id="scope in capitals"),
]


@pytest.mark.parametrize(("widen", "error", "reason"), WIDENING)
def test_widening_the_login(http, portal, user_tokens, widen, error, reason):
    refused(
        lambda: http.exchange(portal, **exchange_body(user_tokens, **widen)),
        status=400,
        error=error,
        description=DESCRIPTIONS[error],
        reasons=[reason],
        secrets=[user_tokens["access_token"]],
    )


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("read\u3000write", id="ideographic space"),
        pytest.param("read\u00a0write", id="no-break space"),
        pytest.param("read\twrite", id="tab"),
        pytest.param("read\nwrite", id="line feed"),
        pytest.param("read\u3000", id="trailing ideographic space"),
        pytest.param('read "write"', id="quotes"),
    ],
)
def test_scopes_are_separated_by_spaces_only(http, portal, user_tokens, scope):
    """RFC 6749 §3.3: scope-tokens of %x21 / %x23-5B / %x5D-7E, separated by %x20 alone. What
    str.split() would have read as "read write" is one unknown scope."""
    refused(
        lambda: http.exchange(portal, **exchange_body(user_tokens, scope=scope)),
        status=400,
        error="invalid_scope",
        description=SCOPE_REFUSED,
        reasons=["malformed_scope"],
        secrets=[user_tokens["access_token"]],
    )


def test_runs_of_spaces_separate_scopes(http, portal, user_tokens):
    response = http.exchange(portal, **exchange_body(user_tokens, scope=" read  write "))
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split(" ")) == {"read", "write"}


NARROWED_WIDENING = [
    pytest.param(
        {"audience": data.SETTINGS_URI}, "invalid_target", "audience_exceeds_subject", id="back to settings"
    ),
    pytest.param(
        {"resource": data.SETTINGS_URI}, "invalid_target", "audience_exceeds_subject", id="resource back"
    ),
    pytest.param(
        {"audience": "portal"}, "invalid_target", "audience_exceeds_subject", id="back to the client"
    ),
    pytest.param({"scope": "read write"}, "invalid_scope", "scope_exceeds_subject", id="write back"),
    pytest.param({"scope": "openid"}, "invalid_scope", "scope_exceeds_subject", id="openid back"),
]


@pytest.mark.parametrize(("widen", "error", "reason"), NARROWED_WIDENING)
def test_a_narrowed_token_cannot_be_widened_again(http, portal, user_tokens, widen, error, reason):
    narrowed = _narrowed(http, portal, user_tokens)
    refused(
        lambda: http.exchange(portal, **exchange_body(narrowed, **widen)),
        status=400,
        error=error,
        description=DESCRIPTIONS[error],
        reasons=[reason],
        secrets=[narrowed["access_token"]],
    )


def test_a_refresh_cannot_widen_an_exchanged_token(http, portal, user_tokens):
    exchanged = http.exchange(
        portal, **exchange_body(user_tokens, audience=data.AGGREGATES_URI, scope="openid offline_access read")
    ).json()
    form = {"grant_type": "refresh_token", "refresh_token": exchanged["refresh_token"]}
    for widen, error, description in (
        (
            {"resource": data.SETTINGS_URI},
            "invalid_target",
            f"The requested resource {data.SETTINGS_URI!r} is not allowed. Token refresh cannot request "
            "resources beyond the original refresh token scope",
        ),
        ({"scope": "write"}, "invalid_scope", None),
    ):
        refused(
            lambda widen=widen, description=description: http.post(
                {**form, **widen}, auth=("portal", portal.plain_secret)
            ),
            status=400,
            error=error,
            description=description,
            secrets=[exchanged["refresh_token"]],
        )


def test_an_impersonation_cannot_widen_past_the_actor(
    http, portal, impersonation_allowed, support, end_user_in_acme, login
):
    actor_tokens = login(support, resources=(data.AGGREGATES_URI,), scope="openid read")
    form = impersonation_body(actor_tokens["access_token"], end_user_in_acme)
    for widen, error, reason in (
        ({"scope": "read write"}, "invalid_scope", "scope_exceeds_actor"),
        ({"audience": data.SETTINGS_URI}, "invalid_target", "audience_exceeds_subject"),
    ):
        refused(
            lambda widen=widen: http.exchange(portal, **form, **widen),
            status=400,
            error=error,
            description=DESCRIPTIONS[error],
            reasons=[reason],
            secrets=[actor_tokens["access_token"]],
        )


# Every impersonation rule ------------------------------------------------------------------------


def _user(django_user_model: Any, name: str, **fields: Any) -> Any:
    return django_user_model.objects.create_user(name, f"{name}@example.com", "pw", **fields)


def _in(user: Any, group: Any) -> Any:
    user.groups.add(group)
    return user


IMPERSONATION_RULES: list[Any] = [
    pytest.param(
        lambda actor, subject: SecuritySettings.objects.update(allow_impersonation=False),
        "impersonation_disabled",
        id="switch off",
    ),
    pytest.param(
        lambda actor, subject: ImpersonatorGrant.objects.filter(user=actor).delete(),
        "actor_not_impersonator",
        id="actor holds no grant",
    ),
    pytest.param(
        lambda actor, subject: ImpersonatorGrant.objects.filter(user=actor).update(
            organization=Group.objects.create(name="Other")
        ),
        "subject_not_covered",
        id="grant for another organization",
    ),
    pytest.param(
        lambda actor, subject: subject.groups.clear(),
        "subject_not_covered",
        id="subject outside the actor's organization",
    ),
    pytest.param(
        lambda actor, subject: type(subject).objects.filter(pk=subject.pk).update(is_staff=True),
        "subject_not_covered",
        id="end-user impersonator, staff subject",
    ),
    pytest.param(
        lambda actor, subject: grant(subject),
        "subject_not_covered",
        id="end-user impersonator, subject is an impersonator",
    ),
    pytest.param(
        lambda actor, subject: type(subject).objects.filter(pk=subject.pk).update(is_superuser=True),
        "subject_is_superuser",
        id="superuser subject",
    ),
    pytest.param(
        lambda actor, subject: type(subject).objects.filter(pk=subject.pk).update(is_active=False),
        "inactive_user",
        id="inactive subject",
    ),
]


@pytest.mark.parametrize(("arrange", "reason"), IMPERSONATION_RULES)
def test_impersonation_rules(
    http, portal, impersonation_allowed, support, end_user_in_acme, login, arrange, reason
):
    actor_tokens = login(support)
    arrange(support, end_user_in_acme)
    form = impersonation_body(actor_tokens["access_token"], end_user_in_acme)
    refused(
        lambda: http.exchange(portal, **form),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=[reason],
        secrets=[actor_tokens["access_token"]],
    )


def test_more_impersonation_rules(
    http, portal, impersonation_allowed, support, acme, login, django_user_model
):
    """Rules that need other people: oneself, an admin impersonator of one organization against
    a superuser, a superuser actor without the instance-wide grant, nobody at all."""
    admin = _in(_user(django_user_model, "org-admin", is_staff=True), acme)
    grant(admin, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR, acme)
    root = _in(_user(django_user_model, "root", is_superuser=True, is_staff=True), acme)
    super_actor = _in(_user(django_user_model, "super-actor", is_superuser=True), acme)
    grant(super_actor, ImpersonatorGrant.Role.ADMIN_IMPERSONATOR, acme)
    cases = [
        (support, support.pk, "actor_is_subject"),
        (admin, root.pk, "subject_is_superuser"),
        (super_actor, root.pk, "subject_is_superuser"),
        (support, 10**9, "unknown_user"),
        (support, "1 OR 1=1", "malformed_user_id"),
        (support, "", "invalid_request"),
    ]
    for actor, subject_id, reason in cases:
        description = "Missing subject_token parameter." if subject_id == "" else TOKEN_REFUSED
        actor_tokens = login(actor)
        form = impersonation_body(actor_tokens["access_token"], subject_id)
        refused(
            lambda form=form: http.exchange(portal, **form),
            status=400,
            error="invalid_request",
            description=description,
            reasons=[reason],
            secrets=[actor_tokens["access_token"]],
        )


def test_an_inactive_actor(http, portal, impersonation_allowed, support, end_user_in_acme, login):
    actor_tokens = login(support)
    type(support).objects.filter(pk=support.pk).update(is_active=False)
    form = impersonation_body(actor_tokens["access_token"], end_user_in_acme)
    refused(
        lambda: http.exchange(portal, **form),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["inactive_user"],
    )


# A policy changed after tokens were issued -------------------------------------------------------


@pytest.fixture
def impersonated(
    http: TokenClient,
    portal: Any,
    impersonation_allowed: Any,
    support: Any,
    end_user_in_acme: Any,
    login: Any,
) -> dict[str, Any]:
    """Tokens support obtained for the customer, before the change."""
    actor_tokens = login(support)
    response = http.exchange(
        portal,
        **impersonation_body(
            actor_tokens["access_token"], end_user_in_acme, scope="openid offline_access read"
        ),
    )
    assert response.status_code == 200, response.text
    return response.json()


POLICY_CHANGES: list[Any] = [
    pytest.param(
        lambda users: SecuritySettings.objects.update(allow_impersonation=False),
        "impersonation_disabled",
        id="switch turned off",
    ),
    pytest.param(
        lambda users: ImpersonatorGrant.objects.filter(user=users["support"]).delete(),
        "actor_not_impersonator",
        id="grant withdrawn",
    ),
    pytest.param(
        lambda users: users["customer"].groups.clear(),
        "subject_not_covered",
        id="customer left the organization",
    ),
    pytest.param(
        lambda users: type(users["support"]).objects.filter(pk=users["support"].pk).update(is_active=False),
        "actor_inactive",
        id="actor deactivated",
    ),
    pytest.param(
        lambda users: type(users["support"]).objects.filter(pk=users["support"].pk).delete(),
        "actor_deleted",
        id="actor deleted",
    ),
]


@pytest.mark.parametrize(("change", "reason"), POLICY_CHANGES)
def test_a_policy_change_stops_the_refresh_and_the_re_exchange_of_impersonated_tokens(
    http, portal, impersonated, support, end_user_in_acme, change, reason
):
    change({"support": support, "customer": end_user_in_acme})
    refused(
        lambda: http.post(
            {"grant_type": "refresh_token", "refresh_token": impersonated["refresh_token"]},
            auth=("portal", portal.plain_secret),
        ),
        status=400,
        error="invalid_grant",
        description=None,
        reasons=[reason],
        secrets=[impersonated["refresh_token"]],
    )
    if reason == "actor_deleted":
        # The actor's tokens went with them, so the authorization the impersonation lives by has
        # ended: the token reader finds that before the rules are asked (every exchanged token
        # lives by its root, lineage.py) and refuses the re-exchange as every other refusal
        # reads, revoking the impersonated tokens on the way (a tokens.revoked row).
        response = http.exchange(portal, **exchange_body(impersonated))
        assert response.status_code == 400, response.text
        assert response.json() == {"error": "invalid_request", "error_description": TOKEN_REFUSED}
        last = (
            AuditEvent.objects.filter(event_type=AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED)
            .order_by("pk")
            .last()
        )
        assert last is not None
        assert last.payload["reason"] == "actor_authorization_ended"
        assert not ExchangedToken.objects.filter(act__isnull=False, access_token__isnull=False).exists()
        return
    refused(
        lambda: http.exchange(portal, **exchange_body(impersonated)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=[reason],
        secrets=[impersonated["access_token"]],
    )


@pytest.mark.parametrize(
    ("change", "status", "error", "description", "reasons"),
    [
        pytest.param(
            lambda app: ClientPolicy.objects.filter(application=app).update(token_exchange_enabled=False),
            400,
            "unauthorized_client",
            "This client is not allowed to use token exchange.",
            ["unauthorized_client"],
            id="client policy disabled",
        ),
        pytest.param(
            lambda app: ClientPolicy.objects.filter(application=app).delete(),
            400,
            "unauthorized_client",
            "This client is not allowed to use token exchange.",
            ["unauthorized_client"],
            id="client policy deleted",
        ),
        pytest.param(
            lambda app: (
                SecuritySettings.load() and SecuritySettings.objects.update(token_exchange_enabled=False)
            ),
            400,
            "unsupported_grant_type",
            "Token exchange is disabled.",
            [],
            id="token exchange turned off",
        ),
        pytest.param(
            lambda app: type(app).objects.filter(pk=app.pk).update(client_type="public"),
            401,
            "invalid_client",
            "Public clients cannot use token exchange.",
            [],
            id="client made public",
        ),
        pytest.param(
            lambda app: type(app).objects.filter(pk=app.pk).update(client_secret="rotated"),
            401,
            "invalid_client",
            CLIENT_AUTHENTICATION_FAILED,
            [],
            id="client secret rotated",
        ),
    ],
)
def test_a_client_policy_change_applies_to_tokens_already_issued(
    http, portal, user_tokens, change, status, error, description, reasons
):
    change(portal)
    refused(
        lambda: http.exchange(portal, **exchange_body(user_tokens)),
        status=status,
        error=error,
        description=description,
        reasons=reasons,
        secrets=[user_tokens["access_token"]],
    )


def test_a_deactivated_customer_is_exchanged_no_more(http, portal, user_tokens, end_user):
    type(end_user).objects.filter(pk=end_user.pk).update(is_active=False)
    refused(
        lambda: http.exchange(portal, **exchange_body(user_tokens)),
        status=400,
        error="invalid_request",
        description=TOKEN_REFUSED,
        reasons=["inactive_user"],
        secrets=[user_tokens["access_token"]],
    )


UNREADABLE = "The request body could not be read."


@pytest.mark.parametrize("path", ["/o/token/", "/o/introspect/", "/o/revoke_token/"])
@pytest.mark.parametrize(
    ("request_options", "description"),
    [
        pytest.param(
            raw(json.dumps({"token": "t"}), "application/json"), f"Send the parameters as {FORM}.", id="json"
        ),
        pytest.param({"data": {"token": "a" * TEN_MB}}, UNREADABLE, id="10 MB token"),
        pytest.param(raw(b"token=%E9", FORM + "; charset=latin-1"), UNREADABLE, id="latin-1"),
        pytest.param(raw(b"--x--", "multipart/form-data"), UNREADABLE, id="multipart without a boundary"),
        pytest.param(
            raw(b"--x--", "multipart/form-data; boundary="), UNREADABLE, id="multipart, empty boundary"
        ),
    ],
)
def test_unreadable_bodies_at_every_form_endpoint(
    live_server, aggregates, path, request_options, description
):
    """The token, introspection and revocation endpoints answer alike: a JSON error, never
    Django's HTML 400 page."""
    response = requests.post(
        f"{live_server.url}{path}", auth=("aggregates", "aggregates-secret"), timeout=30, **request_options
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "invalid_request", "error_description": description}


@pytest.mark.parametrize(
    ("body", "request_options"),
    [
        pytest.param(
            {"client_secret": "aggregates-secret"},
            {"auth": ("aggregates", "aggregates-secret")},
            id="basic+body",
        ),
        pytest.param(
            {"client_id": "portal"},
            {"auth": ("aggregates", "aggregates-secret")},
            id="basic, another client_id",
        ),
    ],
)
@pytest.mark.parametrize("grant_type", ["client_credentials", "refresh_token"])
def test_one_client_authentication_per_request_for_every_grant(
    http, aggregates, portal, user_tokens, body, request_options, grant_type
):
    form = {"grant_type": grant_type, "refresh_token": user_tokens["refresh_token"], **body}
    refused(
        lambda: http.post(form, **request_options),
        status=401,
        error="invalid_client",
        description=None,
        secrets=[user_tokens["refresh_token"], "aggregates-secret"],
    )


def test_an_empty_body_secret_beside_basic_is_no_second_method(http, portal, user_tokens):
    """Some client libraries send ``client_secret=`` along with Basic; it authenticates nothing."""
    response = http.post(exchange_body(user_tokens, client_secret=""), auth=("portal", portal.plain_secret))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "form",
    [
        pytest.param({}, id="missing"),
        pytest.param({"device_code": ""}, id="empty"),
        pytest.param({"device_code": "a\x00b"}, id="NUL byte"),
    ],
)
def test_a_device_code_request_without_a_usable_device_code(http, aggregates, form):
    """DOT reads ``device_code`` with ``[]``: without one its token endpoint answered 500."""
    refused(
        lambda: http.post(
            {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", **form},
            auth=("aggregates", "aggregates-secret"),
        ),
        status=400,
        error="invalid_request",
        description="Missing or malformed device_code parameter.",
    )

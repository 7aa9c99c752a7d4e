"""Refusals tell a client nothing about the users it names (issue 17, section 2).

A client names a user by id (or in a JWT it signs) beside its support user's actor token. Whether
that id names nobody, is malformed, an inactive user, a superuser, someone of another
organization or someone this actor may not act for, the client reads the same refusal: the same
status, ``error``, ``error_description`` and headers (apart from ``Date``), with a valid actor
token and with a garbage one. A bad subject token and a bad actor token read the same too. And
since the order of checks must not tell either, a scope or audience the actor lacks is answered
the same whoever is named, the customer the actor may impersonate included. The reason is only
in the audit row.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from example_project.demo import data
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.models import AuditEvent, ImpersonatorGrant

from . import client_jwt
from .adversarial import SCOPE_REFUSED, TARGET_REFUSED, TOKEN_REFUSED, TokenClient, refused
from .conftest import grant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

GARBAGE = "not-a-token"


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def people(django_user_model: Any, acme: Any, end_user_in_acme: Any) -> dict[str, str]:
    """Every kind of user id a probing client could name, by what it would learn; ``customer``
    is the one ``support`` may impersonate."""

    def user(name: str, *, groups: tuple[Any, ...] = (acme,), **fields: Any) -> str:
        created = django_user_model.objects.create_user(name, f"{name}@example.com", "pw", **fields)
        created.groups.add(*groups)
        return str(created.pk)

    other_org = Group.objects.create(name="Globex")
    impersonator = user("colleague")
    grant(django_user_model.objects.get(pk=impersonator), ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    return {
        "customer": str(end_user_in_acme.pk),
        "unknown": "987654321",
        "malformed": "1 OR 1=1",
        "not a number": "abc",
        "inactive": user("gone", is_active=False),
        "superuser": user("root", is_superuser=True, is_staff=True),
        "other organization": user("globex-user", groups=(other_org,)),
        "no organization": user("loner", groups=()),
        "staff (not permitted)": user("staffer", is_staff=True),
        "impersonator (not permitted)": impersonator,
    }


def outcome(response: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What the client sees, apart from the moment it was sent."""
    headers = {name.lower(): value for name, value in response.headers.items() if name.lower() != "date"}
    return response.status_code, response.json(), headers


def by_user_id(actor_token: str, subject: str, **params: Any) -> dict[str, Any]:
    return {
        "grant_type": GRANT_TYPE,
        "subject_token": subject,
        "subject_token_type": USER_ID_TYPE,
        "actor_token": actor_token,
        "actor_token_type": ACCESS_TOKEN_TYPE,
        **params,
    }


def refusal_reasons(since: int) -> list[str]:
    rows = AuditEvent.objects.filter(pk__gt=since, event_type=AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED)
    return [row.payload["reason"] for row in rows.order_by("pk")]


def last_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def assert_indistinguishable(outcomes: dict[str, Any]) -> None:
    first_name, first = next(iter(outcomes.items()))
    for name, seen in outcomes.items():
        assert seen == first, f"{name!r} answers {seen}, {first_name!r} answers {first}"


@pytest.mark.parametrize("actor", ["valid actor token", "garbage actor token"])
def test_user_ids_are_indistinguishable(
    http, portal, impersonation_allowed, support, support_tokens, people, actor
):
    actor_token = support_tokens["access_token"] if actor == "valid actor token" else GARBAGE
    targets = {name: pk for name, pk in people.items() if actor != "valid actor token" or name != "customer"}
    since = last_pk()
    outcomes = {
        name: outcome(http.exchange(portal, **by_user_id(actor_token, pk))) for name, pk in targets.items()
    }

    assert_indistinguishable(outcomes)
    status, body, _headers = next(iter(outcomes.values()))
    assert (status, body) == (400, {"error": "invalid_request", "error_description": TOKEN_REFUSED})
    # The log and the audit know why, one row per request.
    reasons = refusal_reasons(since)
    assert len(reasons) == len(targets)
    if actor == "valid actor token":
        assert set(reasons) == {
            "unknown_user",
            "malformed_user_id",
            "inactive_user",
            "subject_is_superuser",
            "subject_not_covered",
        }
    else:
        # The named user's refusal waits until after the terms (see decide): the actor's is first.
        assert set(reasons) == {"unknown_token"}


@pytest.mark.parametrize(
    ("widen", "status", "error", "description", "reason"),
    [
        pytest.param(
            {"scope": "openid write"}, 400, "invalid_scope", SCOPE_REFUSED, "scope_exceeds_actor", id="scope"
        ),
        pytest.param(
            {"scope": "openid not-a-scope"},
            400,
            "invalid_scope",
            SCOPE_REFUSED,
            "scope_not_allowed_for_client",
        ),
        pytest.param(
            {"audience": data.SETTINGS_URI},
            400,
            "invalid_target",
            TARGET_REFUSED,
            "audience_exceeds_subject",
            id="audience",
        ),
        pytest.param(
            {"requested_token_type": "urn:ietf:params:oauth:token-type:id_token", "scope": "read"},
            400,
            "invalid_scope",
            SCOPE_REFUSED,
            "id_token_without_openid",
            id="id_token without openid",
        ),
    ],
)
def test_the_order_of_checks_tells_nothing(
    http, portal, impersonation_allowed, support, login, people, widen, status, error, description, reason
):
    """A scope or audience past the actor's is refused before anyone named is looked at: the
    customer the actor may impersonate reads the same as nobody at all."""
    actor_tokens = login(support, resources=(data.AGGREGATES_URI,), scope="openid read")
    outcomes = {
        name: refused(
            lambda pk=pk: http.exchange(portal, **by_user_id(actor_tokens["access_token"], pk, **widen)),
            status=status,
            error=error,
            description=description,
            reasons=[reason],
            secrets=[actor_tokens["access_token"]],
        )
        for name, pk in people.items()
    }
    assert_indistinguishable({name: outcome(response) for name, response in outcomes.items()})


def test_without_the_widening_the_customer_is_issued(
    http, portal, impersonation_allowed, support, login, people
):
    """The control: the same request for the customer, within the actor's scope, is issued."""
    actor_tokens = login(support, resources=(data.AGGREGATES_URI,), scope="openid read")
    response = http.exchange(portal, **by_user_id(actor_tokens["access_token"], people["customer"]))
    assert response.status_code == 200, response.text


def test_a_bad_subject_token_reads_as_a_bad_actor_token(
    http, portal, impersonation_allowed, support_tokens, login, end_user_in_acme
):
    customer_tokens = login(end_user_in_acme)

    def with_tokens(subject_token: str, actor_token: str | None) -> Any:
        params = {"subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE}
        if actor_token is not None:
            params.update(actor_token=actor_token, actor_token_type=ACCESS_TOKEN_TYPE)
        return outcome(http.exchange(portal, **params))

    outcomes = {
        "bad subject, valid actor": with_tokens(GARBAGE, support_tokens["access_token"]),
        "valid subject, bad actor": with_tokens(customer_tokens["access_token"], GARBAGE),
        "both bad": with_tokens(GARBAGE, GARBAGE),
        "bad subject, no actor": with_tokens(GARBAGE, None),
        "subject presented as actor": with_tokens(support_tokens["access_token"], GARBAGE),
        "revoked actor": with_tokens(customer_tokens["access_token"], customer_tokens["refresh_token"]),
    }
    assert_indistinguishable(outcomes)
    assert outcomes["both bad"][:2] == (400, {"error": "invalid_request", "error_description": TOKEN_REFUSED})


@pytest.mark.parametrize("actor", ["valid actor token", "garbage actor token"])
def test_self_signed_subject_jwts_are_indistinguishable(
    http, portal, impersonation_allowed, support, support_tokens, people, actor
):
    """ZITADEL's impersonation by JWT profile: the client names the user in a JWT it signs."""
    key = client_jwt.register_key(portal)
    actor_token = support_tokens["access_token"] if actor == "valid actor token" else GARBAGE
    targets = {name: pk for name, pk in people.items() if actor != "valid actor token" or name != "customer"}
    outcomes = {}
    for name, pk in targets.items():
        subject_jwt = client_jwt.sign(key, client_jwt.assertion_claims("portal", sub=pk))
        form = {
            "subject_token": subject_jwt,
            "subject_token_type": JWT_TYPE,
            "actor_token": actor_token,
            "actor_token_type": ACCESS_TOKEN_TYPE,
        }
        outcomes[name] = outcome(http.exchange(portal, **form))
    assert_indistinguishable(outcomes)
    assert next(iter(outcomes.values()))[:2] == (
        400,
        {"error": "invalid_request", "error_description": TOKEN_REFUSED},
    )

"""RFC 7662 introspection over real HTTP: who may ask, what they learn, and how it travels.

Only an authenticated confidential client whose ``ClientPolicy.introspection`` is set may
introspect; everyone else gets ``401 invalid_client`` as JSON. With ``"audience"`` a client
learns about tokens whose audience names it (its client_id or one of its ``resource_uris``),
with ``"any"`` about every token; anything else reads exactly as an unknown token.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any

import pytest
import requests
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from example_project.demo import data
from token_exchange.client_keys import generate_key_pair
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, INTROSPECT_ANY, INTROSPECT_AUDIENCE
from token_exchange.models import ClientPolicy
from token_exchange.oauth.introspection import may_introspect, may_learn_about

from .adversarial import OneConnectionPerRequest
from .client_jwt import KeyFile, assertion_claims, assertion_form, register_key, sign
from .conftest import make_app

pytestmark = pytest.mark.django_db(transaction=True)

AccessToken = get_access_token_model()
Application = get_application_model()
ALLOWED_CLAIMS = {"active", "sub", "username", "scope", "aud", "client_id", "exp", "iat", "nbf", "iss", "jti"}


# The decision, as a truth table -----------------------------------------------------------------

OWN = "aggregates"
RESOURCE = data.AGGREGATES_URI
OTHER = "https://settings.example.com/"


@pytest.mark.parametrize(
    ("confidential", "permission", "audience", "expected"),
    [
        # Not allowed to introspect: nothing, whatever the audience.
        (True, "", (OWN,), False),
        (True, "", (RESOURCE,), False),
        (True, "something-else", (OWN,), False),
        # Public clients never may, even holding the permission.
        (False, INTROSPECT_ANY, (OWN,), False),
        (False, INTROSPECT_AUDIENCE, (OWN,), False),
        # "audience": its client_id or one of its resource URIs in the token's audience.
        (True, INTROSPECT_AUDIENCE, (OWN,), True),
        (True, INTROSPECT_AUDIENCE, (RESOURCE,), True),
        (True, INTROSPECT_AUDIENCE, (OTHER, RESOURCE), True),
        (True, INTROSPECT_AUDIENCE, (OTHER,), False),
        (True, INTROSPECT_AUDIENCE, ("portal",), False),
        (True, INTROSPECT_AUDIENCE, (), False),
        # Strings compare as they are: no normalisation that could make two resources one.
        (True, INTROSPECT_AUDIENCE, (RESOURCE.rstrip("/"),), False),
        (True, INTROSPECT_AUDIENCE, (OWN.upper(),), False),
        # "any": every token.
        (True, INTROSPECT_ANY, (OTHER,), True),
        (True, INTROSPECT_ANY, (), True),
    ],
)
def test_may_learn_about(confidential, permission, audience, expected):
    assert (
        may_learn_about(
            confidential=confidential,
            permission=permission,
            client_id=OWN,
            resource_uris=frozenset({RESOURCE}),
            audience=audience,
        )
        is expected
    )


@pytest.mark.parametrize(
    ("confidential", "permission", "expected"),
    [
        (True, INTROSPECT_AUDIENCE, True),
        (True, INTROSPECT_ANY, True),
        (True, "", False),
        (False, INTROSPECT_AUDIENCE, False),
        (False, INTROSPECT_ANY, False),
        (False, "", False),
    ],
)
def test_may_introspect(confidential, permission, expected):
    assert may_introspect(confidential=confidential, permission=permission) is expected


def test_an_empty_client_id_is_in_no_audience():
    assert not may_learn_about(
        confidential=True, permission=INTROSPECT_AUDIENCE, client_id="", resource_uris=(), audience=("",)
    )


# Over HTTP --------------------------------------------------------------------------------------


class Introspection:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url = f"{base_url}/o/introspect/"
        self.session = OneConnectionPerRequest()

    def post(self, data: Any = None, **kwargs: Any) -> Any:
        return self.session.post(self.url, data=data, timeout=30, **kwargs)

    def ask(self, app: Any, token: str) -> Any:
        return self.post({"token": token}, auth=(app.client_id, app.plain_secret))


@pytest.fixture
def http(live_server: Any) -> Introspection:
    return Introspection(live_server.url)


def policy(app: Any, introspection: str, resource_uris: list[str] | None = None) -> Any:
    ClientPolicy.objects.update_or_create(
        application=app, defaults={"introspection": introspection, "resource_uris": resource_uris or []}
    )
    return app


@pytest.fixture
def resource_server(aggregates: Any) -> Any:
    """The aggregates API, allowed to learn about tokens meant for it."""
    return policy(aggregates, INTROSPECT_AUDIENCE, [data.AGGREGATES_URI])


@pytest.fixture
def gateway(db: None) -> Any:
    """A gateway trusted with every token."""
    return policy(
        make_app("gateway", exchange=None, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS),
        INTROSPECT_ANY,
    )


@pytest.fixture
def spa(db: None) -> Any:
    """A public client (no secret), holding the permission nonetheless."""
    app = Application.objects.create(
        name="spa",
        client_id="spa",
        client_secret="",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:8000/spa/",
    )
    app.plain_secret = ""
    return policy(app, INTROSPECT_ANY)


def exchanged_for(live_server: Any, portal: Any, user_tokens: dict[str, Any], audience: str) -> str:
    response = requests.post(
        f"{live_server.url}/o/token/",
        data={
            "grant_type": GRANT_TYPE,
            "subject_token": user_tokens["access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": audience,
            "scope": "openid",
        },
        auth=(portal.client_id, portal.plain_secret),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def assert_no_store(response: Any) -> None:
    assert response.headers["Cache-Control"] == "no-store", response.headers
    assert response.headers["Pragma"] == "no-cache", response.headers


def comparable(response: Any) -> tuple[int, bytes, dict[str, str]]:
    """Everything a client sees of a response, but the clock."""
    headers = {name.lower(): value for name, value in response.headers.items() if name.lower() != "date"}
    return response.status_code, response.content, headers


def test_a_resource_server_learns_about_tokens_meant_for_it(
    http, live_server, portal, resource_server, user_tokens, end_user
):
    token = exchanged_for(live_server, portal, user_tokens, data.AGGREGATES_URI)

    response = http.ask(resource_server, token)

    assert response.status_code == 200, response.text
    assert_no_store(response)
    claims = response.json()
    assert claims["active"] is True
    assert claims["aud"] == [data.AGGREGATES_URI]
    assert claims["sub"] == str(end_user.pk)
    assert claims["username"] == end_user.get_username()
    assert claims["client_id"] == portal.client_id
    assert claims["scope"] == "openid"
    assert claims["token_type"] == "Bearer"
    assert claims["iss"] == "http://127.0.0.1:8000/o"
    assert claims.keys() >= ALLOWED_CLAIMS


def test_a_client_learns_about_tokens_naming_its_client_id(http, login, portal, end_user):
    """A login's token names the client it was issued to (RFC 8707: no resource, the client)."""
    policy(portal, INTROSPECT_AUDIENCE)
    token = login(end_user, resources=())["access_token"]
    claims = http.ask(portal, token).json()
    assert claims["active"] is True
    assert claims["aud"] == [portal.client_id]


def test_a_token_meant_for_someone_else_reads_as_an_unknown_token(
    http, live_server, login, portal, resource_server, end_user
):
    """No token scanning (RFC 7662 §4): a login's token for the portal alone, and one exchanged
    for the settings API, answer exactly as a token that never existed."""
    tokens = login(end_user)  # audience: the aggregates and settings APIs, and the portal
    for_settings = exchanged_for(live_server, portal, tokens, data.SETTINGS_URI)
    portal_only = login(end_user, resources=())["access_token"]
    unknown = comparable(http.ask(resource_server, secrets.token_urlsafe(30)))

    assert unknown[0] == 200
    assert unknown[1] == b'{"active": false}'
    assert unknown[2]["cache-control"] == "no-store"
    assert comparable(http.ask(resource_server, portal_only)) == unknown
    assert comparable(http.ask(resource_server, for_settings)) == unknown
    # The same login's token names the aggregates API among others: that one it learns about.
    assert http.ask(resource_server, tokens["access_token"]).json()["active"] is True


def test_an_expired_or_revoked_token_reads_as_an_unknown_token(
    http, live_server, portal, gateway, user_tokens
):
    unknown = comparable(http.ask(gateway, secrets.token_urlsafe(30)))
    assert http.ask(gateway, user_tokens["access_token"]).json()["active"] is True

    AccessToken.objects.update(expires=timezone.now() - datetime.timedelta(seconds=1))
    assert comparable(http.ask(gateway, user_tokens["access_token"])) == unknown

    revoked = requests.post(
        f"{live_server.url}/o/revoke_token/",
        data={"token": user_tokens["refresh_token"]},
        auth=(portal.client_id, portal.plain_secret),
        timeout=30,
    )
    assert revoked.status_code == 200
    assert comparable(http.ask(gateway, user_tokens["access_token"])) == unknown


def test_a_gateway_with_any_learns_about_every_token(http, gateway, user_tokens, end_user):
    claims = http.ask(gateway, user_tokens["access_token"]).json()
    assert claims["active"] is True
    assert claims["sub"] == str(end_user.pk)
    assert claims["aud"] == [data.AGGREGATES_URI, data.SETTINGS_URI, "portal"]


def test_a_client_introspects_with_private_key_jwt(http, gateway, user_tokens):
    key = register_key(gateway, "ES256")
    response = http.post(
        {"token": user_tokens["access_token"], **assertion_form(sign(key, assertion_claims(key.client_id)))}
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True


# Who may not ask: 401 invalid_client, as JSON ------------------------------------------------------


def _bearer(app: Any, scope: str) -> str:
    value = secrets.token_urlsafe(30)
    AccessToken.objects.create(
        token=value,
        application=app,
        scope=scope,
        expires=timezone.now() + datetime.timedelta(hours=1),
    )
    return value


CALLERS = {
    "nobody": lambda w: {},
    "public client by client_id": lambda w: {"data": {"client_id": w.spa.client_id}},
    "public client, empty secret in the body": lambda w: {
        "data": {"client_id": w.spa.client_id, "client_secret": ""}
    },
    "public client, empty secret by Basic": lambda w: {"auth": (w.spa.client_id, "")},
    "bad secret by Basic": lambda w: {"auth": (w.gateway.client_id, "wrong")},
    "bad secret in the body": lambda w: {
        "data": {"client_id": w.gateway.client_id, "client_secret": "wrong"}
    },
    "unknown client": lambda w: {"auth": ("nobody-knows", "secret")},
    "confidential, no policy": lambda w: {"auth": (w.portal_without_policy.client_id, "no-policy-secret")},
    "confidential, introspection not allowed": lambda w: {
        "auth": (w.portal.client_id, w.portal.plain_secret)
    },
    "a client_id that reads as a resource URI": lambda w: {
        "auth": (w.confusable.client_id, w.confusable.plain_secret)
    },
    "garbage client_assertion": lambda w: {"data": assertion_form("not-a-jwt")},
    "assertion signed by a key nobody registered": lambda w: {
        "data": assertion_form(sign(w.unregistered_key, assertion_claims(w.gateway.client_id)))
    },
    "bearer token without the introspection scope": lambda w: {
        "headers": {"Authorization": f"Bearer {_bearer(w.gateway, 'read')}"}
    },
    "bearer token of a client not allowed to introspect": lambda w: {
        "headers": {"Authorization": f"Bearer {_bearer(w.portal, 'introspection')}"}
    },
    "unknown bearer token": lambda w: {"headers": {"Authorization": "Bearer nothing-like-it"}},
}


class World:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


@pytest.fixture
def world(portal, gateway, spa) -> World:
    # Allowed, but its client_id could pass for a resource (registered before the rule existed).
    confusable = policy(
        make_app("confusable", exchange=None, client_id="https://crm.example.com/"), INTROSPECT_ANY
    )
    pair = generate_key_pair("ES256")
    return World(
        portal=portal,
        gateway=gateway,
        spa=spa,
        confusable=confusable,
        portal_without_policy=make_app("no-policy", exchange=None),
        unregistered_key=KeyFile(gateway.client_id, pair.kid, pair.private_pem, "ES256", pair.public_pem),
    )


@pytest.mark.parametrize("caller", list(CALLERS))
def test_only_allowed_confidential_clients_may_introspect(http, world, user_tokens, caller):
    options = CALLERS[caller](world)
    form = {"token": user_tokens["access_token"], **options.pop("data", {})}

    response = http.post(form, **options)

    assert response.status_code == 401, (caller, response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json"
    assert_no_store(response)
    body = response.json()
    assert body["error"] == "invalid_client", body
    assert "active" not in body
    assert "username" not in body
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer " if "bearer" in caller else "Basic "), challenge


def test_a_bearer_token_of_an_allowed_client_may_introspect(
    http, resource_server, live_server, portal, user_tokens, login, end_user
):
    """DOT's resource-server mode (RESOURCE_SERVER_AUTH_TOKEN): the token's client asks."""
    token = exchanged_for(live_server, portal, user_tokens, data.AGGREGATES_URI)
    bearer = {"Authorization": f"Bearer {_bearer(resource_server, 'introspection')}"}

    assert http.post({"token": token}, headers=bearer).json()["aud"] == [data.AGGREGATES_URI]
    portal_only = login(end_user, resources=())["access_token"]
    assert http.post({"token": portal_only}, headers=bearer).json() == {"active": False}


# How the token travels --------------------------------------------------------------------------


def test_a_get_is_refused_with_json_and_no_token_data(http, gateway, user_tokens):
    response = http.session.get(
        http.url,
        params={"token": user_tokens["access_token"]},
        auth=(gateway.client_id, gateway.plain_secret),
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.headers["Content-Type"] == "application/json"
    assert_no_store(response)
    assert response.json()["error"] == "invalid_request"
    assert "active" not in response.json()


@pytest.mark.parametrize(
    "query",
    [{"token": "x"}, {"client_secret": "gateway-secret"}, {"client_id": "gateway"}],
    ids=["token", "client_secret", "client_id"],
)
def test_nothing_in_the_query_string(http, gateway, user_tokens, query):
    """The token and credentials go in the body: a URL ends up in logs (RFC 6749 §2.3.1)."""
    token = user_tokens["access_token"]
    response = http.session.post(
        http.url,
        params={**query, "token": token} if "token" in query else query,
        data={"token": token},
        auth=(gateway.client_id, gateway.plain_secret),
        timeout=30,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert_no_store(response)
    assert response.json()["error"] == "invalid_request"


def test_a_missing_token_is_invalid_request_for_an_allowed_client(http, gateway):
    response = http.post({}, auth=(gateway.client_id, gateway.plain_secret))
    assert response.status_code == 400
    assert_no_store(response)
    assert response.json() == {"error": "invalid_request", "error_description": "Token parameter is missing."}


@pytest.mark.parametrize("token", ["\x00", "a" * 5000, "é"])
def test_odd_tokens_read_as_unknown(http, gateway, token):
    response = http.post({"token": token}, auth=(gateway.client_id, gateway.plain_secret))
    assert response.status_code == 200
    assert response.json() == {"active": False}


# UserInfo: not cached either --------------------------------------------------------------------


def test_userinfo_is_not_cached(live_server, login, end_user):
    url = f"{live_server.url}/o/userinfo/"
    token = login(end_user, resources=())["access_token"]  # no resource: valid at any URL of ours
    answered = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answered.status_code == 200, answered.text
    assert answered.json()["sub"]
    assert_no_store(answered)

    refused = requests.get(url, headers={"Authorization": "Bearer nothing-like-it"}, timeout=30)
    assert refused.status_code == 401
    assert_no_store(refused)


# The example project ---------------------------------------------------------------------------


def test_the_demo_apis_introspect_the_tokens_meant_for_them(live_server):
    """``seed_demo``: each API may introspect, the tokens for its own resource only."""
    from io import StringIO

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from example_project.demo.login import authorization_code_login

    call_command("seed_demo", stdout=StringIO())
    apis = {name: Application.objects.get(client_id=name) for name, _secret in data.APIS}
    for name, secret in data.APIS:
        apis[name].plain_secret = secret
    portal = Application.objects.get(client_id=data.PORTAL_CLIENT_ID)
    portal.plain_secret = data.PORTAL_SECRET
    tokens = authorization_code_login(get_user_model().objects.get(username="end-user"))
    http = Introspection(live_server.url)

    for_aggregates = exchanged_for(live_server, portal, tokens, data.AGGREGATES_URI)

    assert http.ask(apis["aggregates"], for_aggregates).json()["aud"] == [data.AGGREGATES_URI]
    assert http.ask(apis["settings"], for_aggregates).json() == {"active": False}


@pytest.mark.parametrize(
    ("resource_uris", "valid"),
    [
        ([], True),
        (["https://api.example.com/"], True),
        (["https://api.example.com/", "https://other.example.com/v1"], True),
        (["urn:example:api"], False),  # DOT's RFC 8707 rule: a scheme and a host
        (["/relative"], False),
        (["https://api.example.com/#fragment"], False),
        ("https://api.example.com/", False),  # a string, not a list
        ([1], False),
    ],
)
def test_resource_uris_are_absolute_uris(portal, resource_uris, valid):
    from django.core.exceptions import ValidationError

    row = ClientPolicy(application=portal, resource_uris=resource_uris)
    if valid:
        row.clean()
    else:
        with pytest.raises(ValidationError) as raised:
            row.clean()
        assert "resource_uris" in raised.value.message_dict

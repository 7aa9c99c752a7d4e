"""Properties of the token endpoint under fuzzing: whatever a client posts, the answer is JSON and
never a 5xx, and a token is issued only for a request that earns one.

- ``test_any_form``: forms in any grant, built from real material (the customer's and the support
  user's tokens, token types, scopes, URIs) and hostile text, with any client authentication and
  body encoding. A refusal carries no token and writes no token row; an issued token belongs to
  the presented subject, stays within its scope and audience, and names an actor (``act``) only
  when an actor token was presented with impersonation allowed.
- ``test_invalid_exchanges_issue_nothing``: a valid exchange spoiled by mutations that each make it
  invalid is a 4xx with an ``error``, no token and no token row.
- ``test_subject_jwt_headers_and_claims``: the header and claims of the self-signed subject JWT of
  an impersonation by JWT profile. The endpoint accepts it exactly when the pure rules of
  ``signed_jwt`` do (``header_refusal``, the key's alg, ``claims_refusal``) and ``sub`` names the
  customer: those rules are the oracle.
- ``test_client_assertion_headers_and_claims``: the same for the ``private_key_jwt`` client
  assertion; a refused one is ``invalid_client`` (401).

Each example runs in a savepoint rolled back at its end, with the replay cache emptied first:
every example starts from the same tokens, rows and settings, whatever the one before did.

The ``@example``s are the defects these properties found, kept as regression cases: a NUL byte
in a client_id (a database error on PostgreSQL), a ``jti`` with a lone surrogate (an "outage" of
the replay cache), and a subject ``sub`` of ``"01"`` (read as user 1).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.cache import caches
from django.db import router, transaction
from django.http import QueryDict
from hypothesis import event, example, given
from hypothesis import strategies as st
from oauth2_provider.models import get_access_token_model, get_id_token_model

from example_project.demo import data
from token_exchange.client_keys import choose_key
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    CLIENT_KEY_ALGORITHMS,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TYPE,
    KNOWN_TOKEN_TYPES,
    REFRESH_TOKEN_TYPE,
    SUBJECT_DATA_SCOPES,
    USER_ID_TYPE,
)
from token_exchange.grant import MAX_TOKEN_LENGTH
from token_exchange.jwt import jose
from token_exchange.jwt.client_assertion import ASSERTION_TYP, MAX_ASSERTION_LENGTH
from token_exchange.jwt.signed_jwt import claims_refusal, header_refusal
from token_exchange.models import ClientKey, ClientPolicy, ExchangedToken, SecuritySettings
from token_exchange.tokens.jwt import SUBJECT_TYP

from . import proof
from .adversarial import TOKEN_FIELDS, token_rows
from .client_jwt import (
    ISSUER,
    TOKEN_ENDPOINT,
    KeyFile,
    assertion,
    hmac_signed,
    register_key,
    sign,
    sign_any_header,
    subject_claims,
    unsigned,
)
from .conftest import CRM, basic, make_app

pytestmark = [pytest.mark.django_db, pytest.mark.fuzz]

AccessToken = get_access_token_model()
IDToken = get_id_token_model()

# The customer logs in with less than every scope, so that "more than the subject's" exists.
NARROW_SCOPE = "openid profile offline_access read"
EVERY_SCOPE = frozenset(data.LOGIN_SCOPE.split())
# What every login of the fixtures names as audience: its resource indicators and the portal.
LOGIN_AUDIENCE = frozenset({data.AGGREGATES_URI, data.SETTINGS_URI, data.PORTAL_CLIENT_ID})
URLENCODED = "application/x-www-form-urlencoded"
ORDINARY_SERVER_ERROR = "Discrepency found between client identifier"


@contextmanager
def one_example() -> Iterator[None]:
    """Count the example; empty the replay cache; roll back whatever the example writes."""
    proof.count("fuzz examples")
    caches[token_exchange_settings.REPLAY_CACHE].clear()
    using = router.db_for_write(get_access_token_model())
    with transaction.atomic(using=using):
        yield
        transaction.set_rollback(True, using=using)


def assert_json(response: Any) -> dict[str, Any]:
    assert response.status_code < 500, response.content[:500]
    assert response["Content-Type"] == "application/json", response.content[:500]
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    if body.get("error") == "server_error":
        # A 5xx in disguise: the server says it failed, not the client. Only oauthlib's own
        # grants say it, and only when a body client_id names another client than the one
        # authenticated (grant_types/base.py), a client error it labels as the server's.
        assert body.get("error_description") == ORDINARY_SERVER_ERROR, body
        event("400 server_error: oauthlib's client_id discrepancy")
    return body


def assert_nothing_issued(response: Any, before: dict[str, int]) -> dict[str, Any]:
    """A 4xx with an RFC 6749 §5.2 ``error``, no token in the body, no token row written."""
    body = assert_json(response)
    assert 400 <= response.status_code < 500, (response.status_code, body)
    assert isinstance(body.get("error"), str), body
    assert body["error"], body
    assert not set(TOKEN_FIELDS) & body.keys(), body
    assert token_rows() == before
    return body


def checksum(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def peek_claims(token: str) -> dict[str, Any]:
    try:
        return jose.peek(token)[1]
    except jose.JoseError:
        return {}


# The people and clients of the properties, and the material a client could post ---------------


@dataclass(frozen=True)
class Ref:
    """A value known only once the fixtures ran (a token, a user id), named in the examples."""

    name: str

    def __repr__(self) -> str:
        return f"<{self.name}>"


class World:
    """The fixtures' people, clients and material (a plain class: examples print it in one line)."""

    def __init__(self, portal: Any, end_user: Any, support: Any, portal_key: KeyFile) -> None:
        self.portal = portal
        self.end_user = end_user
        self.support = support
        self.portal_key = portal_key
        self.material: dict[str, str] = {}
        # Refresh token value -> (user, scope of its login).
        self.refresh_tokens: dict[str, tuple[Any, frozenset[str]]] = {}

    def __repr__(self) -> str:
        return f"World(end_user={self.end_user.pk}, support={self.support.pk})"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            if value.name == "fresh assertion":
                return assertion(self.portal_key)
            if value.name == "fresh subject jwt":
                return sign(self.portal_key, subject_claims("portal", self.end_user))
            return self.material[value.name]
        return value


@pytest.fixture
def world(portal, crm, aggregates, end_user_in_acme, support, mallory, login) -> World:
    """The customer (a member of ACME, with narrow tokens), support (who may impersonate her),
    mallory, the portal with a key of its own, and a public client and a client without policy."""
    make_app("spa", client_type="public")
    make_app("legacy", exchange=False)
    end_tokens = login(end_user_in_acme, scope=NARROW_SCOPE)
    support_tokens = login(support)
    world = World(portal, end_user_in_acme, support, register_key(portal))
    for who, tokens in (("end_user", end_tokens), ("support", support_tokens)):
        for kind in ("access_token", "id_token", "refresh_token"):
            world.material[f"{who}.{kind}"] = tokens[kind]
    for who, user in (("end_user", end_user_in_acme), ("support", support), ("mallory", mallory)):
        world.material[f"{who}.pk"] = str(user.pk)
    world.material["end_user.pk with a leading zero"] = f"0{end_user_in_acme.pk}"
    world.refresh_tokens = {
        end_tokens["refresh_token"]: (end_user_in_acme, frozenset(NARROW_SCOPE.split())),
        support_tokens["refresh_token"]: (support, EVERY_SCOPE),
    }
    return world


END_ACCESS, END_ID, END_REFRESH = (
    Ref("end_user.access_token"),
    Ref("end_user.id_token"),
    Ref("end_user.refresh_token"),
)
SUPPORT_ACCESS, SUPPORT_ID, SUPPORT_REFRESH = (
    Ref("support.access_token"),
    Ref("support.id_token"),
    Ref("support.refresh_token"),
)
END_PK, SUPPORT_PK, MALLORY_PK = Ref("end_user.pk"), Ref("support.pk"), Ref("mallory.pk")
SUBJECT_JWT, ASSERTION = Ref("fresh subject jwt"), Ref("fresh assertion")
MATERIAL = (
    END_ACCESS,
    END_ID,
    END_REFRESH,
    SUPPORT_ACCESS,
    SUPPORT_ID,
    SUPPORT_REFRESH,
    END_PK,
    SUPPORT_PK,
    MALLORY_PK,
    SUBJECT_JWT,
    ASSERTION,
)
TOKEN_TYPES = (*sorted(KNOWN_TOKEN_TYPES), "urn:ietf:params:oauth:token-type:saml2")
SCOPES = (
    "openid",
    "read",
    "write",
    "openid profile",
    "openid read offline_access",
    data.LOGIN_SCOPE,
    "admin",
)
TARGETS = (data.AGGREGATES_URI, data.SETTINGS_URI, CRM, "portal", "crm", "https://evil.example/", "urn:x")
VOCABULARY = (
    *TOKEN_TYPES,
    *SCOPES,
    *TARGETS,
    GRANT_TYPE,
    CLIENT_ASSERTION_TYPE,
    "portal",
    "portal-secret",
    "spa",
    data.PORTAL_REDIRECT_URI,
)
HOSTILE = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "%",
    "%00",
    "%zz",
    "%%41",
    "+",
    "&=&",
    "x" * (MAX_TOKEN_LENGTH + 1),
    "é",
    "\u202e\ufeff",
    "\U0001f600",
    "\r\n",
    "' OR '1'='1",
    "../../etc/passwd",
    "null",
    "[]",
    '{"a": 1}',
    "a.b.c",
    "eyJhbGciOiJub25lIn0.e30.",
    "0",
    "1",
    "01",
    "-1",
    "99999999999999999999",
)
hostile_text = st.sampled_from(HOSTILE) | st.text(max_size=30)
values = st.sampled_from(MATERIAL) | st.sampled_from(VOCABULARY) | hostile_text
KNOWN_NAMES = (
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "scope",
    "audience",
    "resource",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "refresh_token",
    "code",
    "redirect_uri",
    "code_verifier",
    "device_code",
)
# Random names stay parseable in every encoding (a quote or a newline would cut a multipart name).
names = st.sampled_from(KNOWN_NAMES) | st.text(
    st.characters(exclude_characters='"\r\n', exclude_categories=("Cs",)), min_size=1, max_size=12
)
GRANTS = (
    GRANT_TYPE,
    "refresh_token",
    "authorization_code",
    "client_credentials",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
)
grant_types = st.sampled_from(GRANTS) | hostile_text


# Property 1: any form -------------------------------------------------------------------------


SUBJECTS = (
    (END_ACCESS, ACCESS_TOKEN_TYPE),
    (END_ID, ID_TOKEN_TYPE),
    (SUPPORT_ACCESS, ACCESS_TOKEN_TYPE),
    (END_PK, USER_ID_TYPE),
    (MALLORY_PK, USER_ID_TYPE),
    (SUBJECT_JWT, JWT_TYPE),
)
ACTORS = ((SUPPORT_ACCESS, ACCESS_TOKEN_TYPE), (SUPPORT_ID, ID_TOKEN_TYPE), (END_ACCESS, ACCESS_TOKEN_TYPE))


def often(common: Any, anything: Any) -> Any:
    """Half the time ``common``, else anything (which may be ``common`` too)."""
    return st.one_of(common, anything)


def maybe(strategy: Any) -> Any:
    return st.one_of(st.just(()), strategy.map(lambda pair: (pair,)))


@st.composite
def exchange_forms(draw: Any) -> list[tuple[str, Any]]:
    """Near a valid token exchange: a real subject, perhaps an actor, scope and target."""
    subject, subject_type = draw(st.sampled_from(SUBJECTS))
    form: list[tuple[str, Any]] = [
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
    ]
    if draw(st.booleans()):
        actor, actor_type = draw(st.sampled_from(ACTORS))
        form += [("actor_token", actor), ("actor_token_type", actor_type)]
    form += draw(maybe(st.tuples(st.just("scope"), st.sampled_from(SCOPES))))
    target = st.tuples(st.sampled_from(["audience", "resource"]), st.sampled_from(TARGETS))
    form += draw(often(st.just([]), st.lists(target, max_size=2)))
    requested = st.sampled_from([ACCESS_TOKEN_TYPE, JWT_TYPE, ID_TOKEN_TYPE]) | st.sampled_from(TOKEN_TYPES)
    form += draw(often(st.just(()), maybe(st.tuples(st.just("requested_token_type"), requested))))
    return form


refresh_forms = st.builds(
    lambda token, scope: [("grant_type", "refresh_token"), ("refresh_token", token), *scope],
    st.sampled_from([END_REFRESH, SUPPORT_REFRESH]),
    maybe(st.tuples(st.just("scope"), st.sampled_from(SCOPES))),
)
random_forms = st.lists(st.tuples(st.just("grant_type"), grant_types), min_size=0, max_size=2)
pairs = st.tuples(names, values)

AUTHENTICATIONS = (
    "basic",
    "wrong basic",
    "secret in body",
    "none",
    "basic and body",
    "assertion",
    "crm",
    "aggregates",
    "hostile basic",
    "hostile header",
)
# Authorization headers DOT must take apart without failing.
HOSTILE_HEADERS = (
    "Basic",
    "Basic ",
    "Basic !!!",
    "Basic " + base64.b64encode(b"no colon").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
    "Basic " + base64.b64encode(b"portal:portal-secret:extra").decode(),
    "Basic " + base64.b64encode(b"portal%zz:portal-secret").decode(),
    "basic " + base64.b64encode(b"portal:portal-secret").decode(),
    "Bearer x",
    "Basic cG9ydGFsOnBvcnRhbC1zZWNyZXQ",  # unpadded
)
ENCODINGS = ("urlencoded", "multipart", "bad percent-encoding", "json")
CORRUPTIONS = ("%", "%z", "%zz", "%F", "%FF%FE", "%00", "&", "=", ";", "+", "%C3%28", "\xff", "&&==")


@dataclass(frozen=True)
class AnyRequest:
    form: list[tuple[str, Any]]
    query: list[tuple[str, Any]]
    authentication: str
    encoding: str
    corruption: tuple[int, str]
    impersonation_allowed: bool
    hostile_credentials: tuple[str, str]
    hostile_header: str


any_requests = st.builds(
    AnyRequest,
    form=st.tuples(
        st.one_of(exchange_forms(), exchange_forms(), refresh_forms, random_forms),
        often(st.just([]), st.lists(pairs, max_size=5)),
    ).map(lambda parts: [*parts[0], *parts[1]]),
    query=often(st.just([]), st.lists(pairs, max_size=2)),
    authentication=often(st.just("basic"), st.sampled_from(AUTHENTICATIONS)),
    encoding=often(st.sampled_from(ENCODINGS[:2]), st.sampled_from(ENCODINGS)),
    corruption=st.tuples(st.integers(0, 10_000), st.sampled_from(CORRUPTIONS)),
    impersonation_allowed=st.booleans(),
    hostile_credentials=st.tuples(hostile_text, hostile_text),
    hostile_header=st.sampled_from(HOSTILE_HEADERS),
)


def post_any(http: Any, world: World, request: AnyRequest) -> tuple[Any, list[tuple[str, str]]]:
    """Send the request; return the response and the body parameters the server could read."""
    form = [(name, world.resolve(value)) for name, value in request.form]
    query = [(name, world.resolve(value)) for name, value in request.query]
    headers: dict[str, str] = {}
    auth = request.authentication
    if auth in ("basic", "basic and body"):
        headers["HTTP_AUTHORIZATION"] = basic("portal", "portal-secret")
    if auth == "wrong basic":
        headers["HTTP_AUTHORIZATION"] = basic("portal", "portal-secrets")
    if auth in ("crm", "aggregates"):
        headers["HTTP_AUTHORIZATION"] = basic(auth, f"{auth}-secret")
    if auth == "hostile basic":
        headers["HTTP_AUTHORIZATION"] = basic(*request.hostile_credentials)
    if auth == "hostile header":
        headers["HTTP_AUTHORIZATION"] = request.hostile_header
    if auth in ("secret in body", "basic and body"):
        form += [("client_id", "portal"), ("client_secret", "portal-secret")]
    if auth == "assertion":
        form += [
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion(world.portal_key)),
        ]
    path = "/o/token/" + (f"?{urlencode(query)}" if query else "")

    if request.encoding == "multipart":
        lists: dict[str, list[str]] = {}
        for name, value in form:
            lists.setdefault(name, []).append(value)
        return http.post(path, lists, **headers), form
    if request.encoding == "json":
        return http.post(path, json.dumps(form), content_type="application/json", **headers), []
    raw = urlencode(form).encode()
    if request.encoding == "bad percent-encoding":
        position, garbage = request.corruption
        position %= len(raw) + 1
        raw = raw[:position] + garbage.encode("latin-1") + raw[position:]
    presented = [(name, value) for name, items in QueryDict(raw).lists() for value in items]
    return http.post(path, raw, content_type=URLENCODED, **headers), presented


def single_value(presented: list[tuple[str, str]], name: str) -> str | None:
    found = [value for key, value in presented if key == name]
    assert len(found) <= 1, f"an exchange with {len(found)} {name} parameters was accepted"
    return found[0] if found and found[0] else None


def describe(world: World, token: str, token_type: str) -> tuple[Any, frozenset[str]]:
    """Whom a presented token names and the scope it authorizes, from the rows it refers to."""
    if token_type == ACCESS_TOKEN_TYPE:
        row = AccessToken.objects.get(token_checksum=checksum(token))
        return row.user, frozenset(row.scope.split())
    if token_type == ID_TOKEN_TYPE:
        row = IDToken.objects.get(jti=peek_claims(token)["jti"])
        return row.user, frozenset(row.scope.split()) & SUBJECT_DATA_SCOPES
    if token_type == USER_ID_TYPE:
        return type(world.end_user).objects.get(pk=int(token)), frozenset()
    assert token_type == JWT_TYPE, token_type
    return type(world.end_user).objects.get(pk=int(peek_claims(token)["sub"])), frozenset()


def issued(body: dict[str, Any]) -> tuple[Any, frozenset[str], ExchangedToken | None]:
    """The user, scope and exchange record of the token in a 200 response, from its row."""
    token = body["access_token"]
    if body.get("issued_token_type") == ID_TOKEN_TYPE:
        row = IDToken.objects.get(jti=peek_claims(token)["jti"])
        record = ExchangedToken.objects.filter(id_token=row).first()
    else:
        row = AccessToken.objects.get(token_checksum=checksum(token))
        record = ExchangedToken.objects.filter(access_token=row).first()
    scope = frozenset(row.scope.split())
    assert set(body.get("scope", row.scope).split()) == scope
    return row.user, scope, record


def assert_within_what_was_presented(
    world: World, request: AnyRequest, body: dict[str, Any], presented: list[tuple[str, str]]
) -> None:
    user, scope, record = issued(body)
    act = record.act if record is not None else None
    if "issued_token_type" in body:
        event("200: token exchange")
        subject_type = single_value(presented, "subject_token_type")
        subject_token = single_value(presented, "subject_token")
        assert subject_type is not None
        assert subject_token is not None
        subject, allowed = describe(world, subject_token, subject_type)
        actor_token = single_value(presented, "actor_token")
        if actor_token is None:
            assert act is None, act
        else:
            assert request.impersonation_allowed, "an actor token was accepted with impersonation off"
            actor_type = single_value(presented, "actor_token_type")
            assert actor_type is not None
            actor, actor_scope = describe(world, actor_token, actor_type)
            assert act == {"iss": ISSUER, "sub": str(actor.pk)}, act
            if subject_type != ACCESS_TOKEN_TYPE:
                allowed |= SUBJECT_DATA_SCOPES | actor_scope
        assert user == subject
        assert scope <= allowed, (scope, allowed)
        assert record is not None
        assert set(record.audience) <= LOGIN_AUDIENCE, record.audience
    elif user is None:
        event("200: client_credentials")
        assert request.authentication == "aggregates"
        assert act is None
    else:
        event("200: refresh_token")
        refresh_values = [value for name, value in presented if name == "refresh_token"]
        owners = [world.refresh_tokens[value] for value in refresh_values if value in world.refresh_tokens]
        assert any(user == owner and scope <= login_scope for owner, login_scope in owners), owners
        assert act is None


def nul_client(authentication: str, form: list[tuple[str, Any]]) -> AnyRequest:
    """A client_id with a NUL byte, which PostgreSQL cannot even compare with a column."""
    return AnyRequest(
        form=[
            ("grant_type", GRANT_TYPE),
            ("subject_token", END_ACCESS),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            *form,
        ],
        query=[],
        authentication=authentication,
        encoding="urlencoded",
        corruption=(0, "%"),
        impersonation_allowed=False,
        hostile_credentials=("port\x00al", "portal-secret"),
        hostile_header="Basic",
    )


def check_any_request(token_endpoint: Any, world: World, request: AnyRequest) -> None:
    with one_example():
        SecuritySettings.objects.filter(pk=SecuritySettings.load().pk).update(
            allow_impersonation=request.impersonation_allowed
        )
        before = token_rows()
        response, presented = post_any(token_endpoint.http, world, request)
        body = assert_json(response)
        if response.status_code == 200:
            assert_within_what_was_presented(world, request, body, presented)
        else:
            event(f"{response.status_code} {body.get('error')}")
            assert_nothing_issued(response, before)


@example(request=nul_client("hostile basic", []))
@example(request=nul_client("none", [("client_id", "port\x00al"), ("client_secret", "portal-secret")]))
@example(request=nul_client("none", [("client_id", "port\x00al")]))
@given(request=any_requests)
def test_any_form(token_endpoint, world, request):
    check_any_request(token_endpoint, world, request)


# Property 2: a valid exchange, spoiled ---------------------------------------------------------


@dataclass
class Exchange:
    """A token exchange request as the mutations see it."""

    form: list[tuple[str, str]]
    auth: tuple[str, str] | None
    query: list[tuple[str, str]] = field(default_factory=list)

    def set(self, name: str, value: str | None) -> None:
        self.form = [(key, item) for key, item in self.form if key != name]
        if value is not None:
            self.form.append((name, value))

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.form if key == name), None)


def valid_exchange(world: World) -> Exchange:
    return Exchange(
        form=[
            ("grant_type", GRANT_TYPE),
            ("subject_token", world.material["end_user.access_token"]),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ],
        auth=("portal", "portal-secret"),
    )


def post_exchange(http: Any, exchange: Exchange) -> Any:
    headers = {"HTTP_AUTHORIZATION": basic(*exchange.auth)} if exchange.auth else {}
    path = "/o/token/" + (f"?{urlencode(exchange.query)}" if exchange.query else "")
    return http.post(path, urlencode(exchange.form), content_type=URLENCODED, **headers)


# RFC 6749 §5.2 and RFC 8707 §2 (invalid_target): what a refused token request may say.
TOKEN_ENDPOINT_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_target",
    }
)


def test_the_valid_exchange_the_mutations_start_from(token_endpoint, world):
    response = post_exchange(token_endpoint.http, valid_exchange(world))
    assert response.status_code == 200, response.content
    assert set(response.json()["scope"].split()) == set(NARROW_SCOPE.split())


Mutation = Callable[[World, Exchange], None]


def setting(*parameters: tuple[str, Any]) -> Mutation:
    """Set form parameters to a value (a literal or a ``Ref``), or remove them (``None``)."""

    def mutate(world: World, exchange: Exchange) -> None:
        for name, value in parameters:
            exchange.set(name, world.resolve(value))

    return mutate


def adding(*parameters: tuple[str, Any], to_query: bool = False) -> Mutation:
    def mutate(world: World, exchange: Exchange) -> None:
        resolved = [(name, world.resolve(value)) for name, value in parameters]
        (exchange.query if to_query else exchange.form).extend(resolved)

    return mutate


def repeating(name: str) -> Mutation:
    def mutate(world: World, exchange: Exchange) -> None:
        exchange.form += [(name, exchange.get(name) or "openid")] * 2

    return mutate


def spoiling(spoil: Callable[[str], str]) -> Mutation:
    def mutate(world: World, exchange: Exchange) -> None:
        exchange.set("subject_token", spoil(exchange.get("subject_token") or "x"))

    return mutate


def authenticating(auth: tuple[str, str] | None, *parameters: tuple[str, str]) -> Mutation:
    def mutate(world: World, exchange: Exchange) -> None:
        exchange.auth = auth
        exchange.form += parameters

    return mutate


def updating(rows: Callable[[World], Any], **fields: Any) -> Mutation:
    """Change rows the request depends on (rolled back with the example); no fields: delete them."""

    def mutate(world: World, exchange: Exchange) -> None:
        if fields:
            rows(world).update(**fields)
        else:
            rows(world).delete()

    return mutate


def subject_row(world: World) -> Any:
    return AccessToken.objects.filter(token_checksum=checksum(world.material["end_user.access_token"]))


def customer(world: World) -> Any:
    return type(world.end_user).objects.filter(pk=world.end_user.pk)


def portal_policy(world: World) -> Any:
    return ClientPolicy.objects.filter(application=world.portal)


def security_settings(world: World) -> Any:
    return SecuritySettings.objects.filter(pk=SecuritySettings.load().pk)


LONG_AGO = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)

# Each slot is one part of the request. Each mutation alone makes the request invalid, and no
# mutation of another slot makes up for it: no two slots set the same parameter, except the
# scope of "id token without openid", which every scope mutation keeps invalid.
MUTATIONS: dict[str, dict[str, Mutation]] = {
    "subject": {
        "truncated": spoiling(lambda token: token[:-1]),
        "case changed": spoiling(str.swapcase),
        "one character more": spoiling(lambda token: token + "A"),
        "oversized": spoiling(lambda token: token * (MAX_TOKEN_LENGTH // len(token) + 1)),
        "garbage": setting(("subject_token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")),
        "refresh token as access token": setting(("subject_token", END_REFRESH)),
        "id token as access token": setting(("subject_token", END_ID)),
        "access token as id token": setting(("subject_token_type", ID_TOKEN_TYPE)),
        "refresh token": setting(("subject_token", END_REFRESH), ("subject_token_type", REFRESH_TOKEN_TYPE)),
        "jwt type without actor": setting(("subject_token_type", JWT_TYPE)),
        "user id without actor": setting(("subject_token", END_PK), ("subject_token_type", USER_ID_TYPE)),
        "unknown type": setting(("subject_token_type", "urn:x:saml")),
        "type missing": setting(("subject_token_type", None)),
        "token missing": setting(("subject_token", None)),
        "token empty": setting(("subject_token", "")),
        "expired": updating(subject_row, expires=LONG_AGO),
        "revoked": updating(subject_row),
        "customer deactivated": updating(customer, is_active=False),
    },
    "requested": {
        "unknown": setting(("requested_token_type", "urn:x:saml")),
        "refresh token": setting(("requested_token_type", REFRESH_TOKEN_TYPE)),
        "id token without openid": setting(("requested_token_type", ID_TOKEN_TYPE), ("scope", "read")),
    },
    "scope": {
        "write, beyond the subject's": setting(("scope", "openid write")),
        "email, beyond the subject's": setting(("scope", "email")),
        "unknown": setting(("scope", "read admin")),
    },
    "target": {
        "foreign audience": setting(("audience", "https://evil.example/")),
        "another client as audience": setting(("audience", CRM)),
        "one audience too many": adding(("audience", data.AGGREGATES_URI), ("audience", "crm")),
        "empty audience": setting(("audience", "")),
        "foreign resource": setting(("resource", "https://evil.example/")),
        "resource not a URI": setting(("resource", "not a uri")),
        "resource with a fragment": setting(("resource", data.AGGREGATES_URI + "#x")),
    },
    "client": {
        "wrong secret": authenticating(("portal", "wrong")),
        "no authentication": authenticating(None),
        "unknown client": authenticating(("nobody", "portal-secret")),
        "another client": authenticating(("crm", "crm-secret")),
        "client without policy": authenticating(("legacy", "legacy-secret")),
        "public client": authenticating(None, ("client_id", "spa")),
        "assertion type alone": authenticating(None, ("client_assertion_type", CLIENT_ASSERTION_TYPE)),
        "policy disabled": updating(portal_policy, token_exchange_enabled=False),
    },
    "repeated": {
        name: repeating(name)
        for name in ("grant_type", "subject_token", "subject_token_type", "scope", "requested_token_type")
    },
    "query": {
        "subject token in the query": adding(("subject_token", END_ACCESS), to_query=True),
        "client secret in the query": adding(("client_secret", "portal-secret"), to_query=True),
        "actor token in the query": adding(("actor_token", SUPPORT_ACCESS), to_query=True),
    },
    "grant": {
        grant: setting(("grant_type", grant))
        for grant in ("refresh_token", "authorization_code", "client_credentials", "password", "", "urn:x")
    },
    "actor": {
        "actor token without type": setting(("actor_token", SUPPORT_ACCESS)),
        "actor type without token": setting(("actor_token_type", ACCESS_TOKEN_TYPE)),
        "impersonation disabled": setting(
            ("actor_token", SUPPORT_ACCESS), ("actor_token_type", ACCESS_TOKEN_TYPE)
        ),
    },
    "instance": {
        "token exchange switched off": updating(security_settings, token_exchange_enabled=False),
    },
}


@st.composite
def mutations(draw: Any) -> list[tuple[str, str]]:
    """Mostly one mutation, so that every check is reached on its own; at most one per slot."""
    chosen: dict[str, str] = {}
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        slot = draw(st.sampled_from(sorted(MUTATIONS)))
        chosen[slot] = draw(st.sampled_from(sorted(MUTATIONS[slot])))
    return sorted(chosen.items())


@given(chosen=mutations())
def test_invalid_exchanges_issue_nothing(token_endpoint, world, chosen):
    with one_example():
        exchange = valid_exchange(world)
        for slot, label in chosen:
            MUTATIONS[slot][label](world, exchange)
            event(f"{slot}: {label}")
        before = token_rows()
        response = post_exchange(token_endpoint.http, exchange)
        body = assert_nothing_issued(response, before)
        assert body["error"] in TOKEN_ENDPOINT_ERRORS, body
        event(f"{response.status_code} {body['error']}")


# Properties 3 and 4: headers and claims of client-signed JWTs, against the pure rules ------------


@dataclass(frozen=True)
class At:
    """A time ``offset`` seconds from now, resolved when the JWT is signed."""

    offset: float

    def __repr__(self) -> str:
        return f"now{self.offset:+}"


@dataclass(frozen=True)
class Fresh:
    """A new ``jti`` (uuid4), resolved when the JWT is signed."""

    def __repr__(self) -> str:
        return "fresh"


class Absent:
    """A header or claim left out."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = Absent()
NONE_ALGS = ("none", "None", "NONE", "nOnE", "")
HMAC_ALGS = ("HS256", "HS384", "HS512")
# Lone surrogates too: JSON escapes them (\ud800), and no database can store one.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([10**400, -(10**400), 1e308, -0.0, float("inf"), float("-inf"), float("nan")])
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
)
times = st.one_of(
    st.integers(-5000, 5000).map(At),
    st.floats(-5000, 5000).map(At),
    st.sampled_from([At(-61), At(-59), At(59), At(61), At(3600), At(3601)]),
)


def jwt_variations(*, subs: Any, audiences: Any, typs: Any) -> dict[str, Any]:
    """What one header or claim may become: anything from valid to hostile."""
    return {
        "header.alg": st.sampled_from(CLIENT_KEY_ALGORITHMS + NONE_ALGS + HMAC_ALGS)
        | st.just(ABSENT)
        | json_values,
        "header.kid": st.sampled_from(
            [ABSENT, "real", "", "unknown", "../../etc/passwd", "' OR '1'='1", "k" * 3000, 7, True, ["real"]]
        )
        | json_values,
        "header.typ": typs
        | st.sampled_from(["at+jwt", "id_token+jwt", "jwt ", "application/", ABSENT])
        | json_values,
        "header.crit": st.sampled_from([[], ["exp"], ["b64"], "exp"]),
        "header.jku": st.just("https://evil.example/jwks.json"),
        "header.jwk": st.just({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
        "header.x5u": st.just("https://evil.example/cert.pem"),
        "header.x5c": st.just(["MIIB"]),
        "header.cty": st.just("JWT") | json_values,
        # True only: with false (RFC 7797) the payload is signed unencoded, which these helpers don't.
        "header.b64": st.just(True),
        "header.zip": st.just("DEF"),
        "header.extra": json_values,
        "claims.iss": st.sampled_from(["portal", "crm", "Portal", "portal ", "", ABSENT]) | json_values,
        "claims.sub": subs | st.just(ABSENT) | json_values,
        "claims.aud": audiences
        | st.lists(
            st.sampled_from([ISSUER, TOKEN_ENDPOINT, ISSUER + "/", "https://evil.example/"]), max_size=3
        )
        | st.just(ABSENT)
        | json_values,
        "claims.iat": times | st.just(ABSENT) | json_values,
        "claims.exp": times | st.just(ABSENT) | json_values,
        "claims.nbf": times | json_values,
        "claims.jti": st.just(Fresh())
        | any_text
        | st.sampled_from(["j" * 255, "j" * 256, "\x00", "\ud800", "a\ud800"])
        | json_values,
        "claims.extra": json_values,
    }


@st.composite
def jwt_parts(draw: Any, base_header: Any, base_claims: Any, variations: dict[str, Any]) -> tuple[dict, dict]:
    """A valid header and claims, then up to four of them changed into anything."""
    parts = {"header": draw(base_header), "claims": draw(base_claims)}
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3, 4]))):
        name = draw(st.sampled_from(sorted(variations)))
        event(f"varied {name}")
        part, key = name.split(".")
        parts[part][key] = draw(variations[name])
    return parts["header"], parts["claims"]


def valid_header(key_algorithm: str, typs: Any) -> Any:
    return st.fixed_dictionaries(
        {
            "alg": st.just(key_algorithm),
            "kid": st.sampled_from(["real", ABSENT]),
            "typ": typs | st.just(ABSENT),
        }
    )


def valid_claims(*, sub: Any, audiences: Any) -> Any:
    return st.fixed_dictionaries(
        {
            "iss": st.just("portal"),
            "sub": sub,
            "aud": audiences,
            "iat": st.integers(-300, 30).map(At),
            "exp": st.integers(60, 600).map(At),
            "nbf": st.sampled_from([ABSENT, At(-10), At(0)]),
            "jti": st.just(Fresh()),
        }
    )


def good_parts(alg: str, sub: Any, **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid header and claims, with ``changes`` (``header_typ=...``, ``claims_jti=...``)."""
    parts = {
        "header": {"alg": alg, "kid": "real"},
        "claims": {"iss": "portal", "sub": sub, "aud": ISSUER, "iat": At(0), "exp": At(300), "jti": Fresh()},
    }
    for name, value in changes.items():
        part, key = name.split("_", 1)
        parts[part][key] = value
    return parts["header"], parts["claims"]


def resolve_claims(value: Any, now: float, names: dict[str, str]) -> Any:
    if isinstance(value, At):
        return now + value.offset
    if isinstance(value, Fresh):
        return uuid.uuid4().hex
    if isinstance(value, Ref):
        return names[value.name]
    if isinstance(value, dict):
        return {key: resolve_claims(item, now, names) for key, item in value.items() if item is not ABSENT}
    return value


def signed(key_file: KeyFile, header: dict[str, Any], claims: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The JWT a client (or an attacker) would send with this header, and the header as sent.

    Signed by the client's key when ``alg`` is one a key may have (under the key's own algorithm,
    whatever ``alg`` says); HMAC-signed with the public key for HS*; else not signed at all.
    """
    header = {
        name: key_file.kid if (name, value) == ("kid", "real") else value for name, value in header.items()
    }
    header = {name: value for name, value in header.items() if value is not ABSENT}
    alg = header.get("alg")
    if isinstance(alg, str) and alg in HMAC_ALGS:
        return hmac_signed(header, claims, key_file.public_key.encode()), header
    if isinstance(alg, str) and alg in CLIENT_KEY_ALGORITHMS:
        return sign_any_header(key_file, header, claims), header
    if alg in NONE_ALGS:
        return unsigned(header, claims), header  # RFC 7519 §6.1: an empty signature
    return unsigned(header, claims, signature=b"\x01" * 64), header


def accepted_by_the_rules(
    header: dict[str, Any],
    claims: dict[str, Any],
    *,
    key: Any,
    allowed_typ: frozenset[str],
    client_id: str,
    audiences: set[str],
    now: float,
) -> bool:
    """The oracle: the pure rules of ``signed_jwt`` and the choice of key, at time ``now``."""
    return (
        header_refusal(header, allowed_typ=allowed_typ) is None
        and choose_key([key], kid=header.get("kid")) is key
        and header["alg"] == key.algorithm
        and claims_refusal(
            claims,
            client_id=client_id,
            audiences=audiences,
            now=now,
            leeway=token_exchange_settings.JWT_LEEWAY_SECONDS,
        )
        is None
    )


def expected_outcome(started: float, finished: float, decide: Callable[[float], bool]) -> bool | None:
    """The oracle's verdict for the whole request, or None if it changed while the request ran
    (a time right at a boundary): then either answer is right."""
    first, last = decide(started - 1), decide(finished + 1)
    return first if first == last else None


def assert_matches_the_oracle(
    response: Any, expected: bool | None, before: dict[str, int], refusal: tuple[int, str], *context: Any
) -> dict[str, Any]:
    body = assert_json(response)
    event(
        "accepted" if response.status_code == 200 else f"refused: {response.status_code} {body.get('error')}"
    )
    if expected is None:
        event("at a time boundary: either answer")
    elif expected:
        assert response.status_code == 200, (body, *context)
    else:
        assert_nothing_issued(response, before)
        assert (response.status_code, body["error"]) == refusal, (body, *context)
    return body


SUBJECT_TYPS = st.sampled_from(["JWT", "jwt", "application/jwt", "APPLICATION/JWT"])
SUBJECT_SUBS = st.sampled_from(
    [
        Ref("end_user.pk"),
        Ref("end_user.pk with a leading zero"),
        Ref("support.pk"),
        Ref("mallory.pk"),
        "portal",
        "",
        " 1",
        "1.0",
        "\x00",
        "\ud800",
        "9" * 25,
    ]
)


class Signing:
    """A client's one usable key: the ``ClientKey`` row and the key file that signs with it."""

    def __init__(self, key_file: KeyFile, row: ClientKey) -> None:
        self.key_file = key_file
        self.row = row

    def __repr__(self) -> str:
        return f"Signing({self.row.algorithm})"


@pytest.fixture
def subject_key(world, impersonation_allowed) -> Signing:
    """The portal's RSA key, with impersonation allowed."""
    return Signing(world.portal_key, ClientKey.objects.get(application=world.portal))


def check_subject_jwt(token_endpoint: Any, world: World, subject_key: Signing, parts: Any) -> None:
    with one_example():
        header, claim_values = parts
        started = time.time()
        claims_sent = resolve_claims(claim_values, started, world.material)
        token, header_sent = signed(subject_key.key_file, header, claims_sent)
        before = token_rows()
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": token,
            "subject_token_type": JWT_TYPE,
            "actor_token": world.material["support.access_token"],
            "actor_token_type": ACCESS_TOKEN_TYPE,
        }
        response = token_endpoint.http.post(
            "/o/token/",
            urlencode(form),
            content_type=URLENCODED,
            HTTP_AUTHORIZATION=basic("portal", "portal-secret"),
        )
        finished = time.time()

        def decide(now: float) -> bool:
            return (
                len(token) <= MAX_TOKEN_LENGTH
                and accepted_by_the_rules(
                    header_sent,
                    claims_sent,
                    key=subject_key.row,
                    allowed_typ=SUBJECT_TYP,
                    client_id="portal",
                    audiences={ISSUER},
                    now=now,
                )
                # The customer, in the one spelling of her id; support may not act for mallory
                # nor for themselves.
                and claims_sent.get("sub") == str(world.end_user.pk)
            )

        expected = expected_outcome(started, finished, decide)
        body = assert_matches_the_oracle(
            response, expected, before, (400, "invalid_request"), header_sent, claims_sent
        )
        if response.status_code == 200:
            user, _scope, record = issued(body)
            assert user == world.end_user
            assert record is not None
            assert record.act == {"iss": ISSUER, "sub": str(world.support.pk)}


subject_jwts = jwt_parts(
    valid_header("RS256", SUBJECT_TYPS),
    valid_claims(sub=st.just(END_PK), audiences=st.just(ISSUER)),
    jwt_variations(subs=SUBJECT_SUBS, audiences=st.just(ISSUER), typs=SUBJECT_TYPS),
)
LEADING_ZERO = Ref("end_user.pk with a leading zero")


@example(parts=good_parts("RS256", END_PK))
@example(parts=good_parts("RS256", END_PK, claims_jti="\ud800"))
@example(parts=good_parts("RS256", LEADING_ZERO))
@given(parts=subject_jwts)
def test_subject_jwt_headers_and_claims(token_endpoint, world, subject_key, parts):
    check_subject_jwt(token_endpoint, world, subject_key, parts)


@pytest.fixture
def assertion_key(world) -> Signing:
    """An EC key for the portal's assertions, its only one (the subject JWTs use RSA)."""
    ClientKey.objects.filter(application=world.portal).delete()
    key_file = register_key(world.portal, "ES256")
    return Signing(key_file, ClientKey.objects.get(application=world.portal))


ASSERTION_TYPS = st.sampled_from(["JWT", "jwt", "application/jwt", "client-authentication+jwt"])
ASSERTION_AUDIENCES = st.sampled_from([ISSUER, TOKEN_ENDPOINT, [ISSUER], [ISSUER, TOKEN_ENDPOINT]])


client_assertions = jwt_parts(
    valid_header("ES256", ASSERTION_TYPS),
    valid_claims(sub=st.just("portal"), audiences=ASSERTION_AUDIENCES),
    jwt_variations(
        subs=st.sampled_from(["portal", "crm", ""]), audiences=ASSERTION_AUDIENCES, typs=ASSERTION_TYPS
    ),
)
client_ids = st.sampled_from([ABSENT, ABSENT, "portal", "crm", ""])


@example(parts=good_parts("ES256", "portal"), client_id=ABSENT)
@example(parts=good_parts("ES256", "portal", claims_jti="\ud800"), client_id=ABSENT)
@given(parts=client_assertions, client_id=client_ids)
def test_client_assertion_headers_and_claims(token_endpoint, world, assertion_key, parts, client_id):
    check_client_assertion(token_endpoint, world, assertion_key, parts, client_id)


def check_client_assertion(
    token_endpoint: Any, world: World, assertion_key: Signing, parts: Any, client_id: Any
) -> None:
    with one_example():
        header, claim_values = parts
        started = time.time()
        claims_sent = resolve_claims(claim_values, started, world.material)
        token, header_sent = signed(assertion_key.key_file, header, claims_sent)
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": world.material["end_user.access_token"],
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": token,
        }
        if client_id is not ABSENT:
            form["client_id"] = client_id
        before = token_rows()
        response = token_endpoint.http.post("/o/token/", urlencode(form), content_type=URLENCODED)
        finished = time.time()

        def decide(now: float) -> bool:
            return (
                len(token) <= MAX_ASSERTION_LENGTH
                # client_assertion.verify: iss names the client, sub = iss, and so does a client_id.
                and claims_sent.get("iss") == "portal"
                and claims_sent.get("sub") == "portal"
                and client_id in (ABSENT, "portal")
                and accepted_by_the_rules(
                    header_sent,
                    claims_sent,
                    key=assertion_key.row,
                    allowed_typ=ASSERTION_TYP,
                    client_id="portal",
                    audiences={ISSUER, TOKEN_ENDPOINT},
                    now=now,
                )
            )

        expected = expected_outcome(started, finished, decide)
        body = assert_matches_the_oracle(
            response, expected, before, (401, "invalid_client"), header_sent, claims_sent
        )
        if response.status_code == 200:
            user, _scope, record = issued(body)
            assert user == world.end_user
            assert record is not None
            assert record.act is None

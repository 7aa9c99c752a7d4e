"""The benchmark's clients, people and requests: what a resource server and a support tool send.

One confidential client (``bench``) authenticates with ``client_secret_basic`` in every case but
the private_key_jwt one, its secret hashed by the example project's ``CLIENT_SECRET_HASHER``. A
second client (``bench-pbkdf2``) is the same with its secret hashed by Django's default PBKDF2:
the figure private_key_jwt is compared with.
"""

from __future__ import annotations

import base64
import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.utils import timezone
from jwcrypto import jwk
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_access_token_model, get_application_model

from token_exchange.client_keys import generate_key_pair
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    GRANT_TYPE,
    JWT_TYPE,
    USER_ID_TYPE,
)
from token_exchange.jwt import jose
from token_exchange.models import ClientKey, ClientPolicy, ImpersonatorGrant, SecuritySettings

ISSUER = "http://127.0.0.1:8000/o"
TOKEN_PATH = "/o/token/"
LOGIN_SCOPE = "openid profile email read write"


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]  # WSGI environ keys (HTTP_AUTHORIZATION)


@dataclass
class Case:
    """One kind of token request; ``make`` builds the next one (outside the timed part)."""

    name: str
    title: str
    make: Callable[[], Request]
    check: Callable[[dict[str, Any]], None]  # raises if the response is not what the case issues
    rounds_divisor: int = 1  # run once every this many rounds (the PBKDF2 reference is slow)


def _basic(client_id: str, secret: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {credentials}"}


def _form(**values: str) -> bytes:
    return urlencode(values).encode()


def _client(client_id: str, secret: str) -> Any:
    """A confidential client; DOT hashes ``secret`` with CLIENT_SECRET_HASHER unless it is a hash."""
    Application = get_application_model()
    app = Application.objects.create(
        name=client_id,
        client_id=client_id,
        client_secret=secret,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        algorithm=Application.RS256_ALGORITHM,
    )
    ClientPolicy.objects.create(application=app, token_exchange_enabled=True)
    return app


def _access_token(user: Any, app: Any, scope: str) -> str:
    token = uuid.uuid4().hex + uuid.uuid4().hex
    get_access_token_model().objects.create(
        user=user,
        application=app,
        token=token,
        scope=scope,
        expires=timezone.now() + datetime.timedelta(days=1),
    )
    return token


def _has(
    *names: str, token_type: str = ACCESS_TOKEN_TYPE, act: bool = False
) -> Callable[[dict[str, Any]], None]:
    def check(body: dict[str, Any]) -> None:
        missing = [name for name in names if name not in body]
        if missing or body.get("issued_token_type", token_type) != token_type:
            raise AssertionError(f"unexpected response: {sorted(body)} {body.get('error')}")
        if act:
            _header, claims = jose.peek(body["access_token"])
            if "act" not in claims:
                raise AssertionError("the impersonated JWT carries no act claim")

    return check


@dataclass
class World:
    cases: list[Case]
    users: dict[str, Any]
    clients: dict[str, Any]


def build() -> World:
    """Create the clients, the customer, the support user and their tokens; return the cases."""
    security = SecuritySettings.load()
    security.allow_impersonation = True
    security.save()

    User = get_user_model()
    acme = Group.objects.create(name="ACME")
    end_user = User.objects.create_user(
        "end-user", "end-user@example.com", first_name="End", last_name="User"
    )
    support = User.objects.create_user("support", "support@example.com", is_staff=True)
    for user in (end_user, support):
        user.groups.add(acme)
    ImpersonatorGrant.objects.create(
        user=support, role=ImpersonatorGrant.Role.END_USER_IMPERSONATOR, organization=acme
    )

    secret = generate_client_secret()
    bench = _client("bench", secret)
    slow_secret = generate_client_secret()
    slow = _client("bench-pbkdf2", make_password(slow_secret, hasher="pbkdf2_sha256"))
    pair = generate_key_pair("RS256")
    ClientKey.objects.create(application=bench, kid=pair.kid, public_key=pair.public_pem, algorithm="RS256")
    private_key = jwk.JWK.from_pem(pair.private_pem.encode())

    subject_token = _access_token(end_user, bench, LOGIN_SCOPE)
    actor_token = _access_token(support, bench, LOGIN_SCOPE)
    slow_actor_token = _access_token(support, slow, LOGIN_SCOPE)
    auth = _basic("bench", secret)

    def impersonation(actor: str) -> dict[str, str]:
        return {
            "grant_type": GRANT_TYPE,
            "subject_token": str(end_user.pk),
            "subject_token_type": USER_ID_TYPE,
            "actor_token": actor,
            "actor_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": JWT_TYPE,
            "scope": "openid profile email",
        }

    def assertion() -> str:
        now = int(time.time())
        claims = {"iss": "bench", "sub": "bench", "aud": ISSUER, "iat": now, "exp": now + 300}
        return jose.sign({**claims, "jti": uuid.uuid4().hex}, private_key, "RS256", typ="JWT", kid=pair.kid)

    cases = [
        Case(
            "client_credentials",
            "DOT client_credentials (baseline)",
            lambda: Request(_form(grant_type="client_credentials", scope="read"), auth),
            _has("access_token", "expires_in"),
        ),
        Case(
            "exchange",
            "exchange: access token → opaque",
            lambda: Request(
                _form(
                    grant_type=GRANT_TYPE,
                    subject_token=subject_token,
                    subject_token_type=ACCESS_TOKEN_TYPE,
                    scope="read",
                ),
                auth,
            ),
            _has("access_token", "issued_token_type"),
        ),
        Case(
            "exchange_jwt_openid",
            "exchange: access token → JWT + ID token",
            lambda: Request(
                _form(
                    grant_type=GRANT_TYPE,
                    subject_token=subject_token,
                    subject_token_type=ACCESS_TOKEN_TYPE,
                    requested_token_type=JWT_TYPE,
                    scope="openid profile email",
                ),
                auth,
            ),
            _has("access_token", "id_token", token_type=JWT_TYPE),
        ),
        Case(
            "impersonation",
            "impersonation: user id + actor → JWT + ID token",
            lambda: Request(_form(**impersonation(actor_token)), auth),
            _has("access_token", "id_token", token_type=JWT_TYPE, act=True),
        ),
        Case(
            "impersonation_private_key_jwt",
            "the same, private_key_jwt",
            lambda: Request(
                _form(
                    **impersonation(actor_token),
                    client_assertion_type=CLIENT_ASSERTION_TYPE,
                    client_assertion=assertion(),
                ),
                {},
            ),
            _has("access_token", "id_token", token_type=JWT_TYPE, act=True),
        ),
        Case(
            "impersonation_pbkdf2_secret",
            "the same, secret hashed by PBKDF2",
            lambda: Request(_form(**impersonation(slow_actor_token)), _basic("bench-pbkdf2", slow_secret)),
            _has("access_token", "id_token", token_type=JWT_TYPE, act=True),
            rounds_divisor=20,
        ),
    ]
    return World(
        cases=cases,
        users={"end_user": end_user, "support": support},
        clients={"bench": bench, "bench-pbkdf2": slow},
    )

"""Fixtures are people and clients, as in ZITADEL's guide: the portal web app exchanges tokens,
aggregates and settings are APIs, ``end_user`` is the customer, ``support`` an impersonator of
the customer's organization (ACME) and ``mallory`` an attacker."""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
from django.conf import settings
from django.db import connections, router
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from oauth2_provider.models import get_access_token_model, get_application_model

from example_project.demo import data
from example_project.demo.login import authorization_code_login
from token_exchange.constants import GRANT_TYPE, INTROSPECT_ANY
from token_exchange.models import AuditEvent, ClientPolicy, ImpersonatorGrant, SecuritySettings

# Fuzzing: a bounded run in `make test`, a long one with `make fuzz` (HYPOTHESIS_PROFILE=long).
# Properties that post to the token endpoint run inside one test's database transaction.
_FUZZ = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
hypothesis_settings.register_profile("bounded", max_examples=100, **_FUZZ)
hypothesis_settings.register_profile("long", max_examples=5000, **_FUZZ)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))

# Counts what the adversarial, fuzz, concurrency and fault tests ran, and prints it at the end.
pytest_plugins = ["tests.proof"]

Application = get_application_model()
CRM = "https://crm.example.com/"
AccessToken = get_access_token_model()
FORM = "application/x-www-form-urlencoded"


def pytest_configure() -> None:
    # Users' passwords: MD5, as PBKDF2 would cost ~0.3 s a login. Client secrets: the example
    # project's CLIENT_SECRET_HASHER, which must be listed.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "token_exchange.hashers.ClientSecretHasher",
    ]


# DOT's own test modes (habit 15), each a settings module: tests/settings_swapped.py swaps DOT's
# models for the project's own; tests/settings_multidb.py routes every model away from "default".
SWAPPED = AccessToken._meta.app_label != "oauth2_provider"
ROUTED_DATABASES = [alias for alias in settings.DATABASES if alias != "default" and settings.DATABASE_ROUTERS]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With a router, every database test may use every routed database; "default" stays closed,
    so a query the router did not choose fails. Tests written for the default mode alone are
    skipped in the others, with the reason."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if ROUTED_DATABASES and (marker or "_django_db_helper" in getattr(item, "fixturenames", ())):
            kwargs = {**(marker.kwargs if marker else {}), "databases": ROUTED_DATABASES}
            item.add_marker(pytest.mark.django_db(*(marker.args if marker else ()), **kwargs), append=False)
        if reason := _default_mode_only(item):
            item.add_marker(pytest.mark.skip(reason=reason))


_ON_THE_DEFAULT_DATABASE = {
    "tests/test_bench.py::": "bench/ measures and fills through the default connection",
    "tests/test_admin.py::test_the_application_list_shows_client_id_and_token_exchange_in_constant_queries": (
        "counts the queries of the default connection"
    ),
}


def _default_mode_only(item: pytest.Item) -> str | None:
    if SWAPPED and item.nodeid.startswith("tests/test_bench.py::test_scale_mode"):
        return "swapped models: bench/scale.py fills DOT's own tables with SQL naming their columns"
    if ROUTED_DATABASES:
        for prefix, reason in _ON_THE_DEFAULT_DATABASE.items():
            if item.nodeid.startswith(prefix):
                return f"multiple databases: {reason}"
    return None


if ROUTED_DATABASES:
    # pytest-django's fixtures look at "default" unless told otherwise: here, at the database the
    # token tables are routed to.

    @pytest.fixture
    def django_assert_num_queries(django_assert_num_queries: Any) -> Any:
        using = router.db_for_write(AccessToken)
        return functools.partial(django_assert_num_queries, connection=connections[using])

    @pytest.fixture
    def django_assert_max_num_queries(django_assert_max_num_queries: Any) -> Any:
        using = router.db_for_write(AccessToken)
        return functools.partial(django_assert_max_num_queries, connection=connections[using])

    @pytest.fixture
    def django_capture_on_commit_callbacks(django_capture_on_commit_callbacks: Any) -> Any:
        using = router.db_for_write(AccessToken)
        return functools.partial(django_capture_on_commit_callbacks, using=using)


def application_admin(application: Any = None) -> str:
    """The application admin's list, or ``application``'s page: DOT's model or a swapped one."""
    meta = Application._meta
    if application is None:
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[application.pk])


def form_post(client: Client, path: str, data: Any, **extra: Any) -> Any:
    """POST ``data`` as an OAuth client does: ``application/x-www-form-urlencoded`` (RFC 6749
    §3.2), not the test client's default multipart, which the token exchange grant refuses."""
    return client.post(path, urlencode(data, doseq=True), content_type=FORM, **extra)


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined."""
    credentials = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def make_app(name: str, *, exchange: bool | None = True, client_id: str | None = None, **fields: Any) -> Any:
    secret = f"{name}-secret"
    app = Application.objects.create(
        name=name,
        client_id=client_id or name,
        client_secret=secret,
        client_type=fields.pop("client_type", Application.CLIENT_CONFIDENTIAL),
        authorization_grant_type=fields.pop("authorization_grant_type", Application.GRANT_AUTHORIZATION_CODE),
        redirect_uris=fields.pop("redirect_uris", f"http://127.0.0.1:8000/{name}/callback/"),
        algorithm=fields.pop("algorithm", Application.RS256_ALGORITHM),
        skip_authorization=True,
        **fields,
    )
    app.plain_secret = secret
    if exchange is not None:
        ClientPolicy.objects.create(application=app, token_exchange_enabled=exchange)
    return app


@pytest.fixture
def end_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(
        "end-user", "end-user@example.com", "pw", first_name="end", last_name="user"
    )


@pytest.fixture
def acme(db: None) -> Any:
    """The customer's organization (an auth.Group, the default organization model)."""
    from django.contrib.auth.models import Group

    return Group.objects.create(name="ACME")


def grant(
    user: Any, role: str = ImpersonatorGrant.Role.END_USER_IMPERSONATOR, organization: Any = None
) -> Any:
    return ImpersonatorGrant.objects.create(user=user, role=role, organization=organization)


@pytest.fixture
def support(django_user_model: Any, acme: Any) -> Any:
    """ORG_END_USER_IMPERSONATOR of ACME, as in the guide; a member of ACME like the customer."""
    user = django_user_model.objects.create_user("support", "support@example.com", "pw")
    user.groups.add(acme)
    grant(user, ImpersonatorGrant.Role.END_USER_IMPERSONATOR, acme)
    return user


@pytest.fixture
def impersonation_allowed(db: None) -> SecuritySettings:
    settings_row = SecuritySettings.load()
    settings_row.allow_impersonation = True
    settings_row.save()
    return settings_row


# What the fixtures' own configuration writes (token_exchange.issuance.change_audit), as any code would.
CHANGE_EVENTS = (
    AuditEvent.EventType.IMPERSONATOR_GRANT_CHANGED,
    AuditEvent.EventType.CLIENT_KEY_CHANGED,
    AuditEvent.EventType.CLIENT_POLICY_CHANGED,
    AuditEvent.EventType.APPLICATION_CHANGED,
    AuditEvent.EventType.USER_CHANGED,
)


def token_events() -> Any:
    """The audit rows of the token path: the configuration changes the fixtures made left out."""
    return AuditEvent.objects.exclude(event_type__in=CHANGE_EVENTS)


def refusals() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED))


@pytest.fixture
def mallory(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("mallory", "mallory@example.com", "pw")


@pytest.fixture
def portal(db: None) -> Any:
    return make_app(data.PORTAL_CLIENT_ID, redirect_uris=data.PORTAL_REDIRECT_URI)


@pytest.fixture
def crm(db: None) -> Any:
    """A second confidential client with token exchange enabled, serving the resource URI of its
    API, so that a login can name it as an audience (RFC 8707)."""
    app = make_app("crm")
    ClientPolicy.objects.filter(application=app).update(resource_uris=[CRM])
    return app


@pytest.fixture
def aggregates(db: None) -> Any:
    """The aggregates API: a confidential client that introspects tokens (every token: the
    suite's tests look at tokens of every audience through it)."""
    app = make_app("aggregates", exchange=None, authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    ClientPolicy.objects.create(application=app, introspection=INTROSPECT_ANY)
    return app


@pytest.fixture
def login(portal: Any) -> Callable[..., dict[str, Any]]:
    """Run the authorization code flow for a user at the portal (or another client)."""

    def run(user: Any, app: Any = None, **kwargs: Any) -> dict[str, Any]:
        app = app or portal
        return authorization_code_login(
            user,
            client_id=app.client_id,
            client_secret=app.plain_secret,
            redirect_uri=app.redirect_uris,
            **kwargs,
        )

    return run


@pytest.fixture
def end_user_in_acme(end_user: Any, acme: Any) -> Any:
    end_user.groups.add(acme)
    return end_user


@pytest.fixture
def support_tokens(login: Callable[..., dict[str, Any]], support: Any) -> dict[str, Any]:
    """The impersonator's own tokens after logging in to the portal (the actor tokens)."""
    return login(support)


@pytest.fixture
def user_tokens(login: Callable[..., dict[str, Any]], end_user: Any) -> dict[str, Any]:
    """The end user's tokens after logging in to the portal, as in the guide."""
    return login(end_user)


class TokenEndpoint:
    """A client of /o/token/ that posts forms, as a real one would."""

    def __init__(self) -> None:
        self.http = Client()

    def post(self, data: Any, *, auth: tuple[str, str] | None = None, **extra: Any) -> Any:
        headers = {"HTTP_AUTHORIZATION": basic(*auth)} if auth else {}
        return form_post(self.http, "/o/token/", data, **headers, **extra)

    def exchange(self, app: Any, *, auth: tuple[str, str] | None = None, **params: Any) -> Any:
        form = {"grant_type": GRANT_TYPE, **params}
        return self.post(form, auth=auth or (app.client_id, app.plain_secret))


@pytest.fixture
def token_endpoint() -> TokenEndpoint:
    return TokenEndpoint()

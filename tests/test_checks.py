"""Each system check id, with its exact message."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from oauth2_provider.settings import oauth2_settings

from token_exchange import checks


def dot(**changes: Any) -> Any:
    return override_settings(OAUTH2_PROVIDER={**settings.OAUTH2_PROVIDER, **changes})


@pytest.fixture(autouse=True)
def _reload_dot_settings():
    yield
    oauth2_settings.reload()


def run() -> list[str]:
    oauth2_settings.reload()
    messages = (
        checks.check_dot_settings()
        + checks.check_token_view()
        + checks.check_impersonation_guard()
        + checks.check_replay_cache()
        + checks.check_throttle_cache()
        + checks.check_admin_screens()
        + checks.check_client_secret_hasher()
    )
    return [message.id for message in messages]


def test_example_project_passes():
    assert run() == []


def test_e001_server_without_the_grant():
    with dot(OIDC_SERVER_CLASS="oauthlib.openid.Server"):
        assert run() == ["token_exchange.E001"]
    assert checks.E001.msg == "The OAuth2 server class DOT uses does not register the token exchange grant."


def test_e002_oauth2_server_class_hides_oidc():
    with dot(OAUTH2_SERVER_CLASS="token_exchange.oauth.server.Server"):
        assert run() == ["token_exchange.E002"]
    assert "ignores OIDC_SERVER_CLASS" in checks.E002.msg


def test_e003_validator():
    with dot(OAUTH2_VALIDATOR_CLASS="oauth2_provider.oauth2_validators.OAuth2Validator"):
        assert run() == ["token_exchange.E003"]
    assert checks.E003.msg == "OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] is not a token exchange validator."


def test_e004_backend():
    with dot(OAUTH2_BACKEND_CLASS="oauth2_provider.oauth2_backends.OAuthLibCore"):
        assert run() == ["token_exchange.E004"]
    assert "drops repeated parameters" in checks.E004.msg


def test_e005_urls(settings):
    settings.ROOT_URLCONF = "tests.urls_without_token_exchange"
    assert run() == ["token_exchange.E005"]
    assert (
        checks.E005.msg
        == "The URL named 'oauth2_provider:token' is not served by token_exchange.oauth.views.TokenView."
    )


WITHOUT_OIDC: dict[str, Any] = {
    "OIDC_ENABLED": False,
    "OIDC_SERVER_CLASS": "oauthlib.openid.Server",
    "OAUTH2_SERVER_CLASS": "token_exchange.oauth.server.Server",
}
JWT_ACCESS_TOKENS_HINT = (
    "JWT access tokens need an RSA private key to sign them and OpenID Connect on to publish its "
    "public key at jwks_uri. Make a key with 'openssl genpkey -algorithm RSA -pkeyopt "
    "rsa_keygen_bits:2048 -out oidc.key', keep the file out of version control, and set "
    "OAUTH2_PROVIDER['OIDC_RSA_PRIVATE_KEY'] to its PEM text (read from the file or an environment "
    "variable), 'OIDC_ENABLED': True and 'OIDC_SERVER_CLASS': 'token_exchange.oauth.server.OIDCServer', and "
    "remove OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] (DOT uses OIDC_SERVER_CLASS only while it is "
    "unset). If no client asks for JWT access tokens, add 'token_exchange.W001' to "
    "SILENCED_SYSTEM_CHECKS."
)


@pytest.mark.parametrize("oidc", [{}, WITHOUT_OIDC], ids=["with OIDC", "without OIDC"])
def test_w001_no_rsa_key(oidc):
    with dot(OIDC_RSA_PRIVATE_KEY="", **oidc):
        assert run() == ["token_exchange.W001"]
    assert checks.W001.msg == (
        "OAUTH2_PROVIDER['OIDC_RSA_PRIVATE_KEY'] is not set: JWT access tokens cannot be issued."
    )
    assert checks.W001.hint == JWT_ACCESS_TOKENS_HINT


def test_w001_a_key_without_oidc_publishes_no_jwks():
    with dot(**WITHOUT_OIDC):
        assert [message.msg for message in checks.check_dot_settings()] == [
            "OAUTH2_PROVIDER['OIDC_ENABLED'] is off: JWT access tokens are signed with "
            "OIDC_RSA_PRIVATE_KEY, but no jwks_uri publishes its public key, so no resource server "
            "can verify them."
        ]
        assert run() == ["token_exchange.W001"]
    assert checks.W001_WITHOUT_OIDC.hint == JWT_ACCESS_TOKENS_HINT


def test_w001_following_the_hint_on_a_site_without_oidc_passes():
    """DOT uses OIDC_SERVER_CLASS only while OAUTH2_SERVER_CLASS is unset: turning OpenID Connect
    on without removing it is E002, so the hint says to remove it."""
    turned_on = {"OIDC_ENABLED": True, "OIDC_SERVER_CLASS": "token_exchange.oauth.server.OIDCServer"}
    with dot(**{**WITHOUT_OIDC, **turned_on}):
        assert run() == ["token_exchange.E002"]
    assert "remove OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS']" in checks.W001_WITHOUT_OIDC.hint
    followed = {**settings.OAUTH2_PROVIDER, **WITHOUT_OIDC, **turned_on}
    del followed["OAUTH2_SERVER_CLASS"]
    with override_settings(OAUTH2_PROVIDER=followed):
        assert run() == []
        assert oauth2_settings.OAUTH2_SERVER_CLASS.__name__ == "OIDCServer"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_w001_the_hint_makes_a_key_dot_reads(tmp_path):
    """The hint's command makes a PEM key that DOT publishes in its JWKS."""
    command = checks.W001.hint.split("'openssl ")[1].split("'")[0]
    key_file = tmp_path / "oidc.key"
    subprocess.run(
        ["openssl", *command.replace("-out oidc.key", f"-out {key_file}").split()],
        check=True,
        capture_output=True,
    )
    with dot(OIDC_RSA_PRIVATE_KEY=key_file.read_text()):
        assert run() == []
        keys = Client().get("/o/.well-known/jwks.json").json()["keys"]
    assert [(key["kty"], key["alg"]) for key in keys] == [("RSA", "RS256")]


def test_w002_bearer_login_without_the_guard():
    bearer_login = "oauth2_provider.middleware.OAuth2TokenMiddleware"
    guard = "token_exchange.impersonation.guard.ImpersonationGuardMiddleware"
    without_guard = [m for m in settings.MIDDLEWARE if m != guard]
    with override_settings(MIDDLEWARE=[*without_guard, bearer_login]):
        assert run() == ["token_exchange.W002"]
    with override_settings(MIDDLEWARE=[*without_guard, bearer_login, guard]):
        assert run() == []
    with override_settings(MIDDLEWARE=without_guard):
        assert run() == []
    assert checks.W002.msg.startswith("DOT's OAuth2TokenMiddleware lets bearer tokens log users in")


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
DATABASE = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "replay"}


@pytest.mark.parametrize(
    ("caches", "replay_cache"),
    [({"default": DUMMY}, None), ({"default": LOCMEM}, "missing")],
    ids=["dummy", "missing-alias"],
)
def test_e006_replay_cache_that_remembers_nothing(caches, replay_cache):
    te = {"REPLAY_CACHE": replay_cache, "THROTTLE_REFUSALS": 0} if replay_cache else {"THROTTLE_REFUSALS": 0}
    with override_settings(CACHES=caches, TOKEN_EXCHANGE=te):
        assert run() == ["token_exchange.E006"]
    assert checks.E006.msg == (
        "TOKEN_EXCHANGE['REPLAY_CACHE'] names no cache, or a DummyCache that remembers nothing: every "
        "client assertion and self-signed subject JWT will be refused."
    )


BIG_DATABASE = {**DATABASE, "OPTIONS": {"MAX_ENTRIES": 1_000_000}}
REDIS = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379"}


@pytest.mark.parametrize(
    ("caches", "expected"),
    [
        ({"default": LOCMEM}, ["token_exchange.W003", "token_exchange.W004"]),
        ({"default": LOCMEM, "replay": DATABASE}, ["token_exchange.W004"]),
        ({"default": LOCMEM, "replay": BIG_DATABASE}, []),
        ({"default": LOCMEM, "replay": REDIS}, []),
    ],
    ids=["locmem", "database-300", "database-1e6", "redis"],
)
def test_w003_w004_replay_cache_deployment_warnings(caches, expected):
    te = {"REPLAY_CACHE": "replay"} if "replay" in caches else {}
    with override_settings(CACHES=caches, TOKEN_EXCHANGE=te):
        assert run() == []  # not without --deploy: one small runserver process is fine
        assert [message.id for message in checks.check_replay_cache_is_shared()] == expected
    assert checks.W003.msg == (
        "TOKEN_EXCHANGE['REPLAY_CACHE'] is a per-process cache: a client assertion or subject JWT used in "
        "one process can be replayed in another."
    )
    assert checks.W004.msg.startswith(
        "TOKEN_EXCHANGE['REPLAY_CACHE'] culls entries once it holds MAX_ENTRIES items"
    )


def test_w005_user_admin_without_the_mixin():
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.contrib.auth.admin import UserAdmin

    User = get_user_model()
    extended = type(admin.site._registry[User])
    admin.site.unregister(User)
    admin.site.register(User, UserAdmin)
    try:
        assert run() == ["token_exchange.W005"]
    finally:
        admin.site.unregister(User)
        admin.site.register(User, extended)
    assert run() == []
    assert checks.W005.msg == (
        "The user model's admin lacks token_exchange.admin.ImpersonationUserAdminMixin: no impersonator "
        "roles on the user page and no Impersonate button."
    )
    assert checks.W005.hint == (
        "Add 'token_exchange.contrib.user_admin' to INSTALLED_APPS after 'django.contrib.admin' (and "
        "after the app that registers your user admin), or add "
        "token_exchange.admin.ImpersonationUserAdminMixin to your own user admin's bases."
    )


def test_w006_application_admin():
    with dot(APPLICATION_ADMIN_CLASS="oauth2_provider.admin.ApplicationAdmin"):
        assert run() == ["token_exchange.W006"]
    assert checks.W006.msg.startswith("OAUTH2_PROVIDER['APPLICATION_ADMIN_CLASS'] is not")


def test_w007_banner_middleware():
    banner = "token_exchange.impersonation.banner.ImpersonationBannerMiddleware"
    with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != banner]):
        assert run() == ["token_exchange.W007"]
    assert checks.W007.msg.startswith(
        "token_exchange.impersonation.banner.ImpersonationBannerMiddleware is not installed"
    )


def test_w009_signed_cookie_sessions():
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies"):
        assert run() == ["token_exchange.W009"]
    assert checks.W009.msg == (
        "SESSION_ENGINE keeps sessions in signed cookies: nothing at this server could end an "
        "impersonation started from the admin when the support user's session ends, so the Impersonate "
        "button is hidden and starting one is refused."
    )


@pytest.mark.parametrize(
    ("caches", "te"),
    [
        ({"default": LOCMEM, "replay": LOCMEM}, {"REPLAY_CACHE": "replay", "THROTTLE_CACHE": "missing"}),
        ({"default": LOCMEM, "throttle": DUMMY}, {"THROTTLE_CACHE": "throttle"}),
    ],
    ids=["missing-alias", "dummy"],
)
def test_w010_throttle_cache_that_remembers_nothing(caches, te):
    with override_settings(CACHES=caches, TOKEN_EXCHANGE=te):
        assert run() == ["token_exchange.W010"]
    with override_settings(CACHES=caches, TOKEN_EXCHANGE={**te, "THROTTLE_REFUSALS": 0}):
        assert run() == []  # throttling turned off on purpose
    assert checks.W010.msg == (
        "TOKEN_EXCHANGE['THROTTLE_CACHE'] names no cache, or a DummyCache that remembers nothing: clients "
        "whose exchanges keep being refused are never throttled."
    )


@pytest.mark.parametrize(
    ("backend", "expected"), [(LOCMEM, ["token_exchange.W011"]), (REDIS, [])], ids=["locmem", "redis"]
)
def test_w011_throttle_cache_per_process(backend, expected):
    with override_settings(CACHES={"default": backend}):
        assert [m.id for m in checks.check_throttle_cache_is_shared()] == expected
    assert checks.W011.msg.startswith("TOKEN_EXCHANGE['THROTTLE_CACHE'] is a per-process cache")


def test_e017_the_allauth_resolver_without_allauth():
    with override_settings(TOKEN_EXCHANGE={"FEDERATION_RESOLVER": "token_exchange.contrib.allauth.resolve"}):
        assert [m.id for m in checks.check_federation_resolver()] == ["token_exchange.E017"]
    assert checks.check_federation_resolver() == []
    assert checks.E017.msg == (
        "TOKEN_EXCHANGE['FEDERATION_RESOLVER'] is token_exchange.contrib.allauth.resolve, but "
        "'allauth.socialaccount' is not in INSTALLED_APPS: the first unlinked subject of a trusted "
        "issuer would fail with a server error."
    )


def test_w017_keys_over_plain_http_on_loopback():
    with override_settings(TOKEN_EXCHANGE={"FEDERATION_ALLOW_HTTP_LOOPBACK": True}):
        assert [m.id for m in checks.check_federation_loopback()] == ["token_exchange.W017"]
    with override_settings(TOKEN_EXCHANGE={}):
        assert checks.check_federation_loopback() == []
    assert checks.W017.msg == (
        "TOKEN_EXCHANGE['FEDERATION_ALLOW_HTTP_LOOPBACK'] is on: a trusted issuer's keys may be fetched "
        "over plain HTTP from this machine's loopback interface, where any local process can serve them."
    )


@pytest.mark.parametrize(
    ("backend", "expected"), [(LOCMEM, ["token_exchange.W018"]), (REDIS, [])], ids=["locmem", "redis"]
)
def test_w018_federation_cache_per_process(backend, expected):
    with override_settings(CACHES={"default": backend}):
        assert [m.id for m in checks.check_federation_cache_is_shared()] == expected
    assert checks.W018.msg == (
        "TOKEN_EXCHANGE['FEDERATION_CACHE'] is a per-process cache: every process fetches each trusted "
        "issuer's keys on its own, and an unknown kid costs the issuer one request per process and interval."
    )


def security_checks(*, deploy: bool) -> list[str]:
    """The ids of token_exchange's security checks that ``manage.py check`` reports, with or
    without ``--deploy``, as registered."""
    from django.core.checks import Tags, registry

    oauth2_settings.reload()
    ids = [m.id for m in registry.run_checks(tags=[Tags.security], include_deployment_checks=deploy)]
    return [i for i in ids if i and i.startswith("token_exchange.")]


@pytest.mark.parametrize("issuer", [None, ""], ids=["unset", "empty"])
def test_w014_an_issuer_that_follows_the_request(issuer, settings):
    # The demo fetches its partner's keys over plain HTTP on loopback (W017); not this test's subject.
    settings.TOKEN_EXCHANGE = {
        key: value
        for key, value in settings.TOKEN_EXCHANGE.items()
        if key != "FEDERATION_ALLOW_HTTP_LOOPBACK"
    }
    assert security_checks(deploy=True) == []  # the example project names its issuer
    without_issuer = {k: v for k, v in settings.OAUTH2_PROVIDER.items() if k != "OIDC_ISS_ENDPOINT"}
    if issuer is not None:
        without_issuer["OIDC_ISS_ENDPOINT"] = issuer
    with override_settings(OAUTH2_PROVIDER=without_issuer):
        # Not without --deploy: runserver at one address names itself right.
        assert security_checks(deploy=False) == []
        assert security_checks(deploy=True) == ["token_exchange.W014"]
        # What it warns of: the issuer, and every token's iss, follow the Host header.
        client = Client()
        for host in ("127.0.0.1:8000", "localhost:8000"):
            issuer_seen = client.get("/o/.well-known/openid-configuration", HTTP_HOST=host).json()["issuer"]
            assert issuer_seen == f"http://{host}/o"
    assert checks.W014.msg == (
        "OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] is not set: the issuer, the iss claim of every token and "
        "the discovery documents follow each request's Host header (and X-Forwarded-Host with "
        "USE_X_FORWARDED_HOST), which a proxy or a second name in ALLOWED_HOSTS can change."
    )
    assert checks.W014.hint == (
        "Set OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] to the public issuer URL: where clients reach "
        "token_exchange.urls, e.g. 'https://id.example.com/o', without a trailing slash."
    )


def test_w014_not_on_a_resource_server_that_issues_nothing():
    """A resource server has no issuer of its own: it names the authorization server's."""
    resource_server = {
        "OAUTH2_VALIDATOR_CLASS": "token_exchange.resource_server.IntrospectionValidator",
        "RESOURCE_SERVER_INTROSPECTION_URL": "https://id.example.com/o/introspect/",
        "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": ("aggregates", "secret"),
    }
    with override_settings(
        ROOT_URLCONF="example_resource_server.urls",
        OAUTH2_PROVIDER=resource_server,
        TOKEN_EXCHANGE={
            "RESOURCE_SERVER": {
                "ISSUER": "https://id.example.com/o",
                "RESOURCE_URI": "https://api.example.com/",
            }
        },
    ):
        assert checks.check_issuer_is_fixed() == []
        # The same settings with a token endpoint are an authorization server after all.
        with override_settings(ROOT_URLCONF="example_project.urls"):
            assert checks.check_issuer_is_fixed() == [checks.W014]


DJANGO_DEFAULT_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]


@pytest.mark.parametrize(
    ("hashers", "client_secret_hasher", "expected"),
    [
        # Django's defaults: client secrets would be hashed by PBKDF2 on every request.
        (DJANGO_DEFAULT_HASHERS, "default", ["token_exchange.W008"]),
        (DJANGO_DEFAULT_HASHERS, "pbkdf2_sha1", ["token_exchange.W008"]),
        (DJANGO_DEFAULT_HASHERS, "argon2", ["token_exchange.W008"]),
        (DJANGO_DEFAULT_HASHERS, "bcrypt_sha256", ["token_exchange.W008"]),
        (DJANGO_DEFAULT_HASHERS, "scrypt", ["token_exchange.W008"]),
        # The example project: passwords keep PBKDF2, client secrets get the fast hasher.
        ([*DJANGO_DEFAULT_HASHERS, "token_exchange.hashers.ClientSecretHasher"], "token_exchange_sha256", []),
        (["token_exchange.hashers.ClientSecretHasher"], "default", []),
        # A hasher DOT cannot find: it could neither hash nor check a secret.
        (DJANGO_DEFAULT_HASHERS, "token_exchange_sha256", ["token_exchange.E007"]),
    ],
)
def test_w008_e007_client_secret_hasher(hashers, client_secret_hasher, expected):
    with override_settings(PASSWORD_HASHERS=hashers), dot(CLIENT_SECRET_HASHER=client_secret_hasher):
        oauth2_settings.reload()
        assert [message.id for message in checks.check_client_secret_hasher()] == expected


def test_e013_confusable_client_ids(db):
    from django.core import checks as django_checks
    from django.db import router
    from oauth2_provider.models import get_application_model

    from .conftest import make_app

    crm = make_app("crm", client_id="https://crm.example.com/")
    urn = make_app("urn", client_id="urn:example:api")
    host = make_app("host", client_id="localhost:8000")  # parses as scheme "localhost"
    make_app("plain", client_id="billing")
    make_app("address", client_id="127.0.0.1:8000")  # a digit first: no scheme
    alias = router.db_for_read(get_application_model())

    messages = checks.check_confusable_client_ids(databases=[alias])

    assert [(message.id, message.obj) for message in messages] == [
        ("token_exchange.E013", crm),
        ("token_exchange.E013", urn),
        ("token_exchange.E013", host),
    ]
    assert messages[0].msg == (
        f"The client_id 'https://crm.example.com/' of application {crm.pk} reads as an absolute URI: a "
        "token's audience names clients and resource servers alike, so this client could pass for a "
        "resource server. It cannot authenticate."
    )
    assert messages[0].hint == (
        "Give the application a client_id without a scheme (letters, digits, '-', '_', '.') in the "
        "application admin, and configure the client with it."
    )
    # A database check: `manage.py check` without --database does not run it.
    assert checks.check_confusable_client_ids(databases=None) == []
    assert "token_exchange.E013" not in [message.id for message in django_checks.run_checks()]
    assert "token_exchange.E013" in [
        message.id for message in django_checks.run_checks(databases=[alias], tags=["database"])
    ]


def test_e013_says_nothing_without_the_table(db, monkeypatch):
    """Before the first migrate (or with the table unreadable) the check is quiet, not a crash."""
    from django.db import DatabaseError, connections, router
    from oauth2_provider.models import get_application_model

    alias = router.db_for_read(get_application_model())
    monkeypatch.setattr(connections[alias].introspection, "table_names", lambda *args, **kwargs: [])
    assert checks.check_confusable_client_ids(databases=[alias]) == []

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("no such table")

    monkeypatch.setattr(connections[alias].introspection, "table_names", unreadable)
    assert checks.check_confusable_client_ids(databases=[alias]) == []


def test_e014_a_resource_uri_claimed_twice(db):
    from django.db import router

    from token_exchange.models import ClientPolicy

    from .conftest import make_app

    api, impostor, other = make_app("api"), make_app("impostor"), make_app("other")
    ClientPolicy.objects.filter(application=api).update(resource_uris=["https://api.example.com/"])
    ClientPolicy.objects.filter(application=impostor).update(resource_uris=["https://api.example.com/"])
    ClientPolicy.objects.filter(application=other).update(resource_uris=["https://other.example.com/"])
    alias = router.db_for_read(ClientPolicy)

    messages = checks.check_resource_uris_claimed_twice(databases=[alias])

    assert [message.id for message in messages] == ["token_exchange.E014"]
    assert messages[0].msg == (
        f"The resource URI 'https://api.example.com/' is claimed by the client policies of applications "
        f"{api.pk}, {impostor.pk}: each of them is handed, and may introspect, every token meant for it."
    )
    assert checks.check_resource_uris_claimed_twice(databases=[]) == []


def test_a_policy_cannot_claim_a_resource_uri_another_client_serves(db):
    from django.core.exceptions import ValidationError

    from token_exchange.models import ClientPolicy

    from .conftest import make_app

    api, impostor = make_app("api"), make_app("impostor")
    ClientPolicy.objects.filter(application=api).update(resource_uris=["https://api.example.com/"])
    policy = ClientPolicy.objects.get(application=impostor)
    policy.resource_uris = ["https://api.example.com/"]
    with pytest.raises(ValidationError) as raised:
        policy.clean()
    assert raised.value.message_dict["resource_uris"] == [
        "https://api.example.com/ is already served by api."
    ]
    policy.resource_uris = ["https://impostor.example.com/"]
    policy.clean()

"""The example identity provider: ZITADEL's token exchange guide, on Django and DOT.

Not for production: DEBUG defaults on, and a development RSA key is generated on first start.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
# Every process of a site signs sessions and CSRF tokens with the same key: served with DEBUG off
# (`make serve`), it must come from the environment, never from this file.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-token-exchange-demo-only" if DEBUG else "")
if not DEBUG and (
    len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")
):
    # What Django's own check (security.W009) calls too weak, refused rather than warned about.
    raise ImproperlyConfigured(
        "DJANGO_DEBUG=0 needs DJANGO_SECRET_KEY: 50 or more random characters, the same in every "
        "process (e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )


# One label of a DNS name as a Host header and ALLOWED_HOSTS carry it: ASCII letters, digits and
# inner hyphens (a name in another script in its IDNA "xn--" form). Django's own host check
# accepts no more (no "_", no "*").
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _demo_origin(value: str) -> str:
    """``scheme://host:port`` without a trailing slash, or ImproperlyConfigured saying why.

    The issuer is built from it, and an issuer must match byte for byte everywhere it is compared
    (JWT ``iss`` and ``aud``, discovery): a path, query or credentials here would leak into it.
    The origin returned is rebuilt from the parts that were checked, and must read as given:
    urlsplit drops tabs and line breaks, an empty query or fragment and an empty port without a
    word, and jwt_profile.py and the walkthrough use the variable as it is written.
    """
    origin = value.strip().rstrip("/")
    if any(not character.isprintable() for character in origin):
        raise ImproperlyConfigured(
            f"DEMO_ORIGIN {value!r} contains a tab, line break or other unprintable character."
        )
    if "?" in origin or "#" in origin:
        raise ImproperlyConfigured(f"DEMO_ORIGIN {value!r} has more than a scheme, host and port.")
    try:
        parts = urlsplit(origin)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ImproperlyConfigured(f"DEMO_ORIGIN {value!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"DEMO_ORIGIN {value!r} is not http(s)://host[:port].")
    if parts.path or parts.query or parts.fragment or parts.username is not None:
        raise ImproperlyConfigured(f"DEMO_ORIGIN {value!r} has more than a scheme, host and port.")
    host = _origin_host(value, parts.hostname)
    rebuilt = f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")
    if rebuilt != origin:
        raise ImproperlyConfigured(f"DEMO_ORIGIN {value!r}: write it as {rebuilt!r}.")
    return rebuilt


def _origin_host(value: str, hostname: str) -> str:
    """The host of an origin as a Host header names it: a DNS name, an IPv4 address, or an IPv6
    address in brackets; never a pattern, since ALLOWED_HOSTS reads "*" and a leading "." as
    wildcards that would let any Host header through."""
    if "*" in hostname or hostname.startswith("."):
        raise ImproperlyConfigured(
            f"DEMO_ORIGIN {value!r} names no single host: ALLOWED_HOSTS would read "
            f"{hostname!r} as a wildcard."
        )
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        labels = hostname.split(".")
        # A last label of digits alone (127.1, 300.1.1.1) is neither a name nor an address.
        if len(hostname) > 253 or labels[-1].isdigit() or not all(map(_DNS_LABEL.fullmatch, labels)):
            raise ImproperlyConfigured(
                f"DEMO_ORIGIN {value!r}: {hostname!r} is not a DNS name or an IP address."
            ) from None
        return hostname
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            raise ImproperlyConfigured(
                f"DEMO_ORIGIN {value!r}: an IPv6 address with a zone is no host a browser names."
            )
        return f"[{address.compressed}]"
    return address.compressed


# Where the demo serves. `make demo HOST=… PORT=…` sets it, and everything that names the server
# follows: the issuer below, ALLOWED_HOSTS, the portal's redirect and launch URLs (demo/data.py,
# stored by seed_demo, used by demo_login), example_project/walkthrough.sh and jwt_profile.py.
# The test suite runs on the default.
DEMO_ORIGIN = _demo_origin(os.environ.get("DEMO_ORIGIN", "http://127.0.0.1:8000"))
_demo_hostname = urlsplit(DEMO_ORIGIN).hostname or ""
ALLOWED_HOSTS = list(
    dict.fromkeys(
        [
            "127.0.0.1",
            "localhost",
            "testserver",
            # As Django reads it from the Host header: an IPv6 address in its brackets.
            f"[{_demo_hostname}]" if ":" in _demo_hostname else _demo_hostname,
        ]
    )
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
    "token_exchange",
    "token_exchange.contrib.user_admin",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Impersonated bearer tokens never reach the admin (TOKEN_EXCHANGE["PRIVILEGED_URL_PREFIXES"]);
    # before any middleware that logs bearer tokens in.
    "token_exchange.impersonation.guard.ImpersonationGuardMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # "You are acting as … — Stop" on every page while a support user impersonates from the admin.
    "token_exchange.impersonation.banner.ImpersonationBannerMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# DATABASE_URL=postgres://postgres@127.0.0.1:5432/test works too. DATABASE_CONN_MAX_AGE keeps each
# worker's connection open for that many seconds between requests (`make serve`: 600), checked
# before it is reused, so a connection the database dropped costs a reconnect, not an error.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'example_project' / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("TEST", {})["NAME"] = ":memory:"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Passwords keep Django's hashers; the last one is for client secrets only (CLIENT_SECRET_HASHER).
PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "token_exchange.hashers.ClientSecretHasher"]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/admin/"


def _development_rsa_key() -> str:
    """OIDC_RSA_PRIVATE_KEY from the environment, else a key generated once into the project."""
    if os.environ.get("OIDC_RSA_PRIVATE_KEY"):
        return os.environ["OIDC_RSA_PRIVATE_KEY"]
    path = BASE_DIR / "example_project" / "dev-oidc-key.pem"
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pem)
        os.replace(tmp, path)  # atomic: two processes starting at once agree on one key
    return path.read_text()


OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    # A fixed issuer, so tokens minted by `manage.py demo_login` (outside any request) match the
    # running server's: DEMO_ORIGIN's, unless OIDC_ISS_ENDPOINT names another.
    "OIDC_ISS_ENDPOINT": os.environ.get("OIDC_ISS_ENDPOINT", f"{DEMO_ORIGIN}/o"),
    "OIDC_RSA_PRIVATE_KEY": _development_rsa_key(),
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name",
        "email": "Your email address",
        "offline_access": "Stay signed in",
        "read": "Read your data",
        "write": "Change your data",
    },
    "DEFAULT_SCOPES": ["openid"],
    # Client secrets are generated, not chosen: one salted SHA-256 instead of PBKDF2's million
    # rounds, which would cost every secret-authenticated request ~0.3 s (token_exchange.W008).
    "CLIENT_SECRET_HASHER": "token_exchange_sha256",
    # token_exchange: the grant, its validator, and a backend that keeps repeated parameters.
    # With OIDC on, DOT uses OIDC_SERVER_CLASS; without OIDC it would be
    # "OAUTH2_SERVER_CLASS": "token_exchange.oauth.server.Server" (setting both turns OIDC off).
    "OIDC_SERVER_CLASS": "token_exchange.oauth.server.OIDCServer",
    "OAUTH2_VALIDATOR_CLASS": "example_project.demo.oidc.DemoValidator",
    "OAUTH2_BACKEND_CLASS": "token_exchange.oauth.backend.TokenExchangeOAuthLibCore",
    # DOT's application admin with the token exchange policy and client keys inline.
    "APPLICATION_ADMIN_CLASS": "token_exchange.admin.ApplicationAdmin",
}

# Used jti values of client assertions and self-signed subject JWTs, in an alias of their own,
# and the refusal throttle's counts (the default cache). Every process must see the same ones:
# with REDIS_URL (`make serve`, docs/deployment.md) both live in Redis, which Django's own
# backend reaches with short timeouts, so a Redis that stops answering fails a request closed in
# about a second (its socket timeout) instead of holding the worker. Without it (`make demo`: runserver is one
# process) local memory does, with room for an hour of JWTs (`check --deploy` says so: W003).
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    _redis = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
    CACHES = {
        "default": {**_redis, "KEY_PREFIX": "example"},
        "token_exchange_replay": {**_redis, "KEY_PREFIX": "replay"},
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "token_exchange_replay": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "token-exchange-replay",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        },
    }
TOKEN_EXCHANGE = {
    "REPLAY_CACHE": "token_exchange_replay",
    # The partner's provider of `make partner-idp` publishes its keys on plain http at
    # 127.0.0.1:8002: fetched by the development server of `make demo` only, never with DEBUG off
    # (`make serve`), and not in the test suite, which reads these settings too and checks them as
    # a deployment's (token_exchange.W017); its tests turn it on where they need it.
    "FEDERATION_ALLOW_HTTP_LOOPBACK": DEBUG and sys.argv[1:2] == ["runserver"],
}

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"token_exchange": {"handlers": ["console"], "level": "INFO"}},
}
if not DEBUG:
    # Django sends a failed request's traceback to the console only with DEBUG on; served,
    # it goes to the server's log (gunicorn: stderr), not nowhere.
    LOGGING["loggers"]["django.request"] = {"handlers": ["console"], "level": "ERROR"}

# DOT's swappable token models, spelled out for `makemigrations` (DOT reads the same defaults).
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"

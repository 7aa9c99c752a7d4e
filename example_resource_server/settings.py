"""The example resource server: the guide's aggregates API as a separate service.

It issues nothing and keeps no users: it trusts the example identity provider
(``example_project``, started by ``make demo``) and verifies its tokens both ways a separate
service can, side by side: ``/introspected/…`` asks the authorization server (RFC 7662, DOT's
introspection mode with ``token_exchange.resource_server.IntrospectionValidator``), ``/jwt/…``
verifies RFC 9068 JWT access tokens offline against its JWKS. ``/…/settings/`` refuses
impersonated tokens (``NotImpersonated``).

Everything comes from the environment, defaults matching ``make demo`` and ``seed_demo``:

- ``AUTHORIZATION_SERVER``: where the identity provider listens (else ``DEMO_ORIGIN``, else
  http://127.0.0.1:8000);
- ``ISSUER``: its issuer, exactly as in its tokens (``AUTHORIZATION_SERVER`` + "/o");
- ``JWKS_URI``, ``INTROSPECTION_URL``: default below ``AUTHORIZATION_SERVER``;
- ``RESOURCE_URI``: this service's resource indicator (the demo's aggregates API);
- ``INTROSPECTION_CLIENT_ID``/``INTROSPECTION_CLIENT_SECRET``: the aggregates client;
- ``RESOURCE_SERVER_DATABASE``: its own SQLite file.

Not for production: DEBUG defaults on and the secret key is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-resource-server-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

# No admin, no sessions: a resource server only reads bearer tokens. token_exchange brings the
# verification and the system checks; oauth2_provider the introspection mode.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "oauth2_provider",
    "token_exchange",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "example_resource_server.urls"
WSGI_APPLICATION = "example_resource_server.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RESOURCE_SERVER_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# DEMO_ORIGIN: what `make demo` and the walkthrough export (`make demo PORT=9000`).
AUTHORIZATION_SERVER = (
    os.environ.get("AUTHORIZATION_SERVER") or os.environ.get("DEMO_ORIGIN") or "http://127.0.0.1:8000"
).rstrip("/")
# example_project.demo.data.AGGREGATES_URI and the aggregates client seed_demo creates; written
# out, as that module reads the identity provider's settings (tests/test_remote_resource_server.py
# checks they agree).
AGGREGATES_URI = "https://aggregates.example.com/"
AGGREGATES_CLIENT = ("aggregates", "aggregates-secret")

OAUTH2_PROVIDER = {
    # DOT's introspection mode, answered by our validator: act and aud kept, seconds of caching.
    "OAUTH2_VALIDATOR_CLASS": "token_exchange.resource_server.IntrospectionValidator",
    "RESOURCE_SERVER_INTROSPECTION_URL": os.environ.get(
        "INTROSPECTION_URL", f"{AUTHORIZATION_SERVER}/o/introspect/"
    ),
    # The aggregates client of seed_demo: confidential, introspection "audience", serving
    # AGGREGATES_URI, so it learns about the tokens meant for it and no others.
    "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": (
        os.environ.get("INTROSPECTION_CLIENT_ID", AGGREGATES_CLIENT[0]),
        os.environ.get("INTROSPECTION_CLIENT_SECRET", AGGREGATES_CLIENT[1]),
    ),
}

TOKEN_EXCHANGE = {
    "RESOURCE_SERVER": {
        "ISSUER": os.environ.get("ISSUER", f"{AUTHORIZATION_SERVER}/o"),
        "RESOURCE_URI": os.environ.get("RESOURCE_URI", AGGREGATES_URI),
        "JWKS_URI": os.environ.get("JWKS_URI") or None,  # None: ISSUER + "/.well-known/jwks.json"
        "INTROSPECTION_CACHE_SECONDS": 60,
    }
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

REST_FRAMEWORK = {
    # Each view names its authentication; nothing else authenticates here.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"token_exchange": {"handlers": ["console"], "level": "INFO"}},
}

"""The example project as a site that signs its users in with django-allauth's social accounts
and resolves a trusted issuer's subjects through them (token_exchange.contrib.allauth):
tests/test_contrib_allauth.py, which runs only here.

    DJANGO_SETTINGS_MODULE=tests.settings_allauth .venv/bin/python -m pytest -m allauth -p no:cacheprovider
    DJANGO_SETTINGS_MODULE=tests.settings_allauth .venv/bin/python manage.py makemigrations --check --dry-run

SQLite in memory; with DATABASE_URL (postgres://…), the test database test_allauth on that server.
"""

from __future__ import annotations

from example_project.settings import *  # noqa: F403
from example_project.settings import DATABASES, INSTALLED_APPS, MIDDLEWARE, TOKEN_EXCHANGE

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    # An OpenID Connect provider's accounts: provider = the SocialApp's provider_id, uid = sub.
    "allauth.socialaccount.providers.openid_connect",
]

# allauth.account refuses to start without it (account.E001); after AuthenticationMiddleware.
MIDDLEWARE = [*MIDDLEWARE, "allauth.account.middleware.AccountMiddleware"]

TOKEN_EXCHANGE = {**TOKEN_EXCHANGE, "FEDERATION_RESOLVER": "token_exchange.contrib.allauth.resolve"}

if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # A test database of its own, beside the default mode's test_<name> on the same server.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = "test_allauth"

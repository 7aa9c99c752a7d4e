"""The example project with every DOT model the package touches swapped for a project's own
(tests/swapped/models.py), as DOT's own tests/settings_swapped.py does.

    DJANGO_SETTINGS_MODULE=tests.settings_swapped .venv/bin/python -m pytest -p no:cacheprovider
    DJANGO_SETTINGS_MODULE=tests.settings_swapped .venv/bin/python manage.py makemigrations --check --dry-run

SQLite in memory; with DATABASE_URL (postgres://…), the test database test_swapped on that server.
"""

from __future__ import annotations

from example_project.settings import *  # noqa: F403
from example_project.settings import DATABASES, INSTALLED_APPS

# The project's own OAuth models, in an app of their own next to DOT's.
INSTALLED_APPS = [*INSTALLED_APPS]
INSTALLED_APPS.insert(INSTALLED_APPS.index("oauth2_provider"), "tests.swapped")

if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # A test database of its own, beside the default mode's test_<name> on the same server.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = "test_swapped"

OAUTH2_PROVIDER_APPLICATION_MODEL = "swapped.Client"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "swapped.Token"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "swapped.Renewal"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "swapped.Identity"
OAUTH2_PROVIDER_GRANT_MODEL = "swapped.Code"

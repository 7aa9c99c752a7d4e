"""The example project with every DOT model the package touches swapped for a project's own
(tests/swapped/models.py), as DOT's own tests/settings_swapped.py does.

    DJANGO_SETTINGS_MODULE=tests.settings_swapped .venv/bin/python -m pytest -p no:cacheprovider
    DJANGO_SETTINGS_MODULE=tests.settings_swapped .venv/bin/python manage.py makemigrations --check --dry-run

Works on SQLite and, with DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

from example_project.settings import *  # noqa: F403
from example_project.settings import INSTALLED_APPS

# Before token_exchange, whose migrations depend on the swapped models' (swappable_dependency).
INSTALLED_APPS = [*INSTALLED_APPS]
INSTALLED_APPS.insert(INSTALLED_APPS.index("oauth2_provider"), "tests.swapped")

OAUTH2_PROVIDER_APPLICATION_MODEL = "swapped.Client"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "swapped.Token"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "swapped.Renewal"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "swapped.Identity"
OAUTH2_PROVIDER_GRANT_MODEL = "swapped.Code"

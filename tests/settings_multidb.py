"""The example project on two databases and a router (tests/db_router.py), "default" left
empty, as DOT's own tests/multi_db_settings.py does: a query the router did not choose fails.

    DJANGO_SETTINGS_MODULE=tests.settings_multidb .venv/bin/python -m pytest -p no:cacheprovider

SQLite in memory; with DATABASE_URL (postgres://…) both databases are on that server, as
test_multidb_primary and test_multidb_sessions. tests/conftest.py lets every test use both.
"""

from __future__ import annotations

import dj_database_url

from example_project.settings import *  # noqa: F403

_SERVER = dj_database_url.config(default="sqlite://:memory:", conn_max_age=0)


def _database(name: str) -> dict[str, object]:
    # No TEST["DEPENDENCIES"]: Django's default, ["default"], would wait for a database never created.
    if _SERVER["ENGINE"] == "django.db.backends.sqlite3":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "TEST": {"DEPENDENCIES": []}}
    return {**_SERVER, "TEST": {"NAME": f"test_multidb_{name}", "DEPENDENCIES": []}}


DATABASES = {
    # Django's dummy backend: any query on it raises ImproperlyConfigured.
    "default": {},
    "primary": _database("primary"),
    "sessions": _database("sessions"),
}
DATABASE_ROUTERS = ["tests.db_router.Router"]

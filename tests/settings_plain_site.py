"""A site as the README installs it: DOT's model settings (``OAUTH2_PROVIDER_*_MODEL``) left out.

The example project spells them out for ``makemigrations``; a site does not, and Django's
migration writer still names them (``settings.OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL``) in a
generated migration. ``tests/test_migrations_plain_site.py`` migrates under these settings.
"""

from example_project.settings import *  # noqa: F403

for _name in ("APPLICATION", "ACCESS_TOKEN", "REFRESH_TOKEN", "ID_TOKEN", "GRANT"):
    del globals()[f"OAUTH2_PROVIDER_{_name}_MODEL"]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

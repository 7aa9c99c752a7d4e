from __future__ import annotations

import shlex
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from example_project.demo import data
from example_project.demo.login import authorization_code_login


class Command(BaseCommand):
    help = (
        "Log a demo user in to the portal through the real authorization code flow (PKCE) "
        'and print the tokens as shell variables: eval "$(python manage.py demo_login end-user)".'
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username", choices=[user.username for user in data.USERS])
        parser.add_argument("--prefix", default="", help="prefix of the variable names, e.g. ACTOR_")

    def handle(self, *args: Any, username: str, prefix: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username}; run `manage.py seed_demo` first.")
        try:
            token = authorization_code_login(user)
        except RuntimeError as exc:
            # Most often the database was seeded for another origin than this process's.
            raise CommandError(
                f"{exc}. The portal's redirect URI here is {data.PORTAL_REDIRECT_URI}: run "
                "`manage.py seed_demo` and this command with the server's DEMO_ORIGIN."
            ) from exc
        # The user id is what the user_id subject token type carries (impersonation by user id).
        self.stdout.write(f"export {prefix}USER_ID={shlex.quote(str(user.pk))}")
        for name in ("access_token", "id_token", "refresh_token"):
            if name in token:
                self.stdout.write(f"export {prefix}{name.upper()}={shlex.quote(token[name])}")

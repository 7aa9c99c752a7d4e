from __future__ import annotations

import base64
import hashlib
import secrets
import shlex
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.core.management.base import BaseCommand, CommandError
from django.test import Client

from example_project.demo import data


class Command(BaseCommand):
    help = (
        "Log a demo user in to the portal through the real authorization code flow (PKCE) "
        "and print the tokens as shell variables: eval \"$(python manage.py demo_login end-user)\"."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username", choices=[user.username for user in data.USERS])
        parser.add_argument("--prefix", default="", help="prefix of the variable names, e.g. ACTOR_")

    def handle(self, *args: Any, username: str, prefix: str, **options: Any) -> None:
        password = next(user.password for user in data.USERS if user.username == username)
        browser = Client()
        if not browser.login(username=username, password=password):
            raise CommandError(f"Cannot log in as {username}; run `manage.py seed_demo` first.")
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = [
            ("response_type", "code"),
            ("client_id", data.PORTAL_CLIENT_ID),
            ("redirect_uri", data.PORTAL_REDIRECT_URI),
            ("scope", data.LOGIN_SCOPE),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("resource", data.AGGREGATES_URI),
            ("resource", data.SETTINGS_URI),
        ]
        response = browser.get("/o/authorize/?" + urlencode(query))
        location = response.headers.get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        if not code:
            raise CommandError(f"The authorization request failed: {response.status_code} {location}")
        token = browser.post(
            "/o/token/",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": data.PORTAL_REDIRECT_URI,
                "code_verifier": verifier,
                "client_id": data.PORTAL_CLIENT_ID,
                "client_secret": data.PORTAL_SECRET,
            },
        ).json()
        if "access_token" not in token:
            raise CommandError(f"The token request failed: {token}")
        for name in ("access_token", "id_token", "refresh_token"):
            if name in token:
                self.stdout.write(f"export {prefix}{name.upper()}={shlex.quote(token[name])}")

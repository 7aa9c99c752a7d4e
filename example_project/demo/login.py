"""Log a user in to the portal through the real authorization code flow (with PKCE)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client

from example_project.demo import data


def authorization_code_login(
    user: AbstractBaseUser,
    *,
    client_id: str = data.PORTAL_CLIENT_ID,
    client_secret: str = data.PORTAL_SECRET,
    redirect_uri: str = data.PORTAL_REDIRECT_URI,
    scope: str = data.LOGIN_SCOPE,
    resources: Sequence[str] = (data.AGGREGATES_URI, data.SETTINGS_URI),
) -> dict[str, Any]:
    """Return the token response the client gets at the end of a code flow for ``user``."""
    browser = Client()
    browser.force_login(user)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        *(("resource", resource) for resource in resources),
    ]
    response = browser.get("/o/authorize/?" + urlencode(query))
    location = response.headers.get("Location", "")
    code = parse_qs(urlsplit(location).query).get("code", [""])[0]
    if not code:
        raise RuntimeError(f"authorization failed: {response.status_code} {location}")
    token: dict[str, Any] = browser.post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": client_id,
            "client_secret": client_secret,
        },
    ).json()
    if "access_token" not in token:
        raise RuntimeError(f"token request failed: {token}")
    return token

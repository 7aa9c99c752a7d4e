"""The organization of ZITADEL's token exchange guide, as demo data."""

from __future__ import annotations

from dataclasses import dataclass

PORTAL_CLIENT_ID = "portal"
PORTAL_SECRET = "portal-secret"
PORTAL_REDIRECT_URI = "http://127.0.0.1:8000/portal/callback/"
AGGREGATES_URI = "https://aggregates.example.com/"
SETTINGS_URI = "https://settings.example.com/"
LOGIN_SCOPE = "openid profile email offline_access read write"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    first_name: str
    last_name: str
    is_staff: bool = False
    is_superuser: bool = False


USERS = (
    DemoUser("end-user", "end-user-password", "end", "user"),
    DemoUser("support", "support-password", "support", "agent", is_staff=True),
    DemoUser("admin", "admin-password", "instance", "admin", is_staff=True, is_superuser=True),
)
APIS = (("aggregates", "aggregates-secret"), ("settings", "settings-secret"))

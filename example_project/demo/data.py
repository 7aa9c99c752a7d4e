"""The organization of ZITADEL's token exchange guide, as demo data."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from example_project import partner_idp

PORTAL_CLIENT_ID = "portal"
PORTAL_SECRET = "portal-secret"
# On the demo's own server (settings.DEMO_ORIGIN, `make demo PORT=…`): seed_demo stores these
# and demo_login sends them, so both must run with the server's DEMO_ORIGIN.
PORTAL_REDIRECT_URI = f"{settings.DEMO_ORIGIN}/portal/callback/"
AGGREGATES_URI = "https://aggregates.example.com/"
SETTINGS_URI = "https://settings.example.com/"
# The portal's single-page app: a public client (PKCE, no secret) that support users impersonate
# customers into from the admin. It cannot use token exchange; it never needs to.
PORTAL_SPA_CLIENT_ID = "portal-spa"
PORTAL_SPA_URL = f"{settings.DEMO_ORIGIN}/portal/"
LOGIN_SCOPE = "openid profile email offline_access read write"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    first_name: str
    last_name: str
    is_staff: bool = False
    is_superuser: bool = False
    organization: str | None = None
    # (role, organization or None for the whole instance), as in the guide's role table.
    impersonator: tuple[str, str | None] | None = None


ORGANIZATION = "ACME"

USERS = (
    DemoUser("end-user", "end-user-password", "end", "user", organization=ORGANIZATION),
    # ORG_END_USER_IMPERSONATOR of ACME, as in the guide.
    DemoUser(
        "support",
        "support-password",
        "support",
        "agent",
        is_staff=True,
        organization=ORGANIZATION,
        impersonator=("end_user_impersonator", ORGANIZATION),
    ),
    # IAM_ADMIN_IMPERSONATOR: the only kind of grant that lets a superuser impersonate a superuser.
    DemoUser(
        "admin",
        "admin-password",
        "instance",
        "admin",
        is_staff=True,
        is_superuser=True,
        impersonator=("admin_impersonator", None),
    ),
)
APIS = (("aggregates", "aggregates-secret"), ("settings", "settings-secret"))
# The resource indicator each API serves: it may introspect the tokens meant for it.
API_RESOURCES = {"aggregates": AGGREGATES_URI, "settings": SETTINGS_URI}

# Another identity provider, whose users bring their tokens here: the partner's OpenID provider
# (`make partner-idp`, example_project/partner_idp) at PARTNER_ORIGIN, port 8002 on loopback
# unless that variable names another. Its ID tokens name its client partner-app; the tokens
# issued here for its tokens serve the portal or the aggregates API, with openid and read at most.
PARTNER_NAME = "Partner IdP"
PARTNER_ORIGIN = partner_idp.default_issuer()
PARTNER_AUDIENCES = [partner_idp.PARTNER_APP.client_id]
PARTNER_SCOPE = "openid read"
PARTNER_RESOURCES = [AGGREGATES_URI]
# Its user alice is the demo's end user.
PARTNER_SUBJECT = "alice"
PARTNER_USER = USERS[0].username

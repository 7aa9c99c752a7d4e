from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand
from django.db import router, transaction
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data
from token_exchange.constants import INTROSPECT_AUDIENCE
from token_exchange.models import (
    ClientPolicy,
    FederatedIdentity,
    ImpersonatorGrant,
    SecuritySettings,
    TrustedIssuer,
)

SUPPORT_PERMISSIONS = ("view_user", "view_auditevent", "view_impersonationsession")


def trust_partner_idp(issuer: str = data.PARTNER_ORIGIN) -> TrustedIssuer:
    """The partner's OpenID provider at ``issuer`` (`make partner-idp`), trusted for the portal:
    its ID tokens and JWT access tokens as subject tokens, and its JWTs (an access token for this
    server) as JWT authorization grants. Its user alice is the end user. Needs the portal and the
    end user; idempotent, like the rest of the demo data."""
    trust, _ = TrustedIssuer.objects.update_or_create(
        issuer=issuer,
        defaults={
            "name": data.PARTNER_NAME,
            "enabled": True,
            # Where oidc-provider publishes its keys (its discovery document's jwks_uri).
            "jwks_uri": f"{issuer}/jwks",
            "jwks": None,
            "algorithms": ["RS256"],
            "audiences": data.PARTNER_AUDIENCES,
            "accept_id_tokens": True,
            "accept_access_tokens": True,
            "accept_jwts": True,
            "scope": data.PARTNER_SCOPE,
            "resources": data.PARTNER_RESOURCES,
        },
    )
    policy = ClientPolicy.objects.get(application__client_id=data.PORTAL_CLIENT_ID)
    policy.trusted_issuers.add(trust)
    policy.jwt_bearer_enabled = True
    policy.save()
    FederatedIdentity.objects.update_or_create(
        issuer=trust,
        subject=data.PARTNER_SUBJECT,
        defaults={"user": get_user_model().objects.get(username=data.PARTNER_USER)},
    )
    return trust


class Command(BaseCommand):
    help = "Create the demo organization (portal, aggregates, settings, users) and print the credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        # One transaction on the tokens' database: "default" unless a router says otherwise.
        with transaction.atomic(using=router.db_for_write(get_application_model())):
            self.seed()

    def seed(self) -> None:
        User = get_user_model()
        Application = get_application_model()
        for spec in data.USERS:
            user, _ = User.objects.update_or_create(
                username=spec.username,
                defaults={
                    "first_name": spec.first_name,
                    "last_name": spec.last_name,
                    "email": f"{spec.username}@example.com",
                    "is_staff": spec.is_staff,
                    "is_superuser": spec.is_superuser,
                    "is_active": True,
                },
            )
            user.set_password(spec.password)
            user.save()
            if spec.is_staff and not spec.is_superuser:
                # Support staff find customers in the admin (view only) to impersonate them.
                user.user_permissions.add(*Permission.objects.filter(codename__in=SUPPORT_PERMISSIONS))
            organization = None
            if spec.organization is not None:
                organization, _ = Group.objects.get_or_create(name=spec.organization)
                user.groups.add(organization)
            ImpersonatorGrant.objects.filter(user=user).delete()
            if spec.impersonator is not None:
                role, scope = spec.impersonator
                ImpersonatorGrant.objects.create(
                    user=user,
                    role=role,
                    organization=Group.objects.get(name=scope) if scope is not None else None,
                )

        portal, _ = Application.objects.update_or_create(
            client_id=data.PORTAL_CLIENT_ID,
            defaults={
                "name": "portal",
                "client_type": Application.CLIENT_CONFIDENTIAL,
                "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
                "redirect_uris": data.PORTAL_REDIRECT_URI,
                "algorithm": Application.RS256_ALGORITHM,
                "skip_authorization": True,
                "client_secret": data.PORTAL_SECRET,
                "hash_client_secret": True,
            },
        )
        ClientPolicy.objects.update_or_create(application=portal, defaults={"token_exchange_enabled": True})
        portal_spa, _ = Application.objects.update_or_create(
            client_id=data.PORTAL_SPA_CLIENT_ID,
            defaults={
                "name": "portal (single-page app)",
                "client_type": Application.CLIENT_PUBLIC,
                "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
                "redirect_uris": data.PORTAL_SPA_URL,
                "algorithm": Application.RS256_ALGORITHM,
                "skip_authorization": True,
                "client_secret": "",
            },
        )
        ClientPolicy.objects.update_or_create(
            application=portal_spa,
            defaults={
                "token_exchange_enabled": False,
                "admin_impersonation_enabled": True,
                "launch_url": data.PORTAL_SPA_URL,
            },
        )
        for name, secret in data.APIS:
            api, _ = Application.objects.update_or_create(
                client_id=name,
                defaults={
                    "name": name,
                    "client_type": Application.CLIENT_CONFIDENTIAL,
                    "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
                    "client_secret": secret,
                    "hash_client_secret": True,
                },
            )
            # A resource server introspects the tokens meant for it, and no others.
            ClientPolicy.objects.update_or_create(
                application=api,
                defaults={"introspection": INTROSPECT_AUDIENCE, "resource_uris": [data.API_RESOURCES[name]]},
            )
        # The demo shows impersonation, so it turns the instance switch on (the default is off).
        security = SecuritySettings.load()
        security.allow_impersonation = True
        security.save()
        partner = trust_partner_idp()

        self.stdout.write("Demo data ready.\n")
        self.stdout.write(f"  issuer             {oauth2_settings.OIDC_ISS_ENDPOINT}")
        self.stdout.write(
            f"  client portal      {data.PORTAL_CLIENT_ID} / {data.PORTAL_SECRET} (token exchange on)"
        )
        for name, secret in data.APIS:
            self.stdout.write(
                f"  client {name:<11} {name} / {secret} (introspects tokens for {data.API_RESOURCES[name]})"
            )
        self.stdout.write(f"  client portal-spa  public, PKCE; open {data.PORTAL_SPA_URL}")
        self.stdout.write(
            f"  trusted issuer     {partner.name}, {partner.issuer} (`make partner-idp`): its "
            f"{data.PARTNER_SUBJECT} is {data.PARTNER_USER}"
        )
        indent = " " * 21
        self.stdout.write(f"{indent}(the portal exchanges its tokens, and takes them as JWT grants)")
        if not settings.DEBUG and partner.jwks_uri.startswith("http:"):
            # Plain http on loopback: fetched by `make demo`'s development server only
            # (FEDERATION_ALLOW_HTTP_LOOPBACK, settings.py); served as a deployment, never.
            self.stdout.write(f"{indent}(not with DEBUG off: its keys at {partner.jwks_uri} are plain http)")
        for spec in data.USERS:
            roles = ""
            if spec.impersonator is not None:
                role, scope = spec.impersonator
                roles = f" ({role}, {scope or 'whole instance'})"
            self.stdout.write(f"  user   {spec.username:<11} password {spec.password}{roles}")
        self.stdout.write("  Allow impersonation: on (turn it off under Admin > Security settings)")

"""Models of the token exchange app.

``SecuritySettings``, ``ClientPolicy``, ``ClientKey``, ``TrustedIssuer``, ``FederatedIdentity``,
``ImpersonatorGrant``, ``ImpersonationSession`` and ``AuditEvent`` are public API.
``ExchangedToken`` keeps what DOT's token tables have no column for (the RFC 8693 audience, the
``act`` claim, a ``jti``) for every access and refresh token that an exchange, or a refresh of an
exchanged token, issues.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings

from token_exchange import constants
from token_exchange.client_keys import InvalidKey, parse_public_key
from token_exchange.conf import token_exchange_settings
from token_exchange.db.lookups import PreparedLookup
from token_exchange.trusted_issuers import configuration_errors as trusted_issuer_errors

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import ManyRelatedManager


class SecuritySettings(models.Model):
    """Instance-wide switches; exactly one row, read fresh on every request."""

    SINGLETON_PK = 1

    token_exchange_enabled = models.BooleanField(
        _("token exchange enabled"),
        default=True,
        help_text=_(
            "When off, no application can trade a token it holds for another one, whatever its own "
            "policy says: the server answers as if it did not offer token exchange at all. Risk when "
            "on: every application whose policy allows it can turn the tokens it holds into new tokens "
            "for other services."
        ),
    )
    allow_impersonation = models.BooleanField(
        _("allow impersonation"),
        default=False,
        help_text=_(
            "Risk when on: users holding an impersonator role can sign in to applications as other "
            "users, without their password, and do whatever those users can do there. The "
            "applications are told who is really acting, and every such sign-in is recorded in the "
            "audit events. When off, nobody can start acting as another user, and those already "
            "doing so lose access at their next renewal."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("security settings")
        verbose_name_plural = _("security settings")

    def __str__(self) -> str:
        return str(_("Security settings"))

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("SecuritySettings is a singleton and cannot be deleted.")

    @classmethod
    def load(cls) -> SecuritySettings:
        """Return the one row, creating it with the defaults on first use.

        No per-process cache: a change in the admin takes effect on the next request in every
        process, at the price of one primary-key lookup per token request (none when the
        client was read ``with_security_settings``).
        """
        row = _SECURITY_SETTINGS.get(cls.SINGLETON_PK)
        if row is None:
            row, _created = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return row

    @classmethod
    def with_security_settings(cls, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """``queryset`` (of clients, say) with the row's columns as annotations: read in the same
        statement instead of one of their own. ``of`` gives them back as the row."""
        row = cls.objects.filter(pk=cls.SINGLETON_PK)
        annotated: QuerySet[Any] = queryset.annotate(
            **{
                _ANNOTATION + field.attname: Subquery(row.values(field.attname)[:1])
                for field in cls._meta.concrete_fields
            }
        )
        return annotated

    @classmethod
    def of(cls, obj: Any) -> SecuritySettings:
        """The row read along with ``obj`` by ``with_security_settings``; otherwise (another
        path read ``obj``, or the row does not exist yet) the row itself, by ``load``."""
        fields = [field.attname for field in cls._meta.concrete_fields]
        values = [getattr(obj, _ANNOTATION + name, None) for name in fields]
        if any(value is None for value in values):
            return cls.load()
        return cls.from_db(obj._state.db, fields, values)


_SECURITY_SETTINGS = PreparedLookup(lambda: SecuritySettings.objects.all(), "pk")

# The annotations ``with_security_settings`` adds (they never clash with a client's own fields).
_ANNOTATION = "token_exchange_security_settings_"


class ClientPolicy(models.Model):
    """What one DOT application may do with token exchange. No row means: nothing."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="token_exchange_policy",
        verbose_name=_("application"),
    )
    token_exchange_enabled = models.BooleanField(
        _("token exchange enabled"),
        default=False,
        help_text=_(
            "Allow this client to use the urn:ietf:params:oauth:grant-type:token-exchange grant. "
            "Enable it only for confidential clients you trust with every token they hold."
        ),
    )
    admin_impersonation_enabled = models.BooleanField(
        _("support users may impersonate into it"),
        default=False,
        help_text=_(
            "Offer this application under Impersonate on a user's admin page. The support user's "
            "session at this server then signs in to it as the customer, with an act claim."
        ),
    )
    admin_impersonation_scope = models.CharField(
        _("scope of admin-started impersonations"),
        max_length=255,
        default=constants.ADMIN_IMPERSONATION_DEFAULT_SCOPE,
        help_text=_(
            "Space-separated scopes a support user's sign-in as a customer may obtain in this "
            "application; anything else the application asks for is left out. Add offline_access "
            "only if the application needs refresh tokens while support acts."
        ),
    )
    introspection = models.CharField(
        _("introspection"),
        max_length=16,
        choices=[
            ("", _("Not allowed")),
            (constants.INTROSPECT_AUDIENCE, _("Tokens meant for this client")),
            (constants.INTROSPECT_ANY, _("Any token")),
        ],
        default="",
        blank=True,
        help_text=_(
            "Whether this client may ask /o/introspect/ about tokens (RFC 7662). Tokens meant for "
            "it: those whose audience names its client_id or one of its resource URIs. Any token: "
            "only for a gateway you trust with every user's token. Public clients never may."
        ),
    )
    resource_uris = models.JSONField(
        _("resource URIs"),
        default=list,
        blank=True,
        help_text=_(
            "The RFC 8707 resource indicators this client serves as a resource server, as a JSON "
            'list of absolute URIs (["https://api.example.com/"]). Tokens whose audience names one '
            "of them are meant for it."
        ),
    )
    trusted_issuers: models.ManyToManyField[TrustedIssuer, Any] = models.ManyToManyField(
        "TrustedIssuer",
        blank=True,
        related_name="client_policies",
        verbose_name=_("trusted issuers"),
        help_text=_(
            "Identity providers whose tokens this client may present: as the subject_token of a "
            "token exchange, and (with the JWT authorization grant enabled) as an assertion. "
            "None: this client presents tokens of this server only."
        ),
    )
    jwt_bearer_enabled = models.BooleanField(
        _("JWT authorization grant enabled"),
        default=False,
        help_text=_(
            "Allow this client to use urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523) with "
            "assertions from its trusted issuers."
        ),
    )
    launch_url = models.URLField(
        _("launch URL"),
        blank=True,
        help_text=_(
            "Where the application starts a sign-in (OpenID Connect third-party initiated login, "
            "initiate_login_uri). It receives iss and login_hint, never a token. HTTPS, or http on "
            "localhost."
        ),
    )

    class Meta:
        verbose_name = _("client policy")
        verbose_name_plural = _("client policies")
        ordering = ["application_id"]

    def __str__(self) -> str:
        return str(_("Token exchange policy of %(application)s") % {"application": self.application})

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        application = getattr(self, "application", None)
        if (
            self.token_exchange_enabled
            and application is not None
            and application.client_type != application.CLIENT_CONFIDENTIAL
        ):
            errors["token_exchange_enabled"] = _(
                "A public client cannot use token exchange: it has no secret, so anyone who finds one "
                "of its tokens and its client_id could mint new tokens. Admin-started impersonation "
                "works for public clients (single-page and mobile apps) through /o/authorize/."
            )
        if self.admin_impersonation_enabled and not self.launch_url:
            errors["launch_url"] = _("Admin-started impersonation needs the application's launch URL.")
        # Imported here: DOT's validators module reads the application model at import.
        from oauth2_provider.oauth2_validators import is_valid_resource_uri

        uris = self.resource_uris
        if not isinstance(uris, list) or not all(
            isinstance(uri, str) and is_valid_resource_uri(uri) for uri in uris
        ):
            errors["resource_uris"] = _(
                'A JSON list of absolute URIs without a fragment, e.g. ["https://api.example.com/"].'
            )
        elif uris:
            # One resource server per resource URI: a second client claiming it would be handed
            # (and could introspect) every token meant for the first.
            claimed = {
                uri: other
                for other in ClientPolicy.objects.exclude(pk=self.pk).exclude(resource_uris=[])
                for uri in (other.resource_uris if isinstance(other.resource_uris, list) else [])
            }
            taken = sorted(uri for uri in uris if uri in claimed)
            if taken:
                errors["resource_uris"] = _("%(uri)s is already served by %(application)s.") % {
                    "uri": taken[0],
                    "application": claimed[taken[0]].application,
                }
        if self.launch_url and not is_safe_launch_url(self.launch_url):
            errors["launch_url"] = _("The launch URL must use HTTPS (http only on localhost or 127.0.0.1).")
        if errors:
            raise ValidationError(errors)


def is_safe_launch_url(url: str) -> bool:
    """HTTPS, or plain HTTP on a loopback host (RFC 8252 §8.3), with no fragment and no userinfo."""
    parts = urlsplit(url)
    if parts.fragment or parts.username or parts.password or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in {"localhost", "127.0.0.1", "::1"}


class ClientKey(models.Model):
    """A public key a client signs with: its ``client_assertion`` (RFC 7523 §2.2) and its
    self-signed subject JWTs.

    Several keys per client make rotation possible: add the new key, move the client over,
    then deactivate the old one. The server never holds the private key (``createclientkey``
    prints it once). Only asymmetric algorithms: an HMAC key would be a shared secret, and
    ``none`` is no signature at all.
    """

    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="token_exchange_keys",
        verbose_name=_("application"),
    )
    kid = models.CharField(
        _("key ID"),
        max_length=128,
        help_text=_("The JWS kid header that selects this key among the client's keys."),
    )
    public_key = models.TextField(
        _("public key"), help_text=_("PEM-encoded SubjectPublicKeyInfo (-----BEGIN PUBLIC KEY-----).")
    )
    algorithm = models.CharField(
        _("algorithm"),
        max_length=5,
        choices=[(name, name) for name in constants.CLIENT_KEY_ALGORITHMS],
        default="RS256",
    )
    active = models.BooleanField(
        _("active"), default=True, help_text=_("Inactive keys verify nothing; deactivate a key to retire it.")
    )
    expires_at = models.DateTimeField(
        _("expires at"), null=True, blank=True, help_text=_("After this moment the key verifies nothing.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("client key")
        verbose_name_plural = _("client keys")
        ordering = ["application_id", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["application", "kid"], name="te_clientkey_unique_kid"),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.algorithm})"

    def clean(self) -> None:
        try:
            parse_public_key(self.public_key, self.algorithm)
        except InvalidKey as exc:
            raise ValidationError({"public_key": str(exc)}) from exc


def _default_algorithms() -> list[str]:
    return ["RS256"]


class TrustedIssuer(models.Model):
    """An identity provider whose signed JWTs this server accepts, under the rules set here
    (``token_exchange.federation``, docs/federation.md).

    Nothing about a token is trusted beyond these rules: its ``iss`` must be exactly ``issuer``,
    its key must be one of this issuer's (never one a token header names), its ``alg`` one of
    ``algorithms``, its ``aud`` one of ``audiences``, its kind one this issuer may present, and
    every ``required_claims`` value must be there. Only clients whose ``ClientPolicy`` names the
    issuer may present its tokens, and only subjects linked to a local user
    (``FederatedIdentity``) are accepted unless the options below say otherwise.
    """

    name = models.CharField(_("name"), max_length=100)
    issuer = models.CharField(
        _("issuer"),
        max_length=255,
        unique=True,
        help_text=_("The exact iss of its tokens, e.g. https://accounts.google.com (compared as is)."),
    )
    enabled = models.BooleanField(
        _("enabled"),
        default=True,
        help_text=_("Off: its tokens are refused, and every token issued here for them is revoked now."),
    )
    jwks_uri = models.URLField(
        _("JWKS URI"),
        max_length=500,
        blank=True,
        help_text=_(
            "Where its public keys are published (HTTPS). Fetched without following redirects, "
            "cached and shared by every process. Leave empty to paste the keys below instead."
        ),
    )
    jwks = models.JSONField(
        _("JWKS"),
        null=True,
        blank=True,
        help_text=_('Its public keys as a JSON Web Key Set ({"keys": [...]}), when it has no JWKS URI.'),
    )
    algorithms = models.JSONField(
        _("algorithms"),
        default=_default_algorithms,
        help_text=_(
            'The JWS algorithms its tokens may use, as a JSON list (["RS256"]). Asymmetric only: '
            "RS*, PS*, ES*."
        ),
    )
    audiences = models.JSONField(
        _("audiences"),
        default=list,
        help_text=_(
            "The aud values its tokens must carry (any one of them) to be accepted here, as a JSON "
            "list: the client_id this site has at that provider (ID tokens), or this server's "
            "resource identifier there (access tokens)."
        ),
    )
    accept_id_tokens = models.BooleanField(
        _("accepts ID tokens"),
        default=False,
        help_text=_("Its OpenID Connect ID tokens (subject_token_type id_token)."),
    )
    accept_access_tokens = models.BooleanField(
        _("accepts JWT access tokens"),
        default=False,
        help_text=_("Its RFC 9068 JWT access tokens (typ at+jwt; subject_token_type access_token)."),
    )
    accept_jwts = models.BooleanField(
        _("accepts other JWTs"),
        default=False,
        help_text=_("Other signed JWTs it issues (subject_token_type jwt, and JWT authorization grants)."),
    )
    max_token_age_seconds = models.PositiveIntegerField(
        _("maximum token age (seconds)"),
        default=3600,
        help_text=_("A token issued (iat) longer ago than this is refused, whatever its exp says."),
    )
    max_token_lifetime_seconds = models.PositiveIntegerField(
        _("maximum token lifetime (seconds)"),
        default=7200,
        help_text=_("A token whose exp is further than this from its iat is refused."),
    )
    required_claims = models.JSONField(
        _("required claims"),
        default=dict,
        blank=True,
        help_text=_(
            'Claims its tokens must carry, each with its allowed values, as a JSON object: {"tid": '
            '["<your tenant id>"]} for Microsoft Entra ID, {"hd": ["example.com"]} for Google. '
            "Compared as strings, exactly. For a multi-tenant provider this is what keeps other "
            "tenants' users out."
        ),
    )
    scope = models.CharField(
        _("scope"),
        max_length=255,
        blank=True,
        help_text=_(
            "The space-separated scopes a token issued here for its tokens may carry, at most (and "
            "never more than the client's). Empty: none, so nothing is issued."
        ),
    )
    resources = models.JSONField(
        _("resources"),
        default=list,
        blank=True,
        help_text=_(
            "Resource URIs of this site that tokens issued for its tokens may be restricted to, "
            "as a JSON list. Empty: they are issued to the requesting client only."
        ),
    )
    match_verified_email = models.BooleanField(
        _("match users by verified email"),
        default=False,
        help_text=_(
            "An unlinked subject whose token says email_verified true is linked to the one active "
            "local user with that email. Only for a provider that verifies emails it does not own."
        ),
    )
    create_users = models.BooleanField(
        _("create users"),
        default=False,
        help_text=_("An unlinked subject that matches nobody becomes a new local user, linked to it."),
    )
    provider_id = models.CharField(
        _("sign-in provider"),
        max_length=200,
        blank=True,
        help_text=_(
            "The id under which the site's own sign-in knows this provider, for a resolver that "
            "reads it (token_exchange.contrib.allauth: django-allauth's provider id, e.g. google)."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    if TYPE_CHECKING:
        client_policies: ManyRelatedManager[ClientPolicy, Any]

    class Meta:
        verbose_name = _("trusted issuer")
        verbose_name_plural = _("trusted issuers")
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(jwks_uri="") & Q(jwks__isnull=False)) | (~Q(jwks_uri="") & Q(jwks__isnull=True)),
                name="token_exchange_trustedissuer_one_key_source",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer})"

    def clean(self) -> None:
        errors = trusted_issuer_errors(self)
        if errors:
            raise ValidationError(errors)


class FederatedIdentity(models.Model):
    """A subject of a trusted issuer, linked to a local user: whom that issuer's tokens about
    ``subject`` (their ``sub``) stand for here."""

    issuer = models.ForeignKey(
        TrustedIssuer, on_delete=models.CASCADE, related_name="identities", verbose_name=_("issuer")
    )
    subject = models.CharField(_("subject"), max_length=255, help_text=_("The sub of its tokens."))

    class LinkedBy(models.TextChoices):
        ADMIN = "admin", _("an admin")
        AUTOMATIC = "automatic", _("automatically, on first use")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="federated_identities",
        verbose_name=_("user"),
    )
    # Staff and superusers are reached only through a link an admin made: an automatic one (a
    # verified email, a created user, a resolver) to a user who is, or becomes, one is refused.
    linked_by = models.CharField(
        _("linked by"), max_length=16, choices=LinkedBy.choices, default=LinkedBy.ADMIN, editable=False
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("linked identity")
        verbose_name_plural = _("linked identities")
        ordering = ["issuer_id", "subject"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="token_exchange_one_link_per_subject")
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer.issuer}"


class ExchangedToken(models.Model):
    """The RFC 8693 claims of one access, refresh or ID token (or authorization code) issued by
    this app.

    DOT's token tables have no column for the exchanged audience, the ``act`` claim or a ``jti``;
    this row keeps them, so that introspection, a later exchange and a refresh all see the same
    values. It dies with its token (``CASCADE``) and never holds a token value. Codes and tokens
    issued while a support user impersonates from the admin also name that ``impersonation``,
    which ends them.
    """

    access_token = models.OneToOneField(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("access token"),
    )
    refresh_token = models.OneToOneField(
        oauth2_settings.REFRESH_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("refresh token"),
    )
    id_token = models.OneToOneField(
        oauth2_settings.ID_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("ID token"),
    )
    grant = models.OneToOneField(
        oauth2_settings.GRANT_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("authorization code"),
    )
    impersonation = models.ForeignKey(
        "ImpersonationSession",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tokens",
        verbose_name=_("impersonation session"),
    )
    jti = models.CharField(_("JWT ID"), max_length=64, unique=True)
    issued_token_type = models.CharField(_("issued token type"), max_length=128)
    audience = models.JSONField(_("audience"), default=list)
    # The part of the audience that DOT's resource servers check (RFC 8707): what the token was
    # restricted to. Empty means unrestricted, as for the subject token it was derived from.
    resource = models.JSONField(_("resource"), default=list)
    act = models.JSONField(_("actor"), null=True, blank=True)
    # The lineage of an exchanged token (``token_exchange.issuance.lineage``): the root authorization it
    # descends from, that is a login's refresh-token family or, without one, its access token
    # itself (the actor's login for an impersonation, the subject's otherwise; the column names
    # are the impersonation's); and the key of the further authorizations it depends on. Not
    # foreign keys that cascade: the row must outlive those tokens to tell that they are gone.
    actor_token_family = models.UUIDField(
        _("actor's refresh token family"), null=True, blank=True, db_index=True, editable=False
    )
    actor_access_token = models.ForeignKey(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("actor's access token"),
    )
    lineage = models.UUIDField(_("older actors' authorizations"), null=True, blank=True, db_index=True)
    # Issued for a trusted issuer's token (token_exchange.federation): the link it was issued
    # under, whose removal (or its issuer's) revokes the token.
    federated_identity = models.ForeignKey(
        FederatedIdentity,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tokens",
        verbose_name=_("linked identity"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("exchanged token")
        verbose_name_plural = _("exchanged tokens")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    access_token__isnull=False, refresh_token__isnull=True, id_token__isnull=True, grant=None
                )
                | Q(access_token__isnull=True, refresh_token__isnull=False, id_token__isnull=True, grant=None)
                | Q(access_token__isnull=True, refresh_token__isnull=True, id_token__isnull=False, grant=None)
                | Q(access_token=None, refresh_token=None, id_token=None, grant__isnull=False),
                name="token_exchange_exchangedtoken_one_of",
            )
        ]

    def __str__(self) -> str:
        return f"{self.issued_token_type} {self.jti}"


class ActorAuthorization(models.Model):
    """One older actor's authorization in the lineage of a nested impersonation.

    An impersonated token names the authorization of its own (outermost) actor in
    ``ExchangedToken.actor_token_family`` / ``actor_access_token``. When an impersonated token is
    impersonated again by a new actor, the tokens issued depend on the older actors'
    authorizations too: they are these rows, shared by every token of that lineage
    (``ExchangedToken.lineage``), written once and never changed.
    """

    lineage = models.UUIDField(_("lineage"), db_index=True)
    actor_token_family = models.UUIDField(
        _("actor's refresh token family"), null=True, blank=True, db_index=True
    )
    actor_access_token = models.ForeignKey(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor's access token"),
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("actor authorization")
        verbose_name_plural = _("actor authorizations")
        ordering = ["lineage", "id"]

    def __str__(self) -> str:
        if self.actor_token_family is not None:
            return f"{self.lineage}: refresh token family {self.actor_token_family}"
        return f"{self.lineage}: access token #{self.actor_access_token_id}"


class ImpersonatorGrant(models.Model):
    """A role that lets ``user`` impersonate others, instance-wide or within one organization.

    ZITADEL's four roles are role by organization: IAM Admin Impersonator is an
    ``ADMIN_IMPERSONATOR`` grant without organization, Org End User Impersonator an
    ``END_USER_IMPERSONATOR`` grant for one organization, and so on. Who is covered by which
    grant is decided in ``token_exchange.impersonation.facts``.
    """

    class Role(models.TextChoices):
        ADMIN_IMPERSONATOR = constants.ADMIN_IMPERSONATOR, _("Admin impersonator")
        END_USER_IMPERSONATOR = constants.END_USER_IMPERSONATOR, _("End user impersonator")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="impersonator_grants",
        verbose_name=_("user"),
    )
    role = models.CharField(_("role"), max_length=32, choices=Role.choices)
    organization = models.ForeignKey(
        token_exchange_settings.ORGANIZATION_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("organization"),
        help_text=_("Empty: every user of the instance. Otherwise only members of this organization."),
    )
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        verbose_name=_("granted by"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("impersonator grant")
        verbose_name_plural = _("impersonator grants")
        ordering = ["user_id", "role", "organization_id"]
        permissions = [
            (
                "grant_any_impersonator_role",
                _("Can grant impersonator roles wider than their own"),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "role", "organization"],
                name="token_exchange_impersonatorgrant_unique",
            ),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=Q(organization__isnull=True),
                name="token_exchange_impersonatorgrant_unique_instance",
            ),
        ]

    def __str__(self) -> str:
        where = self.organization if self.organization_id is not None else _("whole site")
        return f"{self.user} — {self.get_role_display()} ({where})"

    @property
    def zitadel_name(self) -> str:
        """The name a ZITADEL user knows this role by (IAM or Org, Admin or End User Impersonator)."""
        where = "Org" if self.organization_id is not None else "IAM"
        who = "Admin Impersonator" if self.role == self.Role.ADMIN_IMPERSONATOR else "End User Impersonator"
        return f"{where} {who}"


class ImpersonationSession(models.Model):
    """A support user (the actor) acting as a customer (the subject) in one application, started
    from the customer's admin page.

    It lives in the actor's session at this server; while it lasts, that application's sign-ins
    through ``/o/authorize/`` are the subject's, with ``act`` naming the actor. Stop or expiry
    ends it and revokes every code and token issued under it (``ExchangedToken.impersonation``).
    """

    class EndReason(models.TextChoices):
        STOPPED = "stopped", _("Stopped")
        EXPIRED = "expired", _("Expired")
        REPLACED = "replaced", _("Replaced by another impersonation")
        REFUSED = "refused", _("No longer allowed")

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("actor")
    )
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", verbose_name=_("subject")
    )
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("application"),
    )
    reason = models.TextField(_("reason"))
    # The actor's browser session at this server, which the impersonation lives in: when that
    # session ends (logout, a login as someone else, flush, expiry, password change) so does the
    # impersonation. Never shown, never audited: like django_session's key, it is a credential.
    session_key = models.CharField(_("session key"), max_length=255, blank=True, editable=False)
    session_auth_hash = models.CharField(_("session auth hash"), max_length=128, blank=True, editable=False)
    scope = models.CharField(_("scope"), max_length=255, blank=True)
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    end_reason = models.CharField(_("end reason"), max_length=16, choices=EndReason.choices, blank=True)

    class Meta:
        verbose_name = _("impersonation session")
        verbose_name_plural = _("impersonation sessions")
        ordering = ["-started_at", "-id"]
        indexes = [
            # A login ends the running impersonations bound to the browser's previous session key.
            models.Index(
                fields=["session_key"], condition=Q(ended_at__isnull=True), name="te_impsession_running_key"
            ),
        ]

    def __str__(self) -> str:
        return str(
            _("%(actor)s as %(subject)s in %(application)s")
            % {"actor": self.actor, "subject": self.subject, "application": self.application}
        )

    def is_active(self, now: datetime.datetime | None = None) -> bool:
        return self.ended_at is None and self.expires_at > (now or timezone.now())


class AuditEvent(models.Model):
    """One row per impersonated token, per exchange and per refused exchange, per impersonation
    started or ended from the admin, per cascade of revoked tokens, per throttled client, and per
    change of the security settings, impersonator grants, client keys, client policies and the
    security-relevant fields of applications. Never updated.

    The foreign keys are ``SET_NULL`` so that rows outlive the users and applications they
    name; their ids are also copied into ``payload`` so a row stays readable afterwards.
    ``payload`` never holds a token, only token ids (``jti``).
    """

    class EventType(models.TextChoices):
        USER_IMPERSONATED = "user.impersonated", _("User impersonated")
        TOKEN_EXCHANGED = "token.exchanged", _("Token exchanged")
        TOKEN_EXCHANGE_REFUSED = "token.exchange_refused", _("Token exchange refused")
        IMPERSONATION_STARTED = "impersonation.started", _("Impersonation started")
        IMPERSONATION_ENDED = "impersonation.ended", _("Impersonation ended")
        SECURITY_SETTINGS_CHANGED = "security_settings.changed", _("Security settings changed")
        IMPERSONATOR_GRANT_CHANGED = "impersonator_grant.changed", _("Impersonator grant changed")
        CLIENT_KEY_CHANGED = "client_key.changed", _("Client key changed")
        CLIENT_POLICY_CHANGED = "client_policy.changed", _("Client policy changed")
        APPLICATION_CHANGED = "application.changed", _("Application changed")
        USER_CHANGED = "user.changed", _("User's powers changed")
        TOKENS_REVOKED = "tokens.revoked", _("Tokens revoked")
        TOKEN_EXCHANGE_THROTTLED = "token.exchange_throttled", _("Token exchange throttled")
        TRUSTED_ISSUER_CHANGED = "trusted_issuer.changed", _("Trusted issuer changed")
        FEDERATED_IDENTITY_CHANGED = "federated_identity.changed", _("Linked identity changed")

    event_type = models.CharField(_("event type"), max_length=64, choices=EventType.choices)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("actor"),
    )
    subject = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("subject"),
    )
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("application"),
    )
    payload = models.JSONField(_("payload"), default=dict)
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="te_audit_created"),
            models.Index(fields=["event_type", "-created_at"], name="te_audit_type_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_event_type_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"

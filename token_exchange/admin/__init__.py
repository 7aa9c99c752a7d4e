"""The admin screens: the instance switches, client policies and keys on DOT's application page,
impersonator grants (own list and on the user page), the audit trail, and impersonating a
customer from the user page.

Two hooks into admins this app does not own:

- DOT's application admin: set ``OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"]`` to
  ``"token_exchange.admin.ApplicationAdmin"`` (check ``token_exchange.W006``).
- The user admin: add ``ImpersonationUserAdminMixin`` to your own user admin, or put
  ``token_exchange.contrib.user_admin`` in ``INSTALLED_APPS`` after ``django.contrib.admin`` to
  have it added to the registered one (check ``token_exchange.W005``). Importing this module
  changes no admin it does not own.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import django
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.core.validators import MaxValueValidator
from django.db import models, router
from django.db.models import Max, Min, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext_lazy as _
from jwcrypto import jwk
from oauth2_provider.admin import ApplicationAdmin as DOTApplicationAdmin
from oauth2_provider.forms import ApplicationForm
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from token_exchange.client_ids import validate_client_id
from token_exchange.conf import token_exchange_settings
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.impersonation import role_grants
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.issuance import audit, change_audit
from token_exchange.models import (
    AuditEvent,
    ClientKey,
    ClientPolicy,
    FederatedIdentity,
    ImpersonationSession,
    ImpersonatorGrant,
    SecuritySettings,
    TrustedIssuer,
)
from token_exchange.policy import Role


def _short_time(moment: datetime.datetime | None) -> str:
    """``12/01/2026 10:16 p.m.`` in the current time zone and locale: narrow list columns."""
    return "—" if moment is None else date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def _change_link(obj: Any) -> str:
    """A link to ``obj``'s admin page, or its name when it has none (or no longer exists)."""
    if obj is None:
        return "—"
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(obj)
    return format_html('<a href="{}">{}</a>', url, obj)


class AuditedChangesMixin:
    """Names the admin user (and their IP) as the actor of the audit rows that ``change_audit``
    writes for changes made by this admin's views: the form and its inlines, deletions and their
    cascades, and bulk actions on the list."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().delete_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().changelist_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]


def _acting(request: HttpRequest) -> Any:
    return change_audit.acting(request.user, client_ip=audit.client_ip(request.META))


# --- Security settings: one page ----------------------------------------------------------------


def breadcrumbs(*trail: tuple[Any, str | None]) -> dict[str, Any]:
    """Context for ``token_exchange/admin/breadcrumbs.html``: each step's label and URL (the page
    itself has none), in the markup of the running admin (Django 6.1 made the trail an ``<ol>``
    of ``<li>``, and its CSS leaves a ``<div>`` unstyled)."""
    return {"trail": list(trail), "trail_as_list": django.VERSION >= (6, 1)}


def app_trail(opts: Any) -> list[tuple[Any, str | None]]:
    """Home and the model's app, the start of every admin trail."""
    return [
        (_("Home"), reverse("admin:index")),
        (opts.app_config.verbose_name, reverse("admin:app_list", kwargs={"app_label": opts.app_label})),
    ]


@admin.register(SecuritySettings)
class SecuritySettingsAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The singleton: no list, no add, no delete; every change is audited."""

    fields = ("token_exchange_enabled", "allow_impersonation", "updated_at")
    readonly_fields = ("updated_at",)
    SWITCHES = ("token_exchange_enabled", "allow_impersonation")
    # Breadcrumbs without the list, which only redirects to the one page.
    change_form_template = "token_exchange/admin/securitysettings_change_form.html"
    object_history_template = "token_exchange/admin/securitysettings_object_history.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        # One row, one page: the list would only ever show a single link to it.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        obj = SecuritySettings.load()
        return HttpResponseRedirect(reverse("admin:token_exchange_securitysettings_change", args=[obj.pk]))

    def _trail(self, *, history_of: Any = None) -> dict[str, Any]:
        """Home, Token exchange, Security settings (, History): the list only redirects here."""
        opts = self.model._meta
        if history_of is None:
            return breadcrumbs(*app_trail(opts), (capfirst(opts.verbose_name), None))
        page = reverse("admin:token_exchange_securitysettings_change", args=[history_of])
        return breadcrumbs(*app_trail(opts), (capfirst(opts.verbose_name), page), (_("History"), None))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        # The title already names it ("Change security settings"); the row's name would repeat it.
        extra_context = {**(extra_context or {}), "subtitle": None, **self._trail()}
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), **self._trail(history_of=object_id)}
        return super().history_view(request, object_id, extra_context)

    def save_model(self, request: HttpRequest, obj: SecuritySettings, form: Any, change: bool) -> None:
        # The admin's change view runs in a transaction: the audit row commits with the change.
        old = SecuritySettings.objects.filter(pk=obj.pk).values(*self.SWITCHES).first() or {}
        super().save_model(request, obj, form, change)
        new = {name: getattr(obj, name) for name in self.SWITCHES}
        if any(old.get(name) != value for name, value in new.items()):
            audit.security_settings_changed(
                user=request.user, old=old, new=new, client_ip=audit.client_ip(request.META)
            )


# --- Applications: the client policy and keys inline on DOT's page ------------------------------


def application_change_permission() -> str:
    """``<app_label>.change_<model>`` of DOT's (swappable) application model."""
    opts = get_application_model()._meta
    return f"{opts.app_label}.change_{opts.model_name}"


def may_change_applications(user: Any) -> bool:
    return bool(user.has_perm(application_change_permission()))


class NeedsApplicationChange:
    """A client's keys and token exchange policy are credentials and powers of that client:
    whoever adds, changes (activates) or deletes them must also hold the right to change the
    application. ``add_clientkey`` alone would otherwise let a staff user add a key to any client
    and authenticate as it with ``private_key_jwt``; ``change_clientpolicy`` alone, let them
    switch on token exchange, impersonation or introspection of every token for it."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(super().has_add_permission(request, *args)) and may_change_applications(request.user)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(super().has_change_permission(request, obj)) and may_change_applications(request.user)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(super().has_delete_permission(request, obj)) and may_change_applications(request.user)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "application" and not may_change_applications(request.user):
            kwargs["queryset"] = get_application_model()._default_manager.none()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Checked again where it is carried out: a view that forgot a permission check must
        # still not store a credential.
        if not may_change_applications(request.user):
            raise PermissionDenied
        super().save_model(request, obj, form, change)  # type: ignore[misc]


# Django 5 warns that forms.URLField will assume https:// from 6.0; say so now.
_URL_FIELDS: dict[Any, dict[str, Any]] = {models.URLField: {"assume_scheme": "https"}}


class ClientPolicyInline(NeedsApplicationChange, admin.StackedInline):  # type: ignore[type-arg]
    model = ClientPolicy
    formfield_overrides = _URL_FIELDS
    can_delete = False
    max_num = 1
    fields = (
        "token_exchange_enabled",
        "admin_impersonation_enabled",
        "launch_url",
        "trusted_issuers",
        "jwt_bearer_enabled",
    )
    filter_horizontal = ("trusted_issuers",)
    verbose_name = _("token exchange policy")
    verbose_name_plural = _("token exchange policy")


def describe_public_key(pem: str) -> str | None:
    """A one-line summary of a PEM public key, ``RSA 2048 · SHA-256 thumbprint 3n4Bx…``, or
    ``None`` if it is not one (a private key included).

    The thumbprint is RFC 7638's, the ``kid`` that ``createclientkey`` gives a key.
    """
    data = pem.strip().encode("ascii", "replace")
    if not data or b"PRIVATE KEY" in data:
        return None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"EC {key.curve.name}"
    else:
        return None
    thumbprint = jwk.JWK.from_pyca(key).thumbprint()
    return str(
        _("%(kind)s · SHA-256 thumbprint %(thumbprint)s…") % {"kind": kind, "thumbprint": thumbprint[:12]}
    )


class PublicKeyWidget(forms.Textarea):
    """A registered key folds its PEM into a ``<details>`` under a one-line summary; a new or
    unreadable one stays an open, narrow textarea."""

    template_name = "token_exchange/admin/widgets/public_key.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(
            {"rows": 4, "cols": 34, "spellcheck": "false", "class": "token-exchange-pem", **(attrs or {})}
        )

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"]["summary"] = describe_public_key(value) if isinstance(value, str) else None
        return context


class ClientKeyInline(NeedsApplicationChange, admin.TabularInline):  # type: ignore[type-arg]
    """Public keys only; ``manage.py createclientkey`` makes a pair and prints the private key.

    Narrow enough for DOT's application page at 1280 px: short key id and date inputs, and the
    PEM folded away once the key is registered.
    """

    model = ClientKey
    extra = 0
    fields = ("kid", "algorithm", "public_key", "active", "expires_at", "created_at")
    readonly_fields = ("created_at",)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "public_key":
            kwargs["widget"] = PublicKeyWidget()
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "kid" and field is not None:
            field.widget.attrs.update({"size": 14, "class": ""})
        return field


class ApplicationAdminForm(ApplicationForm):  # type: ignore[misc]
    """DOT's form, refusing a client ID that could pass for a resource indicator (an absolute
    URI: ``client_ids``). Checked when the ID is set or changed: an existing one is reported by
    the system check and does not block unrelated edits of its application."""

    def clean_client_id(self) -> Any:
        value = self.cleaned_data.get("client_id")
        # Against the stored value, not changed_data: a field with a callable default compares
        # with a hidden initial input the browser posts back, which a client may leave out.
        if value and (self.instance.pk is None or value != self.instance.client_id):
            validate_client_id(value)
        return value


class ApplicationAdmin(AuditedChangesMixin, DOTApplicationAdmin):  # type: ignore[misc]
    """DOT's application admin with the token exchange policy and the client keys inline, and
    the client_id and whether token exchange is on in the list. Changes of its security-relevant
    fields, keys and policy are audited (``change_audit``) with the admin user as actor.

    ``OAUTH2_PROVIDER = {"APPLICATION_ADMIN_CLASS": "token_exchange.admin.ApplicationAdmin"}``
    """

    form = ApplicationAdminForm

    inlines = [*DOTApplicationAdmin.inlines, ClientPolicyInline, ClientKeyInline]
    # What staff look for first, narrow enough beside DOT's filters at 1280 px; DOT's other
    # columns (owner, registration source) are its filters and on each application's page.
    list_display = ("name", "client_id_column", "token_exchange", "client_type", "authorization_grant_type")
    # The policy comes with each row: no query per row.
    list_select_related = ("token_exchange_policy",)

    @admin.display(description=_("client ID"), ordering="client_id")
    def client_id_column(self, obj: Any) -> str:
        # Generated client IDs are 40 characters without a space: let them wrap.
        return format_html('<span style="word-break: break-all">{}</span>', obj.client_id)

    @admin.display(
        description=_("token exchange"),
        boolean=True,
        ordering="token_exchange_policy__token_exchange_enabled",
    )
    def token_exchange(self, obj: Any) -> bool:
        policy = getattr(obj, "token_exchange_policy", None)  # none: the client may not exchange
        return bool(policy is not None and policy.token_exchange_enabled)


@admin.register(ClientKey)
class ClientKeyAdmin(AuditedChangesMixin, NeedsApplicationChange, admin.ModelAdmin):  # type: ignore[type-arg]
    # Key IDs are often 43-character thumbprints: they wrap, and the times are short.
    list_display = ("key_id", "application", "algorithm", "active", "expires", "created")
    list_filter = ("algorithm", "active")
    search_fields = ("kid", "application__client_id", "application__name")
    raw_id_fields = ("application",)
    readonly_fields = ("created_at",)
    list_select_related = ("application",)

    @admin.display(description=_("key ID"), ordering="kid")
    def key_id(self, obj: ClientKey) -> str:
        return format_html('<span style="word-break: break-all">{}</span>', obj.kid)

    @admin.display(description=_("expires at"), ordering="expires_at")
    def expires(self, obj: ClientKey) -> str:
        return _short_time(obj.expires_at)

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, obj: ClientKey) -> str:
        return _short_time(obj.created_at)


@admin.register(ClientPolicy)
class ClientPolicyAdmin(AuditedChangesMixin, NeedsApplicationChange, admin.ModelAdmin):  # type: ignore[type-arg]
    formfield_overrides = _URL_FIELDS
    list_display = ("application", "token_exchange_enabled", "admin_impersonation_enabled", "launch_url")
    list_filter = ("token_exchange_enabled", "admin_impersonation_enabled", "jwt_bearer_enabled")
    raw_id_fields = ("application",)
    filter_horizontal = ("trusted_issuers",)


# --- Trusted issuers and linked identities (token_exchange.federation) ----------------------------


class SuperusersDecideTrust:
    """Trusting an issuer, or linking one of its subjects to a user, hands out sign-ins as that
    user: only superusers add, change or delete them, whatever model permissions say (staff with
    ``add_federatedidentity`` alone could otherwise link their own account somewhere to a
    superuser). Others with the view permission see them."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)


class FederatedIdentityInline(SuperusersDecideTrust, admin.TabularInline):  # type: ignore[type-arg]
    model = FederatedIdentity
    fields = ("subject", "user", "linked_by", "created_at")
    readonly_fields = ("linked_by", "created_at")
    raw_id_fields = ("user",)
    extra = 0
    verbose_name = _("linked identity")
    verbose_name_plural = _("linked identities: its subjects, and who they are here")


class OptionalJSONField(forms.JSONField):
    """A JSON field shown empty when it holds nothing (Django shows ``null``)."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class TrustedIssuerForm(forms.ModelForm):  # type: ignore[type-arg]
    jwks_uri = forms.URLField(
        label=_("JWKS URI"),
        required=False,
        max_length=500,
        assume_scheme="https",
        widget=forms.URLInput(attrs={"size": 80}),
        help_text=TrustedIssuer._meta.get_field("jwks_uri").help_text,
    )
    jwks = OptionalJSONField(
        label=_("JWKS"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text=TrustedIssuer._meta.get_field("jwks").help_text,
    )

    class Meta:
        model = TrustedIssuer
        fields = (
            "name",
            "issuer",
            "enabled",
            "jwks_uri",
            "jwks",
            "algorithms",
            "audiences",
            "accept_id_tokens",
            "accept_access_tokens",
            "accept_jwts",
            "max_token_age_seconds",
            "max_token_lifetime_seconds",
            "required_claims",
            "scope",
            "resources",
            "match_verified_email",
            "create_users",
            "provider_id",
        )
        widgets = {
            "issuer": forms.TextInput(attrs={"size": 80}),
            "scope": forms.TextInput(attrs={"size": 80}),
            **{
                name: forms.Textarea(attrs={"rows": 1, "cols": 80})
                for name in ("algorithms", "audiences", "required_claims", "resources")
            },
        }


@admin.register(TrustedIssuer)
class TrustedIssuerAdmin(SuperusersDecideTrust, AuditedChangesMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    form = TrustedIssuerForm
    formfield_overrides = _URL_FIELDS
    list_display = ("name", "issuer", "enabled", "kinds", "keys", "clients")
    list_filter = ("enabled",)
    search_fields = ("name", "issuer")
    readonly_fields = ("clients", "created_at", "updated_at")
    inlines = [FederatedIdentityInline]
    fieldsets = [
        (None, {"fields": ("name", "issuer", "enabled")}),
        (_("Its keys"), {"fields": ("jwks_uri", "jwks", "algorithms")}),
        (
            _("What its tokens must be"),
            {
                "fields": (
                    "audiences",
                    ("accept_id_tokens", "accept_access_tokens", "accept_jwts"),
                    ("max_token_age_seconds", "max_token_lifetime_seconds"),
                    "required_claims",
                )
            },
        ),
        (_("What is issued for them"), {"fields": ("scope", "resources", "clients")}),
        (_("Unlinked subjects"), {"fields": ("match_verified_email", "create_users", "provider_id")}),
        (None, {"fields": ("created_at", "updated_at")}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TrustedIssuer]:
        return super().get_queryset(request).prefetch_related("client_policies__application")

    @admin.display(description=_("accepts"))
    def kinds(self, obj: TrustedIssuer) -> str:
        kinds = [
            label
            for accepted, label in (
                (obj.accept_id_tokens, _("ID tokens")),
                (obj.accept_access_tokens, _("access tokens")),
                (obj.accept_jwts, _("JWTs")),
            )
            if accepted
        ]
        return ", ".join(str(kind) for kind in kinds) or "—"

    @admin.display(description=_("keys"))
    def keys(self, obj: TrustedIssuer) -> str:
        return obj.jwks_uri or str(_("pasted JWKS"))

    @admin.display(description=_("clients that may present its tokens"))
    def clients(self, obj: TrustedIssuer) -> str:
        names = [str(policy.application) for policy in obj.client_policies.all()]
        return ", ".join(sorted(names)) or str(_("none yet: name it on a client's token exchange policy"))


@admin.register(FederatedIdentity)
class FederatedIdentityAdmin(SuperusersDecideTrust, AuditedChangesMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("subject_column", "issuer_name", "user", "linked_by", "created")
    list_filter = ("issuer",)
    search_fields = ("subject", "issuer__issuer", "user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("linked_by", "created_at")
    list_select_related = ("issuer", "user")

    # Subjects are often opaque 43-character strings (Entra ID's pairwise sub): they wrap.
    @admin.display(description=_("subject"), ordering="subject")
    def subject_column(self, obj: FederatedIdentity) -> str:
        return format_html('<span style="word-break: break-all">{}</span>', obj.subject)

    @admin.display(description=_("issuer"), ordering="issuer__name")
    def issuer_name(self, obj: FederatedIdentity) -> str:
        return obj.issuer.name

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, obj: FederatedIdentity) -> str:
        return _short_time(obj.created_at)


# --- Impersonator grants ------------------------------------------------------------------------


class ImpersonatorRoleColumns:
    """The role in plain words, and whom it lets its holder act as. ZITADEL's name for the role
    (IAM or Org, Admin or End User Impersonator) is only the tooltip, for those who know it."""

    @admin.display(description=_("role"), ordering="role")
    def role_name(self, obj: ImpersonatorGrant) -> str:
        if not obj.role:
            return "—"
        where = obj.organization if obj.organization_id is not None else _("whole site")
        name = f"{obj.get_role_display()} ({where})"
        if not obj.pk:
            return name
        return format_html(
            '<span title="{}">{}</span>', _("ZITADEL: %(name)s") % {"name": obj.zitadel_name}, name
        )

    @admin.display(description=_("may act as"))
    def may_act_as(self, obj: ImpersonatorGrant) -> str:
        if not obj.role:
            return "—"
        admins = obj.role == ImpersonatorGrant.Role.ADMIN_IMPERSONATOR
        if obj.organization_id is None:
            return str(
                _("Every user, administrators included") if admins else _("Every user except administrators")
            )
        if admins:
            return str(
                _("Members of %(organization)s, administrators included") % {"organization": obj.organization}
            )
        return str(
            _("Members of %(organization)s, except administrators") % {"organization": obj.organization}
        )


GRANT_ANY_ROLE = "token_exchange.grant_any_impersonator_role"

_REFUSALS = {
    role_grants.SELF_GRANT: _(
        "Nobody grants, changes or withdraws an impersonator role of their own, superusers "
        "included: ask another administrator."
    ),
    role_grants.WIDER_THAN_OWN: _(
        "This role is wider than any you hold (a stronger kind, the whole site, or an organization "
        "you hold no role in). Granting, changing or withdrawing it needs the permission “Can grant "
        "impersonator roles wider than their own”."
    ),
}


class Grantor:
    """The admin user as a grantor: their own roles and whether they may grant any, read once
    per request (``role_grants`` decides)."""

    def __init__(self, request: HttpRequest) -> None:
        self.user: Any = request.user
        user: Any = self.user
        self.may_grant_any = bool(self.user.is_superuser or self.user.has_perm(GRANT_ANY_ROLE))
        rows = ImpersonatorGrant.objects.filter(user=user).values_list("role", "organization_id")
        self.roles = [Role(role=role, organization=organization) for role, organization in rows]

    @classmethod
    def of(cls, request: HttpRequest) -> Grantor:
        grantor = getattr(request, "_token_exchange_grantor", None)
        if grantor is None:
            grantor = cls(request)
            setattr(request, "_token_exchange_grantor", grantor)  # noqa: B010
        return grantor

    def may_grant_something(self) -> bool:
        return self.may_grant_any or bool(self.roles)

    def refusal(self, *, grantee_id: Any, role: str, organization_id: Any) -> str | None:
        return role_grants.grant_refusal(
            grantor_id=str(self.user.pk),
            grantee_id=None if grantee_id is None else str(grantee_id),
            role=Role(role=role, organization=organization_id),
            grantor_roles=self.roles,
            may_grant_any=self.may_grant_any,
        )

    def refusal_for(self, grant: ImpersonatorGrant) -> str | None:
        """May the grantor change or withdraw ``grant`` as it is stored?"""
        return self.refusal(grantee_id=grant.user_id, role=grant.role, organization_id=grant.organization_id)


class ImpersonatorGrantForm(forms.ModelForm):  # type: ignore[type-arg]
    """Refuses what ``role_grants`` refuses, for the grant as it was and as it becomes, and
    records the admin user as ``granted_by``. Bound to the request by the admin (``grantor``);
    without one it refuses everything."""

    grantor_request: HttpRequest | None = None

    class Meta:
        model = ImpersonatorGrant
        fields = ("user", "role", "organization")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if self.instance.pk is not None and not self.has_changed():
            return cleaned
        if self.grantor_request is None:
            raise ValidationError(_("This form grants roles only in the admin."), code="no_grantor")
        grantor = Grantor.of(self.grantor_request)
        checks = []
        if self.instance.pk is not None:  # as it was: the instance is updated after clean()
            checks.append(grantor.refusal_for(self.instance))
        grantee = cleaned.get("user", getattr(self.instance, "user", None))
        role = cleaned.get("role")
        if role:
            organization = cleaned.get("organization")
            checks.append(
                grantor.refusal(
                    grantee_id=getattr(grantee, "pk", self.instance.user_id),
                    role=role,
                    organization_id=getattr(organization, "pk", None),
                )
            )
        for reason in checks:
            if reason is not None:
                raise ValidationError(_REFUSALS[reason], code=reason)
        return cleaned

    def save(self, commit: bool = True) -> Any:
        if self.grantor_request is not None and (self.instance.pk is None or self.has_changed()):
            self.instance.granted_by_id = self.grantor_request.user.pk
        return super().save(commit)


def _bound_form(form: type[forms.ModelForm], request: HttpRequest) -> Any:  # type: ignore[type-arg]
    return type(form.__name__, (form,), {"grantor_request": request})


@admin.register(ImpersonatorGrant)
class ImpersonatorGrantAdmin(AuditedChangesMixin, ImpersonatorRoleColumns, admin.ModelAdmin):  # type: ignore[type-arg]
    """Four eyes and no wider than one's own (``role_grants``): a grant the admin user may not
    touch is read-only for them, and the form refuses what they may not grant."""

    form = ImpersonatorGrantForm
    list_display = ("user", "role_name", "may_act_as", "created_at")
    list_filter = ("role", "organization")
    list_select_related = ("user", "organization")
    search_fields = (f"user__{get_user_model().USERNAME_FIELD}", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("granted_by", "created_at")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        return _bound_form(super().get_form(request, obj, change, **kwargs), request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and Grantor.of(request).may_grant_something()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        return obj is None or Grantor.of(request).refusal_for(obj) is None

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or Grantor.of(request).refusal_for(obj) is None

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # The bulk "delete selected" action asks for the model's permission only: a grant among
        # the selection that this user may not withdraw makes the whole deletion refused.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        grantor = Grantor.of(request)
        if any(grantor.refusal_for(grant) is not None for grant in objs):
            perms_needed = {*perms_needed, str(ImpersonatorGrant._meta.verbose_name)}
        return deleted, counts, perms_needed, protected

    def save_model(self, request: HttpRequest, obj: ImpersonatorGrant, form: Any, change: bool) -> None:
        # The form decided; the rule is checked again where it is carried out.
        grantor = Grantor.of(request)
        if grantor.refusal(grantee_id=obj.user_id, role=obj.role, organization_id=obj.organization_id):
            raise PermissionDenied
        super().save_model(request, obj, form, change)


class ImpersonatorGrantFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Withdrawing a role (the inline's delete box) follows the same rule as granting it."""

    grantor_request: HttpRequest | None = None

    def clean(self) -> None:
        super().clean()
        if not self.deleted_forms:
            return
        if self.grantor_request is None:
            raise ValidationError(_("This form withdraws roles only in the admin."), code="no_grantor")
        grantor = Grantor.of(self.grantor_request)
        for form in self.deleted_forms:
            if form.instance.pk is not None and (reason := grantor.refusal_for(form.instance)):
                raise ValidationError(_REFUSALS[reason], code=reason)


class ImpersonatorGrantInline(ImpersonatorRoleColumns, admin.TabularInline):  # type: ignore[type-arg]
    """The roles on a user's page: read-only on one's own page (four eyes), and each added,
    changed or withdrawn role checked by ``role_grants``."""

    model = ImpersonatorGrant
    form = ImpersonatorGrantForm
    formset = ImpersonatorGrantFormSet
    fk_name = "user"
    extra = 0
    # Who granted each role is on the grant's own page: the inline stays narrow enough for the
    # user page at 1280 px.
    fields = ("role", "organization", "may_act_as")
    readonly_fields = ("may_act_as",)
    verbose_name = _("impersonator role")
    verbose_name_plural = _("impersonator roles")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ImpersonatorGrant]:
        return super().get_queryset(request).select_related("organization")

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        kwargs["form"] = _bound_form(self.form, request)
        formset = super().get_formset(request, obj, **kwargs)
        return type(formset.__name__, (formset,), {"grantor_request": request})

    @staticmethod
    def _own_page(request: HttpRequest, obj: Any) -> bool:
        return obj is not None and str(obj.pk) == str(request.user.pk)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            super().has_add_permission(request, obj)
            and not self._own_page(request, obj)
            and Grantor.of(request).may_grant_something()
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and not self._own_page(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and not self._own_page(request, obj)


# --- Audit events: read-only, fast on a million rows --------------------------------------------


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most ``LIMIT`` rows: ``COUNT(*)`` over a million audit rows is the slowest part
    of a changelist, and nobody pages past the newest ten thousand matches (filter instead)."""

    LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        return int(object_list[: self.LIMIT].count())


class AuditQuerySet(QuerySet[AuditEvent]):
    """The date hierarchy's periods from ``MIN``/``MAX`` (two index lookups) instead of
    ``SELECT DISTINCT`` over every row; a period without events links to an empty page."""

    def datetimes(self, field_name: str, kind: str, *args: Any, **kwargs: Any) -> Any:
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = (timezone.localtime(bounds[key]) for key in ("first", "last"))
        return list(_periods(first, last, kind))


def _periods(first: datetime.datetime, last: datetime.datetime, kind: str) -> Any:
    """Start of every ``kind`` ("year", "month" or "day") from ``first``'s to ``last``'s."""
    moment = first.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("year", "month"):
        moment = moment.replace(day=1)
    if kind == "year":
        moment = moment.replace(month=1)
    while moment <= last:
        yield moment
        if kind == "year":
            moment = moment.replace(year=moment.year + 1)
        elif kind == "month":
            moment = moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)
        else:
            moment = timezone.localtime(moment + datetime.timedelta(days=1)).replace(hour=0)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Nobody adds, changes or deletes these rows here, superusers included."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone: an audit trail that can be edited proves nothing."""

    # Short times and wrapping reasons: six columns fit beside the filters at 1280 px.
    list_display = ("created", "event_type", "reason", "actor_link", "subject_link", "application_link")
    list_filter = ("event_type", "application", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("actor", "subject", "application")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    paginator = CappedCountPaginator
    search_fields = (
        f"actor__{get_user_model().USERNAME_FIELD}",
        f"subject__{get_user_model().USERNAME_FIELD}",
    )
    search_help_text = _(
        "A username (or part of one) or an email address: events where that user acted or was acted for."
    )
    fields = (
        "created_at",
        "event_type",
        "reason",
        "actor_link",
        "subject_link",
        "application_link",
        "client_ip",
        "pretty_payload",
    )
    readonly_fields = fields
    if hasattr(admin, "ShowFacets"):  # Django 5.0+: never count per filter choice
        show_facets = admin.ShowFacets.NEVER

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return AuditQuerySet(self.model, using=router.db_for_read(self.model)).order_by(*self.ordering)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        """Find the users first (a small table), then their events through the foreign key
        indexes; a join-and-LIKE across a million audit rows would scan them all."""
        term = search_term.strip()
        if not term:
            return queryset, False
        User = get_user_model()
        users = User._default_manager.filter(
            Q(**{f"{User.USERNAME_FIELD}__icontains": term})
            | (Q(email__iexact=term) if hasattr(User, "email") else Q(pk__in=[]))
        ).values_list("pk", flat=True)[:1000]
        ids = list(users)
        return queryset.filter(Q(actor_id__in=ids) | Q(subject_id__in=ids)), False

    @admin.display(description=_("created at"), ordering="created_at")
    def created(self, obj: AuditEvent) -> str:
        return _short_time(obj.created_at)

    @admin.display(description=_("reason"))
    def reason(self, obj: AuditEvent) -> str:
        """Why: a refusal's reason code, the reason a support user gave for an impersonation,
        or how one ended. From the payload; no other column holds it."""
        payload = obj.payload if isinstance(obj.payload, dict) else {}
        if obj.event_type == AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED:
            # The code in words ("actor not impersonator"), so that it wraps; the code itself
            # as the tooltip and in the payload, to match the logs.
            code = str(payload.get("reason") or "")
            return format_html('<span title="{}">{}</span>', code, code.replace("_", " ")) if code else "—"
        if obj.event_type == AuditEvent.EventType.IMPERSONATION_ENDED:
            label = dict(ImpersonationSession.EndReason.choices).get(str(payload.get("end_reason")))
            return str(label) if label else "—"
        given = payload.get("reason") or (payload.get("impersonation") or {}).get("reason")
        return Truncator(str(given)).chars(60) if given else "—"

    @admin.display(description=_("actor"), ordering="actor")
    def actor_link(self, obj: AuditEvent) -> str:
        return _change_link(obj.actor)

    @admin.display(description=_("subject"), ordering="subject")
    def subject_link(self, obj: AuditEvent) -> str:
        return _change_link(obj.subject)

    @admin.display(description=_("application"), ordering="application")
    def application_link(self, obj: AuditEvent) -> str:
        return _change_link(obj.application)

    @admin.display(description=_("payload"))
    def pretty_payload(self, obj: AuditEvent) -> str:
        return format_html(
            '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
            json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False),
        )


@admin.register(ImpersonationSession)
class ImpersonationSessionAdmin(ReadOnlyAdmin):
    """Who impersonated whom, where, why and how long; read-only (the audit trail has the events)."""

    # Five columns that fit beside the filters at 1280 px: the three times are one "status".
    list_display = ("started", "actor", "subject", "application", "status")
    list_filter = ("end_reason", "application")
    list_select_related = ("actor", "subject", "application")
    search_fields = (
        f"actor__{get_user_model().USERNAME_FIELD}",
        f"subject__{get_user_model().USERNAME_FIELD}",
    )
    date_hierarchy = "started_at"

    @admin.display(description=_("started"), ordering="started_at")
    def started(self, obj: ImpersonationSession) -> str:
        return _short_time(obj.started_at)

    @admin.display(description=_("status"), ordering="ended_at")
    def status(self, obj: ImpersonationSession) -> str:
        """Running until when, or how and when it ended ("Stopped …", "Expired …")."""
        if obj.ended_at is not None:
            label = obj.get_end_reason_display() or _("Ended")
            return f"{label} {_short_time(obj.ended_at)}"
        if obj.is_active():
            return str(_("Running until %(time)s") % {"time": _short_time(obj.expires_at)})
        return f"{ImpersonationSession.EndReason.EXPIRED.label} {_short_time(obj.expires_at)}"


# --- The user page: roles inline and "Impersonate" ----------------------------------------------


class ImpersonateForm(forms.Form):
    application: forms.ModelChoiceField[Any] = forms.ModelChoiceField(
        queryset=None,
        empty_label=None,
        label=_("Application"),
        help_text=_("Applications whose client policy allows admin-started impersonation."),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Why you need to act as this user, e.g. the support ticket. Stored in the audit trail."),
    )
    minutes = forms.IntegerField(label=_("Duration (minutes)"), min_value=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        applications: Any = self.fields["application"]
        applications.queryset = impersonation_sessions.launchable_applications()
        longest = max(1, token_exchange_settings.ADMIN_IMPERSONATION_MAX_SECONDS // 60)
        minutes: Any = self.fields["minutes"]
        minutes.validators.append(MaxValueValidator(longest))
        minutes.widget.attrs["max"] = longest
        minutes.initial = min(15, longest)
        minutes.help_text = _("At most %(minutes)s minutes; Stop ends it sooner.") % {"minutes": longest}


class ImpersonationUserAdminMixin:
    """Adds the impersonator roles inline and, for those the impersonation rules allow, an
    "Impersonate" button to a user admin: ``class UserAdmin(ImpersonationUserAdminMixin, ...)``.
    Changes to roles made on the user's page (deleting the user included) are audited with the
    admin user as actor."""

    change_form_template = "token_exchange/admin/user_change_form.html"
    token_exchange_impersonation = True

    # As AuditedChangesMixin's, written out: the mixin stays the only class between the user
    # admin and its extension (token_exchange.contrib.user_admin).
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().delete_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with _acting(request):
            return super().changelist_view(request, *args, **kwargs)  # type: ignore[misc, no-any-return]

    def get_inlines(self, request: HttpRequest, obj: Any) -> Sequence[Any]:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        return [*inlines, ImpersonatorGrantInline] if obj is not None else inlines

    def get_urls(self) -> list[Any]:
        opts = self.model._meta  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.impersonate_view)  # type: ignore[attr-defined]
        return [
            path(
                "<path:object_id>/impersonate/",
                view,
                name=f"{opts.app_label}_{opts.model_name}_impersonate",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def may_impersonate(self, request: HttpRequest, obj: Any) -> bool:
        """The token endpoint's impersonation rules, seeing the user, and somewhere to go."""
        return (
            obj is not None
            and self.has_view_permission(request, obj)  # type: ignore[attr-defined]
            and impersonation_decision.start_refusal(actor=request.user, subject=obj) is None
            and impersonation_sessions.launchable_applications().exists()
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        extra_context = {
            **(extra_context or {}),
            "token_exchange_may_impersonate": self.may_impersonate(request, obj),
        }
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc, no-any-return]

    def impersonate_description(self, subject: Any) -> str:
        return format_html(
            str(
                _(
                    "You will sign in to the application you choose as {user}, without their password. "
                    "You stay logged in here as yourself. The application is told that you are acting for "
                    "them, the reason is kept in the audit events, and Stop (or the end of the duration) "
                    "signs it out."
                )
            ),
            user=format_html("<strong>{}</strong>", subject),
        )

    def impersonate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        subject = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if subject is None:
            raise Http404
        if not self.may_impersonate(request, subject):
            raise PermissionDenied
        form = ImpersonateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            session = impersonation_decision.start(
                request,
                subject=subject,
                application=form.cleaned_data["application"],
                reason=form.cleaned_data["reason"],
                seconds=form.cleaned_data["minutes"] * 60,
            )
            return HttpResponseRedirect(
                impersonation_sessions.launch_url(session, issuer=oauth2_settings.oidc_issuer(request))
            )
        opts = self.model._meta  # type: ignore[attr-defined]
        # Laid out as every admin form: an aligned fieldset of form rows, then the submit row.
        # django-stubs type AdminForm for model forms only; it renders any form.
        plain_form: Any = form
        model_admin: Any = self
        fieldsets: Any = [
            (None, {"fields": list(form.fields), "description": self.impersonate_description(subject)})
        ]
        adminform = helpers.AdminForm(plain_form, fieldsets, {}, model_admin=model_admin)
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": _("Impersonate %(user)s") % {"user": subject},
            "subject": subject,
            "adminform": adminform,
            "errors": helpers.AdminErrorList(plain_form, []),
            "media": self.media + form.media,  # type: ignore[attr-defined]
            "opts": opts,
            **breadcrumbs(
                *app_trail(opts),
                (
                    capfirst(opts.verbose_name_plural),
                    reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
                ),
                (
                    str(subject),
                    reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[subject.pk]),
                ),
                (_("Impersonate"), None),
            ),
        }
        return TemplateResponse(request, "token_exchange/admin/impersonate.html", context)

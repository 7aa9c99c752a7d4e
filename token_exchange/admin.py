"""Minimal admin: the instance switches, the per-client policy, impersonator grants, the audit.

The full admin screens (inlines on DOT's application and the user admin, impersonating from the
admin) are a later milestone; these are what an operator needs to run the grant.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from .models import AuditEvent, ClientKey, ClientPolicy, ImpersonatorGrant, SecuritySettings


@admin.register(SecuritySettings)
class SecuritySettingsAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    fields = ("token_exchange_enabled", "allow_impersonation", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponseRedirect:
        # One row, one page: the list would only ever show a single link to it.
        obj = SecuritySettings.load()
        return HttpResponseRedirect(reverse("admin:token_exchange_securitysettings_change", args=[obj.pk]))


@admin.register(ClientKey)
class ClientKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Public keys only; ``manage.py createclientkey`` makes a pair and prints the private key."""

    list_display = ("kid", "application", "algorithm", "active", "expires_at", "created_at")
    list_filter = ("algorithm", "active")
    search_fields = ("kid", "application__client_id", "application__name")
    raw_id_fields = ("application",)
    readonly_fields = ("created_at",)


@admin.register(ClientPolicy)
class ClientPolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("application", "token_exchange_enabled")
    list_filter = ("token_exchange_enabled",)
    raw_id_fields = ("application",)


@admin.register(ImpersonatorGrant)
class ImpersonatorGrantAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("user", "zitadel_name", "role", "organization", "created_at")
    list_filter = ("role", "organization")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)

    @admin.display(description="ZITADEL role")
    def zitadel_name(self, obj: ImpersonatorGrant) -> str:
        return obj.zitadel_name


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only for everyone: an audit trail that can be edited proves nothing."""

    list_display = ("created_at", "event_type", "actor", "subject", "application", "client_ip")
    list_filter = ("event_type",)
    list_select_related = ("actor", "subject", "application")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

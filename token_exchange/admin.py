"""Minimal admin: the instance switches and the per-client policy.

The full admin screens (audit trail, impersonator roles, inlines on DOT's application admin)
are a later milestone; these two are what an operator needs to run the grant.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from .models import ClientPolicy, SecuritySettings


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


@admin.register(ClientPolicy)
class ClientPolicyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("application", "token_exchange_enabled")
    list_filter = ("token_exchange_enabled",)
    raw_id_fields = ("application",)

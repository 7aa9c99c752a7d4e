from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib import admin
from django.utils.translation import gettext_lazy as _


class UserAdminConfig(AppConfig):
    name = "token_exchange.contrib.user_admin"
    label = "token_exchange_user_admin"
    verbose_name = _("Token exchange: impersonation on the user admin")

    def ready(self) -> None:
        # Wires, queries nothing. Runs after django.contrib.admin's ready() (this app comes after
        # it in INSTALLED_APPS), by which time autodiscovery has registered the user admin.
        extend_user_admin(admin.site)


def extend_user_admin(site: admin.AdminSite) -> None:
    """Register the user model's admin again with ``ImpersonationUserAdminMixin``, if it is
    registered and has no mixin yet.

    The new class keeps the old one's name, qualified name and module: the admin's own check
    messages, ``str()`` of the admin and code that looks the class up by name see no difference.
    """
    from django.contrib.auth import get_user_model

    from token_exchange.admin import ImpersonationUserAdminMixin

    User = get_user_model()
    if not site.is_registered(User):
        return
    current: type[Any] = type(site.get_model_admin(User))
    if getattr(current, "token_exchange_impersonation", False):
        return
    extended = type(
        current.__name__,
        (ImpersonationUserAdminMixin, current),
        {"__module__": current.__module__, "__qualname__": current.__qualname__, "__doc__": current.__doc__},
    )
    site.unregister(User)
    site.register(User, extended)

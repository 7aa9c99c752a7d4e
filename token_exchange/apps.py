from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokenExchangeConfig(AppConfig):
    name = "token_exchange"
    verbose_name = _("Token exchange")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wires the system checks and one receiver; queries nothing.
        from django.contrib.auth.signals import user_logged_out

        from . import checks  # noqa: F401
        from .impersonation_sessions import end_on_logout

        user_logged_out.connect(end_on_logout, dispatch_uid="token_exchange.end_on_logout")

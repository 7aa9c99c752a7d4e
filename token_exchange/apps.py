from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokenExchangeConfig(AppConfig):
    name = "token_exchange"
    verbose_name = _("Token exchange")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wires the system checks and the signal receivers; queries nothing.
        from token_exchange.federation import withdrawal
        from token_exchange.impersonation import sessions as impersonation_sessions
        from token_exchange.issuance import change_audit, lineage

        impersonation_sessions.connect_receivers()
        lineage.connect_receivers()
        change_audit.connect_receivers()
        withdrawal.connect_receivers()

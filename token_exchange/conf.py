"""One door to the ``TOKEN_EXCHANGE`` settings.

Every property reads ``django.conf.settings`` on each access, so ``override_settings`` works and
nothing is cached per process. Defaults live here, never written back into ``settings``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


class TokenExchangeSettings:
    @property
    def _user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "TOKEN_EXCHANGE", {})
        return value if isinstance(value, dict) else {}

    def _get(self, name: str, default: Any) -> Any:
        return self._user_settings.get(name, default)

    @property
    def ACCESS_TOKEN_EXPIRE_SECONDS(self) -> int | None:
        """Lifetime of exchanged access tokens; ``None`` means DOT's ``ACCESS_TOKEN_EXPIRE_SECONDS``.

        Whatever the value, an exchanged token never outlives its subject token.
        """
        value = self._get("ACCESS_TOKEN_EXPIRE_SECONDS", None)
        return None if value is None else int(value)

    @property
    def ID_TOKEN_EXPIRE_SECONDS(self) -> int | None:
        """Lifetime of ID tokens minted by an exchange; ``None`` means DOT's ``ID_TOKEN_EXPIRE_SECONDS``."""
        value = self._get("ID_TOKEN_EXPIRE_SECONDS", None)
        return None if value is None else int(value)


token_exchange_settings = TokenExchangeSettings()

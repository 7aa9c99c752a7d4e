"""One door to the ``TOKEN_EXCHANGE`` settings.

Every property reads ``django.conf.settings`` on each access, so ``override_settings`` works and
nothing is cached per process. Defaults live here, never written back into ``settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string


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

    @property
    def IMPERSONATION_TOKEN_EXPIRE_SECONDS(self) -> int:
        """Upper bound on the lifetime of impersonated tokens (default one hour).

        Whatever the value, an impersonated token never outlives its actor token.
        """
        return int(self._get("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 3600))

    @property
    def ADMIN_IMPERSONATION_MAX_SECONDS(self) -> int:
        """Longest impersonation a support user may start from the admin (default one hour).

        Tokens issued under it never outlive it, nor ``IMPERSONATION_TOKEN_EXPIRE_SECONDS``.
        """
        return int(self._get("ADMIN_IMPERSONATION_MAX_SECONDS", 3600))

    @property
    def MAX_ACT_DEPTH(self) -> int:
        """How many actors one token may name, outermost ``act`` included (RFC 8693 §4.1 nesting)."""
        return int(self._get("MAX_ACT_DEPTH", 4))

    @property
    def ORGANIZATION_MODEL(self) -> str:
        """``app_label.ModelName`` of the organizations impersonator grants are scoped to.

        Like ``AUTH_USER_MODEL``, choose it before the first ``migrate``.
        """
        return str(self._get("ORGANIZATION_MODEL", "auth.Group"))

    @property
    def USER_ORGANIZATIONS(self) -> Callable[[Any], Any]:
        """``callable(user)`` returning the primary keys of the user's organizations.

        Default: the user's groups (``token_exchange.impersonation.user_groups``).
        """
        return self._callable("USER_ORGANIZATIONS", "token_exchange.impersonation.user_groups")

    @property
    def IS_ADMIN_SUBJECT(self) -> Callable[[Any], bool]:
        """``callable(user)``: is this user an "admin" that only admin impersonators may impersonate?

        Default: staff, superusers and holders of any impersonator grant
        (``token_exchange.impersonation.is_admin_subject``).
        """
        return self._callable("IS_ADMIN_SUBJECT", "token_exchange.impersonation.is_admin_subject")

    @property
    def PRIVILEGED_URL_PREFIXES(self) -> tuple[str, ...] | None:
        """URL path prefixes where ``ImpersonationGuardMiddleware`` refuses impersonated tokens.

        ``None`` (the default) means the Django admin's prefix, when the admin is installed.
        """
        value = self._get("PRIVILEGED_URL_PREFIXES", None)
        return None if value is None else tuple(value)

    @property
    def JWT_LEEWAY_SECONDS(self) -> int:
        """Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` of JWTs a client signs (default 60)."""
        return int(self._get("JWT_LEEWAY_SECONDS", 60))

    @property
    def REPLAY_CACHE(self) -> str:
        """The ``CACHES`` alias that remembers used ``jti`` values of client-signed JWTs.

        Default ``"default"``. Replay protection holds across processes only when this cache is
        shared by all of them (Redis, Memcached, the database cache); a per-process cache such
        as ``LocMemCache`` protects one process only.
        """
        return str(self._get("REPLAY_CACHE", "default"))

    @property
    def CLIENT_AUTHENTICATION(self) -> str:
        """Who verifies ``client_assertion``s (RFC 7523 ``private_key_jwt``): ``"token_exchange"``
        (the default: this package, against ``ClientKey`` rows) or ``"oauth2_provider"`` (DOT's
        own, against the application's ``client_jwks``/``client_jwks_uri``).

        ``token_exchange.client_assertion.ours`` is the one place that reads it.
        """
        return str(self._get("CLIENT_AUTHENTICATION", "token_exchange"))

    def _callable(self, name: str, default: str) -> Callable[..., Any]:
        value = self._get(name, default)
        return import_string(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


token_exchange_settings = TokenExchangeSettings()

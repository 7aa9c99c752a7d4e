"""oauthlib server classes with the token exchange grant registered on the token endpoint.

Point DOT at them with ``OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"]`` and ``["OIDC_SERVER_CLASS"]``.
"""

from __future__ import annotations

from typing import Any

from oauthlib import oauth2, openid

from .constants import GRANT_TYPE
from .grant import TokenExchangeGrant


class _TokenExchangeMixin:
    _grant_types: dict[str, Any]

    def _register_token_exchange(self, request_validator: Any) -> None:
        self.token_exchange_grant = TokenExchangeGrant(request_validator)
        self._grant_types[GRANT_TYPE] = self.token_exchange_grant


class Server(_TokenExchangeMixin, oauth2.Server):  # type: ignore[misc]
    """``oauthlib.oauth2.Server`` plus RFC 8693."""

    def __init__(self, request_validator: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self._register_token_exchange(request_validator)


class OIDCServer(_TokenExchangeMixin, openid.Server):  # type: ignore[misc]
    """``oauthlib.openid.Server`` plus RFC 8693 (DOT uses it when ``OIDC_ENABLED``)."""

    def __init__(self, request_validator: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self._register_token_exchange(request_validator)

"""DOT's OAuthLibCore, keeping repeated parameters of token exchange requests.

DOT keeps only the last value of a repeated form parameter (except ``resource``), so oauthlib
never sees the duplicate. RFC 6749 §3.2 says parameters MUST NOT repeat and RFC 8693 §2.1 makes
``audience`` and ``resource`` the only exceptions, so for this grant every value is passed on and
the grant refuses the duplicates itself (and so does the JWT authorization grant, for a repeated
``assertion``). Other grants keep DOT's behaviour.

Each token request runs in one database transaction: see
``token_exchange.oauth.server._TokenExchangeMixin.create_token_response``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from oauth2_provider.oauth2_backends import OAuthLibCore

from token_exchange.constants import GRANT_TYPE, JWT_BEARER_GRANT_TYPE
from token_exchange.exceptions import ReplayStoreUnavailable


class TokenExchangeOAuthLibCore(OAuthLibCore):  # type: ignore[misc]
    def authenticate_client(self, request: HttpRequest) -> bool:
        """DOT's client-protected views (``ClientProtectedResourceView`` and its mixin) ask here,
        and render nothing but True or False: a replay store that cannot answer refuses the
        client (fail closed) instead of escaping as a 500. The package's own endpoints call the
        validator themselves and answer that case ``503 temporarily_unavailable``."""
        try:
            authenticated: bool = super().authenticate_client(request)
        except ReplayStoreUnavailable:
            return False
        return authenticated

    def extract_body(self, request: HttpRequest) -> list[tuple[str, Any]]:
        if {GRANT_TYPE, JWT_BEARER_GRANT_TYPE} & set(request.POST.getlist("grant_type")):
            return [(key, value) for key, values in request.POST.lists() for value in values]
        body: list[tuple[str, Any]] = super().extract_body(request)
        return body

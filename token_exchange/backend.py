"""DOT's OAuthLibCore, keeping repeated parameters of token exchange requests.

DOT keeps only the last value of a repeated form parameter (except ``resource``), so oauthlib
never sees the duplicate. RFC 6749 §3.2 says parameters MUST NOT repeat and RFC 8693 §2.1 makes
``audience`` and ``resource`` the only exceptions, so for this grant every value is passed on and
the grant refuses the duplicates itself. Other grants keep DOT's behaviour.

It also runs each token request in one database transaction (see ``create_token_response``).
"""

from __future__ import annotations

from typing import Any

from django.db import router, transaction
from django.http import HttpRequest
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from .constants import GRANT_TYPE
from .exceptions import ReplayStoreUnavailable


class TokenExchangeOAuthLibCore(OAuthLibCore):  # type: ignore[misc]
    def create_token_response(self, request: HttpRequest) -> tuple[Any, Any, Any, Any]:
        """DOT's token response, in one transaction that an error raised midway rolls back.

        oauthlib's OpenID Connect modifier stores a refresh's ID token before DOT stores the
        access and refresh tokens; if that second step raises (an OAuth error, a database
        fault, an audit row that cannot be written), nothing of the response may remain.
        Errors oauthlib *returns* (refusals) commit, so their audit rows stay.
        """
        uri, http_method, body, headers = self._extract_params(request)
        extra_credentials = self._get_extra_credentials(request)
        try:
            with transaction.atomic(using=router.db_for_write(get_access_token_model())):
                headers, body, status = self.server.create_token_response(
                    uri, http_method, body, headers, extra_credentials
                )
        except OAuth2Error as exc:
            return None, exc.headers, exc.json, exc.status_code
        return headers.get("Location", None), headers, body, status

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
        if GRANT_TYPE in request.POST.getlist("grant_type"):
            return [(key, value) for key, values in request.POST.lists() for value in values]
        body: list[tuple[str, Any]] = super().extract_body(request)
        return body

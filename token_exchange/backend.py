"""DOT's OAuthLibCore, keeping repeated parameters of token exchange requests.

DOT keeps only the last value of a repeated form parameter (except ``resource``), so oauthlib
never sees the duplicate. RFC 6749 §3.2 says parameters MUST NOT repeat and RFC 8693 §2.1 makes
``audience`` and ``resource`` the only exceptions, so for this grant every value is passed on and
the grant refuses the duplicates itself. Other grants keep DOT's behaviour.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from oauth2_provider.oauth2_backends import OAuthLibCore

from .constants import GRANT_TYPE


class TokenExchangeOAuthLibCore(OAuthLibCore):  # type: ignore[misc]
    def extract_body(self, request: HttpRequest) -> list[tuple[str, Any]]:
        if GRANT_TYPE in request.POST.getlist("grant_type"):
            return [(key, value) for key, values in request.POST.lists() for value in values]
        body: list[tuple[str, Any]] = super().extract_body(request)
        return body

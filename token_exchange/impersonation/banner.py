"""The banner on every page of this site while an admin-started impersonation runs:
"You (support) are acting as end-user for portal — until 14:05 UTC [Stop]".

``ImpersonationBannerMiddleware`` goes after ``AuthenticationMiddleware``. It puts the running
impersonation on ``request.token_exchange_impersonation`` (or ``None``), ends it when it has
expired, and writes the banner right after ``<body>`` of HTML responses. Requests whose
session holds no impersonation cost nothing more than reading the session.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse

from token_exchange.impersonation import sessions as impersonation_sessions

_BODY = re.compile(rb"<body\b[^>]*>", re.IGNORECASE)


class ImpersonationBannerMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = impersonation_sessions.current(request)
        request.token_exchange_impersonation = session  # type: ignore[attr-defined]
        response = self.get_response(request)
        if session is None or session.ended_at is not None or not self._is_html_page(response):
            return response
        try:
            stop_url = reverse("oauth2_provider:token-exchange-stop-impersonation")
        except NoReverseMatch:
            return response
        banner = render_to_string(
            "token_exchange/impersonation_banner.html",
            {"impersonation": session, "stop_url": stop_url},
            request=request,
        ).encode(response.charset)
        content, count = _BODY.subn(lambda match: match.group(0) + banner, response.content, count=1)
        if count:
            response.content = content
            if response.has_header("Content-Length"):
                response["Content-Length"] = str(len(content))
        return response

    @staticmethod
    def _is_html_page(response: HttpResponse) -> bool:
        return (
            not response.streaming
            and response.get("Content-Type", "").startswith("text/html")
            and not response.get("Content-Encoding")
        )

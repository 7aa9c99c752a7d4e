"""The banner on every page of this site while an admin-started impersonation runs:
"You (support) are acting as end-user for portal — until 14:05 UTC [Stop]".

``ImpersonationBannerMiddleware`` goes after ``AuthenticationMiddleware``. It puts the running
impersonation on ``request.token_exchange_impersonation`` (or ``None``), ends it when it has
expired, and writes the banner right after ``<body>`` of HTML responses. Requests whose
session holds no impersonation cost nothing more than reading the session. When Stop is pressed
it also leaves a message ("You stopped acting as …") for the page Stop returns to.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _

from . import impersonation_sessions

_BODY = re.compile(rb"<body\b[^>]*>", re.IGNORECASE)
_STOP_VIEW = "oauth2_provider:token-exchange-stop-impersonation"


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
            stop_url = reverse(_STOP_VIEW)
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

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        """Stop's message, queued here rather than after the view: ``MessageMiddleware`` usually
        comes after this middleware, so its storage is saved before our response phase. Every
        middleware's ``process_view`` before this one (CSRF included) has let the POST through,
        and the running impersonation is this user's, so the view is about to end it."""
        session = getattr(request, "token_exchange_impersonation", None)
        match = request.resolver_match
        if session is None or request.method != "POST" or match is None or match.view_name != _STOP_VIEW:
            return
        messages.success(
            request,
            _("You stopped acting as %(subject)s in %(application)s; its sign-in as them is revoked.")
            % {"subject": session.subject, "application": session.application.name},
            fail_silently=True,
        )

    @staticmethod
    def _is_html_page(response: HttpResponse) -> bool:
        return (
            not response.streaming
            and response.get("Content-Type", "").startswith("text/html")
            and not response.get("Content-Encoding")
        )

"""OpenID Connect UserInfo (OIDC Core §5.3) that no cache keeps.

``token_exchange.urls`` mounts :class:`UserInfoView` under DOT's URL name ``user-info``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider import views as oauth2_views
from oauth2_provider.compat import login_not_required


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
class UserInfoView(oauth2_views.UserInfoView):  # type: ignore[misc]
    """DOT's UserInfo endpoint; its answers (claims about a user, or an error about a token)
    carry ``Cache-Control: no-store`` and ``Pragma: no-cache``, as token responses do (RFC 6749
    §5.1): a shared cache must not hand one user's claims to another."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().dispatch(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response

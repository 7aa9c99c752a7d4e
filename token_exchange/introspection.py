"""RFC 7662 token introspection.

``token_exchange.urls`` mounts :class:`IntrospectTokenView` under DOT's URL name ``introspect``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider import views as oauth2_views
from oauth2_provider.settings import oauth2_settings

from .constants import ACT, BEARER
from .tokens import access_token_claims, load_access_token
from .views import SENSITIVE_POST_PARAMETERS, FormEndpoint


def _epoch(moment: Any) -> int:
    return int(moment.timestamp())


@method_decorator(sensitive_post_parameters(*SENSITIVE_POST_PARAMETERS, "token"), name="dispatch")
class IntrospectTokenView(FormEndpoint, oauth2_views.IntrospectTokenView):  # type: ignore[misc]
    """RFC 7662 introspection with the JWT claims of the token: sub, iss, aud, jti, iat, act."""

    def introspect(self, request: HttpRequest, token_value: str | None) -> JsonResponse:
        if token_value is None:
            return JsonResponse(
                {"error": "invalid_request", "error_description": "Token parameter is missing."}, status=400
            )
        token = load_access_token(token_value)
        if token is None or not token.is_valid():
            return JsonResponse({"active": False})
        claims = access_token_claims(token)
        data: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "exp": _epoch(token.expires),
            "iat": _epoch(token.created),
            "nbf": _epoch(token.created),
            "iss": oauth2_settings.oidc_issuer(request),
            "token_type": BEARER,
            "jti": claims["reference"],
        }
        if claims["audience"]:
            data["aud"] = list(claims["audience"])
        if claims["act"] is not None:
            data[ACT] = claims["act"]
        if token.application is not None:
            data["client_id"] = token.application.client_id
        if token.user is not None:
            data["sub"] = str(token.user.pk)
            data["username"] = token.user.get_username()
        return JsonResponse(data)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.introspect(request, request.GET.get("token"))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        return self.introspect(request, request.POST.get("token"))

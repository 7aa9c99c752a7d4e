"""Two resource servers of the guide's organization, as plain Django views.

Each accepts a bearer token only when the token's audience contains its resource URI, and
answers who the token is for (``sub``), what it may do (``scope``) and who is acting (``act``).
The settings API is privileged: like ZITADEL's own API, it refuses impersonated tokens (403).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data
from token_exchange.impersonation.guard import refuse_impersonated
from token_exchange.tokens import access_token_claims, load_access_token

AGGREGATES = "https://aggregates.example.com/"
SETTINGS = "https://settings.example.com/"


def _bearer_api(request: HttpRequest, resource: str) -> JsonResponse:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    token = None
    if scheme.lower() == "bearer" and value:
        token = load_access_token(value)
    if token is None or not token.is_valid() or token.user is None:
        response = JsonResponse({"error": "invalid_token"}, status=401)
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    claims = access_token_claims(token)
    if resource not in claims["audience"]:
        return JsonResponse(
            {"error": "insufficient_scope", "error_description": f"The token's audience lacks {resource}"},
            status=403,
        )
    return JsonResponse({"sub": str(token.user.pk), "scope": token.scope, "act": claims["act"]})


def aggregates(request: HttpRequest) -> JsonResponse:
    return _bearer_api(request, AGGREGATES)


@refuse_impersonated
def settings_api(request: HttpRequest) -> JsonResponse:
    return _bearer_api(request, SETTINGS)


def portal(request: HttpRequest) -> HttpResponse:
    """The portal, a single-page app: all of it runs in the browser (PKCE, no secret).

    It is its own launch URL: ``?iss=…&login_hint=…`` starts a sign-in (OpenID Connect
    third-party initiated login), which is how the admin's Impersonate sends a support user here.
    """
    config = {"issuer": oauth2_settings.oidc_issuer(request), "clientId": data.PORTAL_SPA_CLIENT_ID}
    return render(request, "demo/portal.html", {"config": config, "client_id": data.PORTAL_SPA_CLIENT_ID})

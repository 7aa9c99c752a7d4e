"""DOT's URLs with the token, introspection, userinfo and discovery views of this package.

Use it instead of ``oauth2_provider.urls``::

    path("o/", include("token_exchange.urls")),

The namespace stays ``oauth2_provider`` and every URL name is DOT's, so nothing that reverses
DOT's URLs has to change.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, path
from oauth2_provider import urls as oauth2_urls

from . import introspection, userinfo, views

app_name = "oauth2_provider"

_REPLACEMENTS: dict[str, Any] = {
    "authorize": views.AuthorizationView,
    "token": views.TokenView,
    "introspect": introspection.IntrospectTokenView,
    "revoke-token": views.RevokeTokenView,
    "oauth-server-metadata": views.OAuthServerMetadataView,
    "oauth-server-metadata-issuer": views.OAuthServerMetadataView,
    "oidc-connect-discovery-info": views.ConnectDiscoveryInfoView,
    "user-info": userinfo.UserInfoView,
}


def _replace(pattern: URLPattern | URLResolver) -> URLPattern | URLResolver:
    view_class = _REPLACEMENTS.get(getattr(pattern, "name", None) or "")
    if view_class is None or not isinstance(pattern, URLPattern):
        return pattern
    return URLPattern(pattern.pattern, view_class.as_view(), name=pattern.name)


urlpatterns = [
    *(_replace(pattern) for pattern in oauth2_urls.urlpatterns),
    # The impersonation banner's Stop button (admin-started impersonation).
    path("impersonation/stop/", views.stop_impersonation, name="token-exchange-stop-impersonation"),
]

"""DOT's URLs with the token, introspection, userinfo and discovery views of this package.

Use it instead of ``oauth2_provider.urls``, with ``token_exchange.urls_well_known`` at the root
for RFC 8414's metadata location::

    path("", include("token_exchange.urls_well_known")),
    path("o/", include("token_exchange.urls")),

The namespace stays ``oauth2_provider`` and every URL name is DOT's, so nothing that reverses
DOT's URLs has to change.

DOT's application-management pages (``list``, ``register``, ``detail``, ``update``,
``delete``) are left out: with them any logged-in user could register a client and choose its
``client_id``. A site that wants them, for staff only, includes
``token_exchange.urls_with_management`` instead (``client_registration``). The pages where a
user sees and revokes the tokens they authorized (``authorized-token-list``,
``authorized-token-delete``) stay: they touch only that user's own tokens.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, path
from oauth2_provider import urls as oauth2_urls

from token_exchange.oauth import client_registration, introspection, metadata, userinfo, views

app_name = "oauth2_provider"

_REPLACEMENTS: dict[str, Any] = {
    "authorize": views.AuthorizationView,
    "token": views.TokenView,
    "introspect": introspection.IntrospectTokenView,
    "revoke-token": views.RevokeTokenView,
    "device-authorization": views.DeviceAuthorizationView,
    "oauth-server-metadata": metadata.OAuthServerMetadataView,
    # RFC 8414's form for an issuer with a path belongs at the site's root: under "o/" this
    # pattern answers no path (token_exchange.urls_well_known serves the root).
    "oauth-server-metadata-issuer": metadata.WellKnownOAuthServerMetadataView,
    "oidc-connect-discovery-info": metadata.ConnectDiscoveryInfoView,
    "jwks-info": metadata.JwksInfoView,
    "user-info": userinfo.UserInfoView,
}
# DOT's application-management pages: only through urls_with_management, for staff.
MANAGEMENT_URL_NAMES = frozenset(client_registration.VIEWS)


def _replace(pattern: URLPattern | URLResolver, replacements: dict[str, Any]) -> URLPattern | URLResolver:
    view_class = replacements.get(getattr(pattern, "name", None) or "")
    if view_class is None or not isinstance(pattern, URLPattern):
        return pattern
    return URLPattern(pattern.pattern, view_class.as_view(), name=pattern.name)


urlpatterns = [
    *(
        _replace(pattern, _REPLACEMENTS)
        for pattern in oauth2_urls.urlpatterns
        if getattr(pattern, "name", None) not in MANAGEMENT_URL_NAMES
    ),
    # The impersonation banner's Stop button (admin-started impersonation).
    path("impersonation/stop/", views.stop_impersonation, name="token-exchange-stop-impersonation"),
]

# DOT's management pages, served by client_registration's staff-only views.
management_urlpatterns = [
    _replace(pattern, client_registration.VIEWS)
    for pattern in oauth2_urls.management_urlpatterns
    if getattr(pattern, "name", None) in MANAGEMENT_URL_NAMES
]

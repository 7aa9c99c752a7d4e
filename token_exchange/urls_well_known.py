"""The metadata documents at the site's root, where RFC 8414 §3.1 puts them.

Include it in the ROOT URLconf, next to ``token_exchange.urls``::

    urlpatterns = [
        path("", include("token_exchange.urls_well_known")),
        path("o/", include("token_exchange.urls")),
        ...
    ]

For the issuer ``https://host/o`` it serves ``/.well-known/oauth-authorization-server/o`` (RFC
8414 §3.1, where Authlib and other metadata-driven clients look) and
``/.well-known/openid-configuration/o`` (the same rule for OIDC, RFC 8414 §5); for an issuer
without a path, the two documents at ``/.well-known/oauth-authorization-server`` and
``/.well-known/openid-configuration``. The path comes from the issuer (``OIDC_ISS_ENDPOINT``, or
where ``token_exchange.urls`` is mounted); any other path under these prefixes is a 404.

Use it instead of DOT's ``oauth2_provider.urls.metadata_urlpatterns``: DOT's root view
describes whatever issuer the path names, and omits the token exchange grant and
``private_key_jwt``. DOT's RFC 9728 protected-resource metadata is not part of it.
"""

from __future__ import annotations

from django.urls import path

from token_exchange.oauth.metadata import (
    OAUTH_AUTHORIZATION_SERVER,
    OPENID_CONFIGURATION,
    WellKnownConnectDiscoveryInfoView,
    WellKnownOAuthServerMetadataView,
)

urlpatterns = [
    path(
        f".well-known/{OAUTH_AUTHORIZATION_SERVER}",
        WellKnownOAuthServerMetadataView.as_view(),
        name="token-exchange-oauth-server-metadata",
    ),
    path(
        f".well-known/{OAUTH_AUTHORIZATION_SERVER}/<path:issuer_path>",
        WellKnownOAuthServerMetadataView.as_view(),
        name="token-exchange-oauth-server-metadata-issuer",
    ),
    path(
        f".well-known/{OPENID_CONFIGURATION}",
        WellKnownConnectDiscoveryInfoView.as_view(),
        name="token-exchange-oidc-connect-discovery-info",
    ),
    path(
        f".well-known/{OPENID_CONFIGURATION}/<path:issuer_path>",
        WellKnownConnectDiscoveryInfoView.as_view(),
        name="token-exchange-oidc-connect-discovery-info-issuer",
    ),
]

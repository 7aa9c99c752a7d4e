"""What this server says about itself: RFC 8414 metadata and OpenID Connect discovery.

One document describes the authorization server (``authorization_server_metadata``): DOT's RFC
8414 document, completed with what this package adds (the token exchange grant,
``private_key_jwt`` and its algorithms at every endpoint that authenticates clients) and made to
describe the server DOT actually runs (with OIDC on, its response types, its token endpoint's
methods and its ``jwks_uri``). The OpenID Connect document is DOT's with every field of that one
laid over it, so the two agree field for field wherever both have a field: a client that
discovers the server one way learns what a client that discovers it the other way learns.

Where they are served:

- under the issuer's path, by ``token_exchange.urls`` (``/o/.well-known/openid-configuration``,
  OIDC Discovery §4, and ``/o/.well-known/oauth-authorization-server``, which some clients try);
- at the site's root, by ``token_exchange.urls_well_known``: RFC 8414 §3.1 puts the document
  of the issuer ``https://host/o`` at ``https://host/.well-known/oauth-authorization-server/o``,
  and some clients look for ``/.well-known/openid-configuration/o`` the same way (RFC 8414 §5).
  The root views answer only at the locations of this server's issuer, so no path makes the
  server describe an issuer it is not (DOT's own root view reflects whatever path it is given).

Without ``OIDC_ENABLED`` the OpenID Connect document and the JWKS answer a plain 404, whatever
``DEBUG`` says (DOT's views raise ``ImproperlyConfigured`` under ``DEBUG``: a 500 page).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote, urlsplit

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.utils.decorators import method_decorator
from oauth2_provider import views as oauth2_views
from oauth2_provider.compat import login_not_required
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views.metadata import bcp_filter_response_types

from token_exchange.constants import (
    CLIENT_KEY_ALGORITHMS,
    DEVICE_CODE_GRANT_TYPE,
    GRANT_TYPE,
    JWT_BEARER_GRANT_TYPE,
    PRIVATE_KEY_JWT,
)
from token_exchange.jwt import client_assertion

logger = logging.getLogger("token_exchange")

# The well-known URI suffixes (RFC 8414 §3, OIDC Discovery §4).
OAUTH_AUTHORIZATION_SERVER = "oauth-authorization-server"
OPENID_CONFIGURATION = "openid-configuration"
# The endpoints where a client authenticates (RFC 8414 §2: <endpoint>_auth_methods_supported).
CLIENT_AUTHENTICATING_ENDPOINTS = ("token_endpoint", "revocation_endpoint", "introspection_endpoint")
# The documents change with a deployment, not between requests: an hour bounds how long a
# change takes to reach a client that caches them. Without OIDC_ISS_ENDPOINT the issuer and every
# URL follow the request (Host, and X-Forwarded-Host or the proxy's scheme header when Django
# reads them), which a shared cache's key need not include: such a document is never stored, or
# one request could hand every client another host's endpoints for an hour (token_exchange.W014).
CACHE_CONTROL = "public, max-age=3600"
CACHE_CONTROL_REQUEST_DERIVED = "no-store"
# Public clients (PKCE) use the token and revocation endpoints with their client_id alone
# (RFC 6749 §2.1, RFC 7009 §2.1, RFC 7591's "none"); introspection is for confidential clients.
PUBLIC_CLIENT_ENDPOINTS = ("token_endpoint", "revocation_endpoint")
NO_CLIENT_AUTHENTICATION = "none"

_dot_authorization_server_metadata = oauth2_views.OAuthServerMetadataView.as_view()


# The documents --------------------------------------------------------------------------------


def authorization_server_metadata(request: HttpRequest) -> dict[str, Any]:
    """The RFC 8414 document: DOT's, completed and made to describe the server DOT runs."""
    document: dict[str, Any] = json.loads(_dot_authorization_server_metadata(request).content)
    issuer = oauth2_settings.oidc_issuer(request)
    # The issuer of our tokens, wherever the document was asked for (DOT derives its own from
    # the request's path when OIDC_ISS_ENDPOINT is unset).
    document["issuer"] = issuer
    grant_types = [*document.get("grant_types_supported", []), GRANT_TYPE, JWT_BEARER_GRANT_TYPE]
    document["grant_types_supported"] = list(dict.fromkeys(grant_types))
    device_authorization = _endpoint_url(issuer, "device-authorization")
    if DEVICE_CODE_GRANT_TYPE in grant_types and device_authorization:
        document["device_authorization_endpoint"] = device_authorization  # RFC 8628 §4
    if oauth2_settings.OIDC_ENABLED:
        # The server is DOT's OpenID Connect server: it takes OIDC's response types, and
        # publishes a JWKS (empty without OIDC_RSA_PRIVATE_KEY: HS256 ID tokens only).
        document["response_types_supported"] = bcp_filter_response_types(
            oauth2_settings.OIDC_RESPONSE_TYPES_SUPPORTED
        )
        jwks_uri = _endpoint_url(issuer, "jwks-info")
        if jwks_uri:
            document["jwks_uri"] = jwks_uri
    else:
        document.pop("jwks_uri", None)  # DOT's JWKS view answers 404 without OIDC
    methods = client_authentication_methods()
    # RFC 8414 §2: a JWT method comes with its algorithms. Ours when this package verifies
    # client assertions; else DOT's, for its token endpoint; with none known, no JWT method.
    algorithms = (
        list(CLIENT_KEY_ALGORITHMS)
        if client_assertion.ours()
        else document.get("token_endpoint_auth_signing_alg_values_supported")
    )
    if not algorithms:
        methods = [method for method in methods if method not in client_assertion.DOT_JWT_METHODS]
    for endpoint in CLIENT_AUTHENTICATING_ENDPOINTS:
        if endpoint not in document:
            continue
        # The same validator (authenticate_client) authenticates the client at all three.
        public = [NO_CLIENT_AUTHENTICATION] if endpoint in PUBLIC_CLIENT_ENDPOINTS else []
        document[f"{endpoint}_auth_methods_supported"] = [*methods, *public]
        if algorithms:
            document[f"{endpoint}_auth_signing_alg_values_supported"] = list(algorithms)
        else:
            document.pop(f"{endpoint}_auth_signing_alg_values_supported", None)
    return document


def openid_provider_metadata(request: HttpRequest, dot_document: dict[str, Any]) -> dict[str, Any]:
    """The OpenID Connect document: DOT's (``dot_document``) for the fields only an OpenID
    Provider has (userinfo, ID token algorithms, claims, ``end_session_endpoint`` when DOT's
    RP-initiated logout is on), and the RFC 8414 document for everything else."""
    return {**dot_document, **authorization_server_metadata(request)}


def client_authentication_methods() -> list[str]:
    """What the token, revocation and introspection endpoints accept.

    DOT's settings list them, one for OAuth 2.0 and one for OIDC, for the one token endpoint;
    both count when OIDC is on. When this package verifies client assertions, DOT's JWT
    methods are not DOT's to offer (``E010``) and ``private_key_jwt`` is ours.
    """
    methods = list(oauth2_settings.OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED)
    if oauth2_settings.OIDC_ENABLED:
        methods += oauth2_settings.OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED
    if client_assertion.ours():
        methods = [method for method in methods if method not in client_assertion.DOT_JWT_METHODS]
        methods.append(PRIVATE_KEY_JWT)
    return list(dict.fromkeys(methods))


def _endpoint_url(issuer: str, name: str) -> str | None:
    """The absolute URL of DOT's URL ``name`` on the issuer's host, or None when not mounted."""
    try:
        path = reverse(f"oauth2_provider:{name}")
    except NoReverseMatch:
        return None
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{path}"


def well_known_path(issuer: str, suffix: str) -> str:
    """RFC 8414 §3.1: ``/.well-known/<suffix>`` between the host and the issuer's path, the
    path's terminating ``/`` removed (``http://host/o`` -> ``/.well-known/<suffix>/o``)."""
    return f"/.well-known/{suffix}{urlsplit(issuer).path.rstrip('/')}"


def _metadata_response(document: dict[str, Any]) -> HttpResponse:
    response = JsonResponse(document)
    response["Access-Control-Allow-Origin"] = "*"  # as DOT: public, read by browser clients
    response["Cache-Control"] = (
        CACHE_CONTROL if oauth2_settings.OIDC_ISS_ENDPOINT else CACHE_CONTROL_REQUEST_DERIVED
    )
    return response


def _not_found(message: str) -> HttpResponse:
    return HttpResponseNotFound(message, content_type="text/plain; charset=utf-8")


# The views ------------------------------------------------------------------------------------


class OAuthServerMetadataView(oauth2_views.OAuthServerMetadataView):  # type: ignore[misc]
    """RFC 8414 metadata where it is mounted (``/o/.well-known/oauth-authorization-server``)."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return _metadata_response(authorization_server_metadata(request))


class OpenIDConnectOnly:
    """A plain 404 without ``OIDC_ENABLED``, also under ``DEBUG`` (DOT's ``OIDCOnlyMixin``
    raises ``ImproperlyConfigured`` there, and a client reads a 500)."""

    @method_decorator(login_not_required)
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not oauth2_settings.OIDC_ENABLED:
            logger.debug("%s: OpenID Connect is not enabled (OIDC_ENABLED)", request.path)
            return _not_found("OpenID Connect is not enabled on this server.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class ConnectDiscoveryInfoView(OpenIDConnectOnly, oauth2_views.ConnectDiscoveryInfoView):  # type: ignore[misc]
    """OIDC discovery where it is mounted (``/o/.well-known/openid-configuration``)."""

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        if response.status_code != 200:
            return response  # type: ignore[no-any-return]
        return _metadata_response(openid_provider_metadata(request, json.loads(response.content)))


class JwksInfoView(OpenIDConnectOnly, oauth2_views.JwksInfoView):  # type: ignore[misc]
    """DOT's JWKS, with the same 404 without OIDC as the document that points at it."""


class AtIssuerLocation:
    """Answers only at the well-known location of this server's issuer (``well_known_path``).

    For the site's root: a request for another issuer's document gets a 404, never a document
    naming an issuer this server is not.
    """

    suffix: str

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        issuer = oauth2_settings.oidc_issuer(request)
        # request.path is decoded; so is the issuer's path here (an issuer /t%C3%A9/o is served
        # at /.well-known/<suffix>/t%C3%A9/o, which Django hands over as /t\u00e9/o).
        if request.path != unquote(well_known_path(issuer, self.suffix)):
            logger.debug("%s: not the %s location of issuer %s", request.path, self.suffix, issuer)
            return _not_found(f"No metadata here: this server's issuer is {issuer}.")
        return super().get(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class WellKnownOAuthServerMetadataView(AtIssuerLocation, OAuthServerMetadataView):
    """RFC 8414 metadata at ``/.well-known/oauth-authorization-server/<issuer path>``."""

    suffix = OAUTH_AUTHORIZATION_SERVER


class WellKnownConnectDiscoveryInfoView(AtIssuerLocation, ConnectDiscoveryInfoView):
    """OIDC discovery at ``/.well-known/openid-configuration/<issuer path>``."""

    suffix = OPENID_CONFIGURATION

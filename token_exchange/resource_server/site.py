"""Is this site a resource server of this package? One answer for the system checks and the guard.

A resource server is a site that verifies tokens with this package: ``IntrospectionValidator``
as DOT's validator, ``JWTAccessTokenAuthentication`` among DRF's defaults, or
``TOKEN_EXCHANGE["RESOURCE_SERVER"]`` written at all. There the guard reads ``act`` from the
tokens as this site verifies them (``resource_server.actor``), not from token tables, which only
an authorization server fills. Reads settings only: no query, no PyJWT.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string
from oauth2_provider.settings import oauth2_settings

INTROSPECTION_VALIDATOR = "token_exchange.resource_server.introspection.IntrospectionValidator"
JWT_AUTHENTICATION = "token_exchange.contrib.rest_framework.JWTAccessTokenAuthentication"


def is_subclass(dotted_or_class: Any, base_path: str) -> bool:
    """Is ``dotted_or_class`` (a class or its dotted path) ``base_path``'s class or a subclass?
    A path that does not import is not (the system checks name such settings)."""
    try:
        candidate = import_string(dotted_or_class) if isinstance(dotted_or_class, str) else dotted_or_class
        return isinstance(candidate, type) and issubclass(candidate, import_string(base_path))
    except ImportError:
        return False


def introspection_validator_configured() -> bool:
    """Is DOT's validator the ``IntrospectionValidator`` (or a subclass)?"""
    return is_subclass(oauth2_settings.OAUTH2_VALIDATOR_CLASS, INTROSPECTION_VALIDATOR)


def is_resource_server() -> bool:
    """Does this site verify tokens as a resource server with this package?"""
    user_settings = getattr(settings, "TOKEN_EXCHANGE", {})
    if isinstance(user_settings, dict) and "RESOURCE_SERVER" in user_settings:
        return True
    if introspection_validator_configured():
        return True
    defaults = (getattr(settings, "REST_FRAMEWORK", None) or {}).get("DEFAULT_AUTHENTICATION_CLASSES", ())
    return any(is_subclass(path, JWT_AUTHENTICATION) for path in defaults)


def resource_server_only() -> bool:
    """A resource server that serves no token endpoint: no authorization server checks for it."""
    if not is_resource_server():
        return False
    try:
        # The site's URLconf, not the request's: a host routed to an API-only URLconf is still
        # the authorization server's, with its token tables.
        reverse("oauth2_provider:token", urlconf=settings.ROOT_URLCONF)
    except NoReverseMatch:
        return True
    return False

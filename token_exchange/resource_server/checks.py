"""System checks of a separate resource server (registered by ``token_exchange.apps``).

A resource server is a site that verifies tokens with this package (``site.is_resource_server``).
One that serves no token endpoint is a resource server only: the
authorization server's own checks (``token_exchange.checks``) do not apply to it.

Imports nothing of PyJWT: an authorization server without the extra runs these too.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from oauth2_provider.settings import oauth2_settings

from token_exchange.conf import token_exchange_settings
from token_exchange.resource_server.site import (
    introspection_validator_configured,
    is_resource_server,
    resource_server_only,
)

__all__ = ["check_dot_introspection_mode", "check_resource_server", "resource_server_only"]


E015 = Error(
    "TOKEN_EXCHANGE['RESOURCE_SERVER'] lacks ISSUER or RESOURCE_URI: every access token will be "
    "refused, since no token can be checked for its issuer and its audience.",
    hint=(
        "Set TOKEN_EXCHANGE['RESOURCE_SERVER'] = {'ISSUER': <the authorization server's issuer, "
        "exactly as in its tokens>, 'RESOURCE_URI': <this service's resource indicator>}."
    ),
    id="token_exchange.E015",
)
E016 = Error(
    "OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] is the IntrospectionValidator, but "
    "RESOURCE_SERVER_INTROSPECTION_URL or its credentials are not set: every access token will be "
    "refused.",
    hint=(
        "Set OAUTH2_PROVIDER['RESOURCE_SERVER_INTROSPECTION_URL'] to the authorization server's "
        "introspection endpoint and RESOURCE_SERVER_INTROSPECTION_CREDENTIALS to (client_id, "
        "client_secret) of a confidential client allowed to introspect (ClientPolicy.introspection)."
    ),
    id="token_exchange.E016",
)
W013 = Warning(
    "OAUTH2_PROVIDER['RESOURCE_SERVER_INTROSPECTION_URL'] is set, but the validator is not "
    "token_exchange's IntrospectionValidator: DOT keeps introspected tokens as local rows for up to "
    "RESOURCE_SERVER_TOKEN_CACHING_SECONDS (default ten hours) without their act claim, so "
    "impersonated tokens cannot be told apart here, and revoked ones keep working that long.",
    hint=(
        "Set OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] = "
        "'token_exchange.resource_server.IntrospectionValidator' (docs/resource-servers.md)."
    ),
    id="token_exchange.W013",
)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register(Tags.security)
def check_resource_server(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if not is_resource_server():
        return []
    from django.core.exceptions import ImproperlyConfigured

    try:
        config = token_exchange_settings.RESOURCE_SERVER
    except ImproperlyConfigured:
        return []  # E008 says what is wrong with it
    messages: list[CheckMessage] = []
    if not config["ISSUER"] or not config["RESOURCE_URI"]:
        messages.append(E015)
    introspection_url = oauth2_settings.RESOURCE_SERVER_INTROSPECTION_URL
    if introspection_validator_configured() and not (
        introspection_url
        and (
            oauth2_settings.RESOURCE_SERVER_INTROSPECTION_CREDENTIALS
            or oauth2_settings.RESOURCE_SERVER_AUTH_TOKEN
        )
    ):
        messages.append(E016)
    urls = {
        "TOKEN_EXCHANGE['RESOURCE_SERVER']['ISSUER']": config["ISSUER"],
        "TOKEN_EXCHANGE['RESOURCE_SERVER']['JWKS_URI']": config["JWKS_URI"],
        "OAUTH2_PROVIDER['RESOURCE_SERVER_INTROSPECTION_URL']": introspection_url,
    }
    for name, url in urls.items():
        if isinstance(url, str) and urlsplit(url).scheme == "http" and not _loopback(url):
            messages.append(
                Warning(
                    f"{name} is a plain http:// URL off this machine: whoever sits in between can "
                    "hand this resource server their own keys or introspection answers, and read the "
                    "introspection credentials and the tokens.",
                    hint="Use https:// (http:// is only for 127.0.0.1/localhost during development).",
                    id="token_exchange.W012",
                )
            )
    return messages


@register(Tags.security)
def check_dot_introspection_mode(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if oauth2_settings.RESOURCE_SERVER_INTROSPECTION_URL and not introspection_validator_configured():
        return [W013]
    return []

"""Client identifiers and resource indicators live in one namespace: a token's audience holds
both (RFC 8693 §2.1, RFC 8707 §2). A client whose ``client_id`` is an absolute URI could pass
for a resource server wherever that URI is expected, so no client may have one.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings

# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":".
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")


def is_confusable(client_id: str) -> bool:
    """Does ``client_id`` read as an absolute URI (``https://api.example``, ``urn:x``)?"""
    return bool(_SCHEME.match(client_id))


def names_no_client(client_id: str) -> bool:
    """Is ``client_id`` refused wherever a client authenticates?

    A confusable one is, unless DOT's Client ID Metadata Documents are on (``CIMD_ENABLED``):
    there every client_id is an HTTPS URL the client proves it controls by serving its metadata
    at it, so it cannot take a resource server's URI on another host.
    """
    return is_confusable(client_id) and not oauth2_settings.CIMD_ENABLED


def validate_client_id(client_id: str) -> None:
    """A form and model validator: refuse a ``client_id`` that reads as an absolute URI."""
    if is_confusable(client_id):
        raise ValidationError(
            _(
                "A client ID must not look like an absolute URI (scheme followed by a colon): "
                "tokens name clients and resource servers in the same audience, so this client "
                "could pass for a resource server."
            ),
            code="confusable_client_id",
        )

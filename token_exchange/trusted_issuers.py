"""What a ``TrustedIssuer`` row may say (``token_exchange.federation``): its key URL, its pasted
keys, its rules. Below the models (``TrustedIssuer.clean`` asks here, as ``ClientKey`` asks
``client_keys``); it reads no table."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.utils.translation import gettext as _
from jwcrypto import jwk

from token_exchange.client_keys import MIN_RSA_BITS
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import CLIENT_KEY_ALGORITHMS

_LOOPBACK_NAMES = frozenset({"localhost"})


# Members of a JWK that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def usable_public_key(key: jwk.JWK) -> bool:
    """An EC key, or an RSA key of at least ``MIN_RSA_BITS`` (RFC 7518 §3.3), without private parts."""
    if key.has_private:
        return False
    if key.get("kty") == "RSA":
        size: int = key.get_op_key("verify").key_size
        return size >= MIN_RSA_BITS
    return bool(key.get("kty") == "EC")


def is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetchable(uri: str, *, allow_http_loopback: bool) -> bool:
    """May keys be fetched from ``uri``? HTTPS, no userinfo, no fragment; plain HTTP only on a
    loopback host, and only where ``FEDERATION_ALLOW_HTTP_LOOPBACK`` says so. Pure."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username or parts.password or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and allow_http_loopback and is_loopback(host)


def _is_string_list(value: Any, *, nonempty: bool = False) -> bool:
    return (
        isinstance(value, list)
        and (bool(value) or not nonempty)
        and all(isinstance(item, str) and item for item in value)
    )


def jwks_errors(value: Any) -> str | None:
    """Why a pasted JWKS is not a set of public signing keys, or None."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        return _('A JSON Web Key Set: {"keys": [...]}.')
    if not value["keys"]:
        return _("The key set has no keys.")
    for item in value["keys"]:
        if not isinstance(item, dict):
            return _("Every key must be a JSON object.")
        if item.get("kty") not in ("RSA", "EC"):
            return _("Only RSA and EC keys.")
        if set(item) & PRIVATE_MEMBERS:
            return _("Paste public keys only: a private or symmetric key does not belong here.")
        try:
            key = jwk.JWK(**item)
        except (jwk.InvalidJWKValue, ValueError, TypeError) as exc:
            return _("A key is not a valid JWK: %(error)s") % {"error": exc}
        if not usable_public_key(key):
            return _("RSA keys need at least %(bits)s bits.") % {"bits": MIN_RSA_BITS}
    return None


def configuration_errors(row: Any) -> dict[str, str]:
    """Field by field, what is wrong with a trusted issuer's configuration (a ``TrustedIssuer``
    row, whose ``clean`` calls this; the admin's form shows it). Reads the row, nothing else."""
    errors: dict[str, str] = {}
    if not row.issuer or any(char.isspace() for char in row.issuer):
        errors["issuer"] = _("The exact iss of its tokens, without spaces.")
    if bool(row.jwks_uri) == (row.jwks is not None):
        errors["jwks_uri"] = _("Give either a JWKS URI or a pasted JWKS, not both and not neither.")
    elif row.jwks_uri and not fetchable(
        row.jwks_uri, allow_http_loopback=token_exchange_settings.FEDERATION_ALLOW_HTTP_LOOPBACK
    ):
        errors["jwks_uri"] = _("An https URL (plain http only on a loopback address, where allowed).")
    elif row.jwks is not None:
        found = jwks_errors(row.jwks)
        if found:
            errors["jwks"] = found
    algorithms = row.algorithms
    if not _is_string_list(algorithms, nonempty=True) or not set(algorithms) <= set(CLIENT_KEY_ALGORITHMS):
        errors["algorithms"] = _("A JSON list of asymmetric algorithms among %(algorithms)s.") % {
            "algorithms": ", ".join(CLIENT_KEY_ALGORITHMS)
        }
    if not _is_string_list(row.audiences, nonempty=True):
        errors["audiences"] = _(
            "At least one audience: without one, a token it issued to anyone would be accepted here."
        )
    required = row.required_claims
    if not isinstance(required, dict) or not all(
        isinstance(name, str) and name and _is_string_list(values, nonempty=True)
        for name, values in required.items()
    ):
        errors["required_claims"] = _(
            'A JSON object of claim names to lists of allowed values: {"tid": ["…"]}.'
        )
    # Imported here: DOT's validators module reads the application model at import.
    from oauth2_provider.oauth2_validators import is_valid_resource_uri

    if not _is_string_list(row.resources) or not all(is_valid_resource_uri(uri) for uri in row.resources):
        errors["resources"] = _(
            'A JSON list of absolute URIs without a fragment, e.g. ["https://api.example.com/"].'
        )
    if row.create_users and not row.accept_id_tokens and not row.accept_access_tokens and not row.accept_jwts:
        errors["create_users"] = _("It accepts no kind of token.")
    return errors

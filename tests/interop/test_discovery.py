"""Discovery as a client library does it: Authlib builds the well-known URL from the issuer alone,
fetches the document and validates it (RFC 8414 §3, OpenID Connect Discovery §4)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from authlib.oauth2.rfc8414 import get_well_known_url
from authlib.oidc.discovery import OpenIDProviderMetadata

from .conftest import TIMEOUT, TOKEN_EXCHANGE, discover_by_oidc, discover_by_rfc8414

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.interop]

# What a client needs in order to exchange, refresh, introspect and revoke.
ENDPOINTS = ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri")
AUTHENTICATED_ENDPOINTS = ("token_endpoint", "introspection_endpoint", "revocation_endpoint")


def assert_usable(metadata: dict[str, Any], issuer: str) -> None:
    """Every endpoint on the issuer's origin; the grant and both client authentications listed
    wherever a client authenticates, with the algorithms a private_key_jwt client may sign with."""
    origin = urlsplit(issuer)[:2]
    for name in ENDPOINTS:
        assert urlsplit(metadata[name])[:2] == origin, name
    assert TOKEN_EXCHANGE in metadata["grant_types_supported"]
    assert "refresh_token" in metadata["grant_types_supported"]
    for endpoint in AUTHENTICATED_ENDPOINTS:
        methods = metadata[f"{endpoint}_auth_methods_supported"]
        assert {"client_secret_basic", "private_key_jwt"} <= set(methods), endpoint
        algorithms = metadata[f"{endpoint}_auth_signing_alg_values_supported"]
        assert "RS256" in algorithms, endpoint
        assert "none" not in algorithms, endpoint
        assert not any(alg.startswith("HS") for alg in algorithms), endpoint


def test_discovery_by_rfc8414(issuer):
    """``/.well-known/oauth-authorization-server/o`` for the issuer ``http://host/o``."""
    assert_usable(discover_by_rfc8414(issuer), issuer)


def test_discovery_by_openid_connect(issuer):
    """``/o/.well-known/openid-configuration``, with introspection and revocation listed too."""
    metadata = discover_by_oidc(issuer)
    assert_usable(metadata, issuer)
    assert "RS256" in metadata["id_token_signing_alg_values_supported"]
    assert metadata["userinfo_endpoint"].startswith(f"{issuer}/")


def test_openid_configuration_at_the_rfc8414_location(issuer):
    """RFC 8414 §5: ``/.well-known/openid-configuration/o``, where a client that builds every
    well-known URL the RFC 8414 way (Authlib's ``get_well_known_url(..., suffix=...)``) looks.
    The same document as at the OpenID Connect location."""
    url = get_well_known_url(issuer, external=True, suffix="openid-configuration")
    response = requests.get(url, timeout=TIMEOUT)
    assert response.status_code == 200, f"GET {url}: {response.status_code}"
    metadata = OpenIDProviderMetadata(response.json())
    metadata.validate()
    assert metadata == discover_by_oidc(issuer)


def test_both_documents_agree_where_they_overlap(issuer):
    """A client that discovers either way must end up at the same server, doing the same things."""
    rfc8414 = discover_by_rfc8414(issuer)
    oidc = discover_by_oidc(issuer)

    def comparable(value: Any) -> Any:
        return sorted(value) if isinstance(value, list) else value

    disagreements = {
        name: (rfc8414[name], oidc[name])
        for name in sorted(set(rfc8414) & set(oidc))
        if comparable(rfc8414[name]) != comparable(oidc[name])
    }
    assert disagreements == {}
    assert set(ENDPOINTS) <= set(rfc8414) & set(oidc)

"""The external OpenID provider harness (tests/external_idp) itself: the tokens it obtains from
panva's oidc-provider are what the tests that present them take them to be."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests

from tests import external_idp as harness
from tests.external_idp import ExternalIdP, new_rsa_jwk

external_idp = harness.external_idp  # the module-scoped fixture: a provider for this module's tests

API = "https://api.example.test/"


def verify(token: str, idp: ExternalIdP, *, audience: str) -> dict[str, Any]:
    """The token's claims, its signature checked against the JWKS fetched from the jwks_uri."""
    keys = jwt.PyJWKSet.from_dict(requests.get(idp.jwks_uri, timeout=10).json())
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [key for key in keys.keys if key.key_id == kid]
    claims: dict[str, Any] = jwt.decode(
        token, key=key.key, algorithms=["RS256"], audience=audience, issuer=idp.issuer
    )
    return claims


def test_the_provider_publishes_its_discovery_and_jwks(external_idp: ExternalIdP) -> None:
    assert external_idp.issuer.startswith("http://127.0.0.1:")
    assert external_idp.jwks_uri == f"{external_idp.issuer}/jwks"
    assert [key["kid"] for key in external_idp.jwks()["keys"]] == ["external-idp-1"]
    assert all("d" not in key for key in external_idp.jwks()["keys"])


def test_an_id_token_carries_the_claims_of_the_login(external_idp: ExternalIdP) -> None:
    token = external_idp.id_token(
        sub="alice", email="alice@example.com", email_verified=True, tid="t1", client_id="partner-app"
    )

    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": "external-idp-1"}
    claims = verify(token, external_idp, audience="partner-app")
    assert claims["iss"] == external_idp.issuer
    assert claims["sub"] == "alice"
    assert claims["aud"] == "partner-app"
    assert (claims["email"], claims["email_verified"], claims["tid"]) == ("alice@example.com", True, "t1")
    assert claims["exp"] - claims["iat"] == 600
    assert "hd" not in claims


def test_a_jwt_access_token_for_a_resource(external_idp: ExternalIdP) -> None:
    tokens = external_idp.login(
        sub="bob", resource=API, scope="openid email api", email="bob@example.com", hd="example.com"
    )

    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["typ"].lower() == "at+jwt"
    assert (header["alg"], header["kid"]) == ("RS256", "external-idp-1")
    access = verify(tokens["access_token"], external_idp, audience=API)
    assert (access["sub"], access["aud"], access["scope"], access["client_id"]) == (
        "bob",
        API,
        "api",
        "partner-app",
    )
    identity = verify(tokens["id_token"], external_idp, audience="partner-app")
    assert (identity["sub"], identity["email"], identity["hd"]) == ("bob", "bob@example.com", "example.com")


def test_a_client_credentials_token_has_the_client_as_its_subject(external_idp: ExternalIdP) -> None:
    token = external_idp.client_credentials_token(resource=API, scope="api read")

    assert jwt.get_unverified_header(token)["typ"].lower() == "at+jwt"
    claims = verify(token, external_idp, audience=API)
    assert (claims["sub"], claims["client_id"], claims["scope"]) == ("partner-app", "partner-app", "api read")


@pytest.fixture
def rotating_idp() -> Iterator[ExternalIdP]:
    """A provider of the test's own, whose keys the test may change, with long-lived tokens."""
    idp = ExternalIdP.start(keys=[new_rsa_jwk("k1")], id_token_ttl=86400, access_token_ttl=86400)
    try:
        yield idp
    finally:
        idp.stop()


def test_rotation_signs_with_the_new_key_and_publishes_both(rotating_idp: ExternalIdP) -> None:
    [old_key] = rotating_idp.keys
    issuer = rotating_idp.issuer
    before = rotating_idp.id_token(sub="carol")
    claims = verify(before, rotating_idp, audience="partner-app")
    assert claims["exp"] - claims["iat"] == 86400

    rotating_idp.rotate(keys=[new_rsa_jwk("k2"), old_key])

    assert rotating_idp.issuer == issuer
    assert [key["kid"] for key in rotating_idp.jwks()["keys"]] == ["k2", "k1"]
    after = rotating_idp.login(sub="carol", resource=API, scope="openid api")
    assert jwt.get_unverified_header(after["id_token"])["kid"] == "k2"
    assert jwt.get_unverified_header(after["access_token"])["kid"] == "k2"
    access = verify(after["access_token"], rotating_idp, audience=API)
    assert access["exp"] - access["iat"] == 86400
    # A token signed before the rotation still verifies: the old key is still published.
    assert verify(before, rotating_idp, audience="partner-app")["sub"] == "carol"


def test_a_claim_the_id_token_would_drop_is_refused(external_idp: ExternalIdP) -> None:
    with pytest.raises(ValueError, match="would not reach the ID token"):
        external_idp.id_token(sub="dave", department="sales")

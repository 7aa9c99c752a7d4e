"""PyJWT's ``PyJWKClient`` verifying what the server issues against the discovered ``jwks_uri``,
as a resource server (RFC 9068 §4) or a relying party (OpenID Connect Core §3.1.3.7) does:
the algorithm is the verifier's own choice (RFC 8725 §3.1), never the token's or the discovery
document's; issuer, audience and expiry are checked; ``act`` says who acts (RFC 8693 §4.1)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from example_project.demo import data

from .conftest import ACCESS_TOKEN, ID_TOKEN, JWT, TOKEN_EXCHANGE, USER_ID, secret_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.interop]

REQUIRED = ["exp", "iat", "iss", "aud", "sub"]


def verified(token: str, discovered: dict[str, Any], *, audience: str, issuer: str) -> dict[str, Any]:
    """PyJWT's documented way: the signing key by the token's ``kid`` from the discovered
    ``jwks_uri``, then ``decode`` with the verifier's own algorithm, audience and issuer."""
    signing_key = jwt.PyJWKClient(discovered["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.PyJWT().decode_complete(  # PyJWT 2.8 (the floor) exports it only on PyJWT
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=issuer,
        options={"require": REQUIRED},
    )


def exchange(portal: Any, token_endpoint: str, **params: Any) -> dict[str, Any]:
    with secret_session(portal) as client:
        return dict(client.fetch_token(token_endpoint, grant_type=TOKEN_EXCHANGE, **params))


def test_jwt_access_token_and_id_token(discovered, issuer, portal, end_user, user_tokens):
    access = exchange(
        portal,
        discovered["token_endpoint"],
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN,
        requested_token_type=JWT,
        audience=data.AGGREGATES_URI,
        scope="read",
    )
    assert (access["issued_token_type"], access["token_type"]) == (JWT, "Bearer")

    # RFC 9068: the aggregates API verifies the token offline, as meant for its resource URI.
    decoded = verified(access["access_token"], discovered, audience=data.AGGREGATES_URI, issuer=issuer)
    assert decoded["header"]["typ"] == "at+jwt"  # RFC 9068 §4: PyJWT leaves typ to its caller
    assert decoded["header"]["alg"] == "RS256"
    claims = decoded["payload"]
    assert claims["sub"] == str(end_user.pk)
    assert claims["client_id"] == "portal"
    assert claims["scope"] == "read"
    assert claims["aud"] == [data.AGGREGATES_URI]
    assert claims["iat"] <= time.time() < claims["exp"]
    assert claims["exp"] - claims["iat"] == access["expires_in"]
    assert "act" not in claims
    # The same token is no credential at another service, nor from another issuer.
    with pytest.raises(jwt.InvalidAudienceError):
        verified(access["access_token"], discovered, audience=data.SETTINGS_URI, issuer=issuer)
    with pytest.raises(jwt.InvalidIssuerError):
        verified(
            access["access_token"],
            discovered,
            audience=data.AGGREGATES_URI,
            issuer="http://127.0.0.1:8000/o",
        )

    # RFC 8693 §3: an ID token is no access token: token_type N_A.
    id_token = exchange(
        portal,
        discovered["token_endpoint"],
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN,
        requested_token_type=ID_TOKEN,
    )
    assert (id_token["issued_token_type"], id_token["token_type"]) == (ID_TOKEN, "N_A")
    claims = verified(id_token["access_token"], discovered, audience="portal", issuer=issuer)["payload"]
    assert claims["sub"] == str(end_user.pk)
    assert claims["azp"] == "portal"
    assert claims["iat"] <= time.time() < claims["exp"]
    assert "act" not in claims


def test_impersonated_tokens_say_who_acts(
    discovered, issuer, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    """Both the access token and the ID token of an impersonation carry ``act``: the support
    agent, named by this issuer."""
    impersonation = {
        "subject_token": str(end_user_in_acme.pk),
        "subject_token_type": USER_ID,
        "actor_token": support_tokens["access_token"],
        "actor_token_type": ACCESS_TOKEN,
    }
    act = {"iss": issuer, "sub": str(support.pk)}

    access = exchange(
        portal,
        discovered["token_endpoint"],
        requested_token_type=JWT,
        audience=data.AGGREGATES_URI,
        scope="read",
        **impersonation,
    )
    decoded = verified(access["access_token"], discovered, audience=data.AGGREGATES_URI, issuer=issuer)
    assert decoded["header"]["typ"] == "at+jwt"
    assert decoded["payload"]["sub"] == str(end_user_in_acme.pk)
    assert decoded["payload"]["act"] == act

    id_token = exchange(portal, discovered["token_endpoint"], requested_token_type=ID_TOKEN, **impersonation)
    assert id_token["token_type"] == "N_A"
    claims = verified(id_token["access_token"], discovered, audience="portal", issuer=issuer)["payload"]
    assert claims["sub"] == str(end_user_in_acme.pk)
    assert claims["act"] == act

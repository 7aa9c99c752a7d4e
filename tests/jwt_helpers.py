from __future__ import annotations

import json
from typing import Any

from django.test import Client
from jwcrypto import jwk, jws


def jwks() -> jwk.JWKSet:
    return jwk.JWKSet.from_json(Client().get("/o/.well-known/jwks.json").content)


def verify(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a JWT we issued against the published JWKS, as a resource server would."""
    checker = jws.JWS()
    checker.deserialize(token)
    header = json.loads(checker.objects["protected"])
    key = jwks().get_key(header["kid"])
    assert key is not None, "kid is not in the JWKS"
    checker.allowed_algs = ["RS256"]
    checker.verify(key)
    return header, json.loads(checker.payload)

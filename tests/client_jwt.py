"""What a client does with its key file: sign assertions and subject JWTs, with PyJWT.

Also the forgeries an attacker would try, built by hand where PyJWT rightly refuses to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from token_exchange.client_keys import generate_key_pair
from token_exchange.constants import CLIENT_ASSERTION_TYPE
from token_exchange.models import ClientKey

ISSUER = "http://127.0.0.1:8000/o"
TOKEN_ENDPOINT = "http://127.0.0.1:8000/o/token/"


@dataclass
class KeyFile:
    """The JSON key file ``createclientkey`` prints: what the client keeps."""

    client_id: str
    kid: str
    key: str  # private key, PEM
    algorithm: str
    public_key: str


def register_key(app: Any, algorithm: str = "RS256", **fields: Any) -> KeyFile:
    pair = generate_key_pair(algorithm)
    kid = fields.pop("kid", pair.kid)
    ClientKey.objects.create(
        application=app, kid=kid, public_key=pair.public_pem, algorithm=algorithm, **fields
    )
    return KeyFile(app.client_id, kid, pair.private_pem, algorithm, pair.public_pem)


def assertion_claims(client_id: str, **overrides: Any) -> dict[str, Any]:
    """RFC 7523 §3: iss = sub = client_id, aud = the issuer, short-lived, one jti."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def subject_claims(client_id: str, user: Any, **overrides: Any) -> dict[str, Any]:
    """ZITADEL's self-signed subject: iss = client_id, sub = the user, aud = the issuer."""
    return assertion_claims(client_id, **{"sub": str(user.pk), **overrides})


def sign(key_file: KeyFile, claims: dict[str, Any], **headers: Any) -> str:
    """As a client would with PyJWT; ``kid=None`` leaves the kid header out."""
    header: dict[str, Any] = {"kid": key_file.kid, **headers}
    header = {name: value for name, value in header.items() if value is not None}
    algorithm = header.pop("alg", key_file.algorithm)
    return jwt.encode(claims, key_file.key, algorithm=algorithm, headers=header)


def sign_any_header(key_file: KeyFile, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Really signed by the key, with a header PyJWT would refuse to write (e.g. a numeric kid)."""
    algorithm = jwt.get_algorithm_by_name(key_file.algorithm)
    signing_input = f"{_segment({'alg': key_file.algorithm, **header})}.{_segment(claims)}"
    signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(key_file.key))
    return f"{signing_input}.{_segment(signature)}"


def assertion(key_file: KeyFile, **overrides: Any) -> str:
    return sign(key_file, assertion_claims(key_file.client_id, **overrides))


def assertion_form(token: str) -> dict[str, str]:
    return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": token}


def _segment(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_segment(header)}.{_segment(claims)}.{_segment(signature) if signature else ''}"


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256/384/512 (per ``header["alg"]``) with a "secret" the attacker knows: a public key."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_segment(signature)}"

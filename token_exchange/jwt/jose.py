"""Compact JWS signing and verification on jwcrypto (which DOT already depends on).

Only the compact serialization is accepted (RFC 7515 §7.1): a JSON-serialized JWS, a JWE or
anything else is refused before any key is touched. The caller always names the one algorithm
it accepts (RFC 8725 §3.1), so ``alg: none`` and algorithm confusion fail here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException, base64url_decode
from oauth2_provider.utils import jwk_from_pem

_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class JoseError(Exception):
    """A token that is not a well-formed, correctly signed compact JWS."""


def _decode_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(base64url_decode(segment))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: a few KB of "[[[[…" nest deeper than the parser recurses.
        raise JoseError("segment is not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise JoseError("segment is not a JSON object")
    return value


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the *unverified* header and claims; use them only to find the key."""
    if not _COMPACT_JWS.match(token):
        raise JoseError("not a compact JWS")
    header_segment, payload_segment, _signature = token.split(".")
    return _decode_segment(header_segment), _decode_segment(payload_segment)


def verify(token: str, key: jwk.JWK, algorithm: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify ``token`` with ``key`` under exactly ``algorithm``; return header and claims."""
    header, claims = peek(token)
    if header.get("alg") != algorithm:
        raise JoseError("unexpected alg")
    if "crit" in header:
        # RFC 7515 §4.1.11: we understand no extension, so any "crit" header is fatal.
        raise JoseError("crit header")
    verifier = jws.JWS()
    verifier.allowed_algs = [algorithm]
    try:
        verifier.deserialize(token)
        verifier.verify(key, alg=algorithm)
    except (JWException, ValueError, TypeError) as exc:
        raise JoseError("bad signature") from exc
    return header, claims


def sign(claims: dict[str, Any], key: jwk.JWK, algorithm: str, *, typ: str, kid: str | None = None) -> str:
    """The compact JWS of ``claims`` under our own protected header (``alg``, ``typ``, ``kid``).

    Signed with jwcrypto's ``JWSCore``, the signing step its ``JWS`` object runs: ``JWS`` first
    copies its whole header registry (``copy.deepcopy``, 0.05 ms of a 0.33 ms RS256 signature,
    issue 19) to check headers a caller could give it. This header is ours, three fixed names,
    no ``crit``, no unprotected part, so there is nothing to check; ``tests/test_signed_jwt.py``
    proves the output is byte for byte what ``JWS`` writes (RS256 signatures are deterministic).
    """
    header: dict[str, Any] = {"alg": algorithm, "typ": typ}
    if kid:
        header["kid"] = kid
    payload = json.dumps(claims, separators=(",", ":"), default=str).encode("utf-8")
    signed = jws.JWSCore(algorithm, key, json.dumps(header, separators=(",", ":")), payload).sign()
    return f"{signed['protected']}.{signed['payload'].decode('ascii')}.{signed['signature']}"


def server_key(private_key_pem: str) -> jwk.JWK:
    """The server's RSA key from DOT's ``OIDC_RSA_PRIVATE_KEY`` (parsed once per PEM, cached by DOT)."""
    key: jwk.JWK = jwk_from_pem(private_key_pem)
    return key

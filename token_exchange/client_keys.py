"""Client keys: parsing a registered public key, generating a key pair, choosing the key.

A key is only ever chosen among the keys registered for the client that claims to have signed,
by ``kid`` or as that client's only key. Nothing in a JWS header (``jku``, ``x5u``, ``jwk``,
``x5c``) can point anywhere else, and nothing is ever fetched.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk
from jwcrypto.common import JWException

from token_exchange.constants import CLIENT_KEY_ALGORITHMS

# The curve each ES algorithm is defined on (RFC 7518 §3.4).
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
# RFC 7518 §3.3 and §3.5: RSA keys of at least 2048 bits.
MIN_RSA_BITS = 2048


class InvalidKey(ValueError):
    """A public key that cannot verify signatures of the algorithm it is registered with."""


def _check_key_type(public_key: Any, algorithm: str) -> None:
    if algorithm not in CLIENT_KEY_ALGORITHMS:
        raise InvalidKey(f"{algorithm!r} is not an allowed algorithm.")
    if algorithm.startswith(("RS", "PS")):
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise InvalidKey(f"{algorithm} needs an RSA key.")
        if public_key.key_size < MIN_RSA_BITS:
            raise InvalidKey(f"RSA keys must have at least {MIN_RSA_BITS} bits.")
        return
    curve = _CURVES[algorithm]
    if not (isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, curve)):
        raise InvalidKey(f"{algorithm} needs an EC key on curve {curve.name}.")


@lru_cache(maxsize=256)
def parse_public_key(pem: str, algorithm: str) -> jwk.JWK:
    """The JWK of a PEM public key registered for ``algorithm``, or :class:`InvalidKey`.

    Cached per (PEM, algorithm): parsing costs more than verifying an RS256 signature.
    """
    data = pem.strip().encode("ascii", "replace")
    if b"PRIVATE KEY" in data:
        raise InvalidKey("This is a private key: register the public key, the client keeps the private one.")
    try:
        public_key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidKey("Not a PEM-encoded public key (-----BEGIN PUBLIC KEY-----).") from exc
    _check_key_type(public_key, algorithm)
    return jwk.JWK.from_pyca(public_key)


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    kid: str  # RFC 7638 JWK thumbprint of the public key


def generate_key_pair(algorithm: str) -> KeyPair:
    """A fresh key pair for ``algorithm``: RSA 2048 bits, or the algorithm's EC curve."""
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm.startswith(("RS", "PS")):
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    elif algorithm in _CURVES:
        private_key = ec.generate_private_key(_CURVES[algorithm]())
    else:
        raise InvalidKey(f"{algorithm!r} is not an allowed algorithm.")
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    kid = jwk.JWK.from_pyca(private_key.public_key()).thumbprint()
    return KeyPair(private_pem=private_pem, public_pem=public_pem, kid=kid)


def choose_key(keys: Sequence[Any], *, kid: object) -> Any | str:
    """The key a JWS header's ``kid`` names among one client's usable keys, or a reason code.

    Pure. ``keys`` are the client's usable keys (anything with a ``kid`` attribute). Without a
    ``kid`` header the client must have exactly one usable key; with one, it must be a string
    naming one of them exactly.
    """
    if kid is None:
        if len(keys) == 1:
            return keys[0]
        return "no_usable_key" if not keys else "kid_required"
    if not isinstance(kid, str) or not kid:
        return "malformed_kid"
    for key in keys:
        if key.kid == kid:
            return key
    return "unknown_kid"


class RegisteredKey(Protocol):
    """What a ``ClientKey`` row is to the functions here: a kid, a PEM public key, an algorithm."""

    @property
    def kid(self) -> str: ...

    @property
    def public_key(self) -> str: ...

    @property
    def algorithm(self) -> str: ...


def public_jwk(key: RegisteredKey) -> dict[str, Any]:
    """The RFC 7517 JWK of a registered key: its public members, ``kid``, ``alg``, ``use: sig``.

    Pure. :class:`InvalidKey` if the PEM is not a public key of the algorithm's type and size.
    """
    members: dict[str, Any] = parse_public_key(key.public_key, key.algorithm).export_public(as_dict=True)
    return {**members, "kid": key.kid, "alg": key.algorithm, "use": "sig"}


def jwks(keys: Iterable[RegisteredKey]) -> dict[str, list[dict[str, Any]]]:
    """The RFC 7517 JWK Set ``{"keys": [...]}`` of ``keys``, in their order. Pure.

    A key that does not parse is left out: it verifies nothing here either (``unusable_key``).
    """
    members = []
    for key in keys:
        try:
            members.append(public_jwk(key))
        except InvalidKey:
            continue
    return {"keys": members}


@dataclass(frozen=True)
class JWKSKey:
    """A key of a JWK Set, in the shape of a ``ClientKey`` (``RegisteredKey``)."""

    kid: str
    public_key: str  # PEM SubjectPublicKeyInfo
    algorithm: str


def keys_in_jwks(text: str) -> list[JWKSKey]:
    """The keys of a JWK Set (DOT's ``Application.client_jwks``) that this package's rules accept,
    for ``signed_jwt.verify(keys=...)``. Pure; anything else in the set is left out.

    Each must be a public key with a ``kid`` and an ``alg`` among ``CLIENT_KEY_ALGORITHMS``
    (here a key verifies under its one algorithm only), ``use`` absent or ``sig``, ``key_ops``
    absent or a list with ``verify``, of the algorithm's type and size, and a ``kid`` no other
    key of the set has. ``export_client_jwks`` writes
    keys of that kind; a set without ``alg`` members verifies nothing here.
    """
    try:
        data = json.loads(text)
    except ValueError:
        return []
    members = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(members, list):
        return []
    keys = []
    for member in members:
        if not isinstance(member, dict):
            continue
        kid, algorithm, key_ops = member.get("kid"), member.get("alg"), member.get("key_ops")
        if not (isinstance(kid, str) and kid) or algorithm not in CLIENT_KEY_ALGORITHMS:
            continue
        if member.get("use", "sig") != "sig":
            continue
        if key_ops is not None and not (isinstance(key_ops, list) and "verify" in key_ops):
            continue
        try:
            key = jwk.JWK(**member)
            if key.has_private:
                continue
            pem = key.export_to_pem().decode("ascii")
            parse_public_key(pem, algorithm)
        except (JWException, InvalidKey, ValueError, TypeError):
            continue
        keys.append(JWKSKey(kid=kid, public_key=pem, algorithm=algorithm))
    # A kid named twice is ambiguous: which key it means is not ours to guess, so neither counts.
    named = Counter(key.kid for key in keys)
    return [key for key in keys if named[key.kid] == 1]

"""A fast hasher for client secrets that a machine generated, never for passwords.

DOT hashes client secrets with ``OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"]``, by default the first
``PASSWORD_HASHERS`` entry, and checks the hash on every request a client authenticates with a
secret. Django's default, PBKDF2 with a million iterations, exists to slow down guessing
passwords people chose; it costs hundreds of milliseconds a request. A secret of 128 random
characters (what DOT generates, some 760 bits) cannot be guessed however fast the hash, so one
salted SHA-256 keeps it as safe at rest (OWASP's advice for API keys) at a few microseconds.

Use it for client secrets only: list it in ``PASSWORD_HASHERS`` *after* the password hasher, so
user passwords keep theirs, and name its algorithm in ``CLIENT_SECRET_HASHER``::

    PASSWORD_HASHERS = [*global_settings.PASSWORD_HASHERS, "token_exchange.hashers.ClientSecretHasher"]
    OAUTH2_PROVIDER = {..., "CLIENT_SECRET_HASHER": "token_exchange_sha256"}

A secret a person typed (``portal-secret``) is as weak with this hasher as its length allows:
let DOT generate secrets, or authenticate clients with ``private_key_jwt`` instead.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_noop as _


class ClientSecretHasher(BasePasswordHasher):
    """Salted SHA-256: ``token_exchange_sha256$<salt>$<hex digest>``."""

    algorithm = "token_exchange_sha256"

    def encode(self, password: str, salt: str) -> str:
        if password is None:
            raise TypeError("password must be provided.")
        if not salt or "$" in salt:
            raise ValueError("salt must be provided and cannot contain $.")
        digest = hashlib.sha256((salt + password).encode()).hexdigest()
        return f"{self.algorithm}${salt}${digest}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": digest, "salt": salt}

    def verify(self, password: str, encoded: str) -> bool:
        decoded = self.decode(encoded)
        return constant_time_compare(encoded, self.encode(password, decoded["salt"]))

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("salt"): mask_hash(decoded["salt"], show=2),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        return False

    def harden_runtime(self, password: str, encoded: str) -> None:
        pass

"""One use per ``jti``: the replay store for JWTs a client signs (RFC 7523 §3 item 7).

Client assertions and self-signed subject JWTs share one namespace per client, so a JWT is
accepted once in total, whichever parameter carries it. The store is Django's cache: ``add``
is atomic in the shared backends (Redis ``SET NX``, Memcached ``add``, the database cache's
primary key) and under a lock in ``LocMemCache``, which however is per process.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache

from .conf import token_exchange_settings

logger = logging.getLogger("token_exchange")


def _key(client_id: str, jti: str) -> str:
    # Hashed: a jti is client input of any length and alphabet, cache keys are not.
    digest = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
    return f"token_exchange:jti:{digest}"


def consume(*, client_id: str, jti: str, expires_at: int) -> bool:
    """True the first time ``client_id`` presents ``jti``; False on a replay.

    The entry lives until the JWT can no longer be accepted (``expires_at`` plus the leeway).
    A store that cannot remember (``DummyCache``) or does not answer refuses every JWT:
    without it, one-time use cannot be promised.
    """
    try:
        cache = caches[token_exchange_settings.REPLAY_CACHE]
        if isinstance(cache, DummyCache):
            logger.error("The replay cache is a DummyCache: every client-signed JWT is refused.")
            return False
        timeout = max(1, math.ceil(expires_at + token_exchange_settings.JWT_LEEWAY_SECONDS - time.time()))
        return bool(cache.add(_key(client_id, jti), 1, timeout=timeout))
    except Exception:
        # A missing alias, a Redis that is down: fail closed, the token endpoint answers 401.
        logger.exception("The replay cache did not answer: the client-signed JWT is refused.")
        return False

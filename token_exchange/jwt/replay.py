"""One use per ``jti``: the replay store for JWTs a client signs (RFC 7523 §3 item 7).

Client assertions and self-signed subject JWTs share one namespace per client, so a JWT is
accepted once in total, whichever parameter carries it. The store is Django's cache: ``add``
is atomic in the shared backends (Redis ``SET NX``, Memcached ``add``, the database cache's
primary key) and under a lock in ``LocMemCache``, which however is per process.

A store that cannot answer refuses every JWT, and says so (:class:`ReplayStoreUnavailable`,
503): it never calls a JWT replayed that it could not look up. A store that lost its entries
(a Redis restarted empty) accepts a JWT used before it once more, until the JWT expires: at
most ``signed_jwt.MAX_LIFETIME_SECONDS`` plus twice ``JWT_LEEWAY_SECONDS`` after that use.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache

from token_exchange.conf import token_exchange_settings
from token_exchange.exceptions import ReplayStoreUnavailable

logger = logging.getLogger("token_exchange")


def _key(client_id: str, jti: str) -> str:
    # Hashed: a jti is client input of any length and alphabet, cache keys are not.
    digest = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
    return f"token_exchange:jti:{digest}"


def consume(*, client_id: str, jti: str, expires_at: int) -> bool:
    """True the first time ``client_id`` presents ``jti``; False on a replay: it was used before.

    The entry lives until the JWT can no longer be accepted (``expires_at`` plus the leeway).

    :class:`ReplayStoreUnavailable` when the store cannot tell: it does not answer (Redis down,
    a missing alias) or cannot remember (``DummyCache``). One-time use cannot be promised then,
    so no JWT is accepted (fail closed), but neither is it called a replay: the client's
    credentials are fine and nobody replayed anything, so the endpoints answer 503
    ``temporarily_unavailable``, and the audit trail says the store was down, not that a
    ``jti`` was used twice.
    """
    try:
        cache = caches[token_exchange_settings.REPLAY_CACHE]
        if not isinstance(cache, DummyCache):
            timeout = max(1, math.ceil(expires_at + token_exchange_settings.JWT_LEEWAY_SECONDS - time.time()))
            return bool(cache.add(_key(client_id, jti), 1, timeout=timeout))
    except Exception as exc:
        # A missing alias, a Redis that is down. The exception's type only, and no traceback or
        # chained cause: their text or frame variables (which error trackers record) could hold
        # the key or the jti.
        logger.error(
            "The replay cache did not answer (%s): the client-signed JWT is refused.", type(exc).__name__
        )
        raise ReplayStoreUnavailable() from None
    logger.error("The replay cache is a DummyCache: every client-signed JWT is refused.")
    raise ReplayStoreUnavailable()

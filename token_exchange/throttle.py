"""Refused exchanges counted per client; past a limit, ``429`` until the window ends.

A client whose exchanges keep being refused is probing (user ids, tokens, scopes) or broken;
either way it gets nothing by asking faster. After ``THROTTLE_REFUSALS`` refusals in one window
of ``THROTTLE_WINDOW_SECONDS``, every further token exchange request of that client is answered
``429 temporarily_unavailable`` with ``Retry-After`` (``exceptions.TooManyRefusals``) until the
window ends, and one ``token.exchange_throttled`` row says so.

Only an authenticated client is counted, never before: a stranger's bad requests are not
attributed to anyone (and leave no audit row), so nobody can lock a client out without its
credentials. Throttled requests are not refusals: they add neither to the count nor to the audit.

The count lives in Django's cache (``THROTTLE_CACHE``), in fixed windows: window
``floor(now / THROTTLE_WINDOW_SECONDS)`` has a key of its own, created with ``add`` and counted
with ``incr``, never read, changed and written back. Both are atomic in Redis and Memcached and
under a lock in ``LocMemCache`` (which is per process, so the limit is per process there); the
database and file caches implement ``incr`` as a read and a write, so concurrent refusals can
be counted once, which only delays the throttle. A cache that does not answer must not turn a
refusal into a 500 nor lock every client out: the throttle fails open, and says so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches

from token_exchange.conf import token_exchange_settings
from token_exchange.exceptions import TooManyRefusals
from token_exchange.issuance import audit

logger = logging.getLogger("token_exchange")


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Window:
    """The current window of one client: its cache key, its length and the seconds it has left."""

    key: str
    seconds: int
    retry_after: int


def _window(client: Any) -> Window:
    seconds = token_exchange_settings.THROTTLE_WINDOW_SECONDS
    now = _now()
    index = int(now // seconds)
    # The row, its client_id and when it was registered: a client deleted and registered again
    # under the same client_id (or a primary key a test database hands out again) starts afresh.
    identity = "\x00".join(
        str(part) for part in (client.pk, client.client_id, getattr(client, "created", None))
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()
    return Window(
        key=f"token_exchange:refusals:{digest}:{index}",
        seconds=seconds,
        retry_after=max(1, math.ceil((index + 1) * seconds - now)),
    )


def _unanswered(exc: Exception, consequence: str) -> None:
    """One line per request while the cache is down, naming the error's type: no traceback,
    which would repeat the cache client's internals on every request of an outage."""
    logger.error("The throttle cache did not answer (%s): %s.", type(exc).__name__, consequence)


def check(context: audit.AuditContext) -> None:
    """Raise :class:`TooManyRefusals` while the client is over its limit in this window.

    Call once the client is authenticated, before anything else is done for it.
    """
    limit = token_exchange_settings.THROTTLE_REFUSALS
    if not limit:
        return
    window = _window(context.application)
    try:
        count = caches[token_exchange_settings.THROTTLE_CACHE].get(window.key, 0)
    except Exception as exc:
        _unanswered(exc, "the request is not throttled")
        return
    if isinstance(count, int) and count >= limit:
        raise TooManyRefusals(retry_after=window.retry_after)


def refused(context: audit.AuditContext) -> None:
    """Count one refusal of the client; at the limit, write the one ``token.exchange_throttled``
    row of this window (``incr`` returns each count once, so one request crosses it)."""
    limit = token_exchange_settings.THROTTLE_REFUSALS
    if not limit:
        return
    window = _window(context.application)
    timeout = window.retry_after + 1
    try:
        cache = caches[token_exchange_settings.THROTTLE_CACHE]
        cache.add(window.key, 0, timeout=timeout)
        try:
            count = cache.incr(window.key)
        except ValueError:
            # Gone between add and incr (evicted, or the window's last second): count afresh.
            cache.add(window.key, 1, timeout=timeout)
            count = 1
    except Exception as exc:
        _unanswered(exc, "the refusal is not counted")
        return
    if count == limit:
        logger.warning(
            "Client %s was refused %d times within %d s: its token exchange requests are answered "
            "429 for the next %d s.",
            context.application.client_id,
            count,
            window.seconds,
            window.retry_after,
        )
        audit.throttled(context, refusals=count, window_seconds=window.seconds)

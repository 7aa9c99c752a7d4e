"""One bounded HTTP exchange with the issuer: the JWKS fetch and the introspection POST.

``requests``' ``timeout`` bounds the connection and each socket read, not the whole answer: an
endpoint sending a byte a second, in its headers or its body, holds a caller for as long as it
likes. Here a watchdog ends the exchange at ``timeout`` seconds however the endpoint answers: it
shuts down the socket of the connection, which wakes a read blocked on it, and an answer that
was cut short is a failure even when the body had no ``Content-Length``. Besides: no redirect is
followed (credentials and keys go to and come from the configured URL only), anything but 200
is a failure, and no more than ``max_bytes`` of body is read into memory.

To reach the socket, the connections of the exchange's own ``requests`` session are recorded as
they are made: each connection pool class of urllib3's ``PoolManager`` (``pool_classes_by_scheme``)
is subclassed with a ``ConnectionCls`` that notes itself and, once connected, its socket. No
public hook gives the socket before the headers are read; checked with urllib3 2.8 (1.26 has the
same attributes). A manager without them gets no watchdog, and the deadline is then checked only
between reads. Not bounded by the watchdog: the name lookup (``getaddrinfo`` takes no timeout).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

# An introspection answer or a JWKS is a few kilobytes; more is neither, and is not read.
MAX_ANSWER_BYTES = 1_000_000
# Small reads, so the deadline is checked often even where the watchdog could not be set.
_CHUNK_BYTES = 8192


class DownloadError(Exception):
    """The exchange failed; the message says why, for the log (never a token or a credential)."""


class _Watchdog:
    """Shuts down the sockets of the recorded connections once the deadline has passed."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self.sockets: list[Any] = []
        self.expired = False
        self._lock = threading.Lock()

    def record(self, connection: Any) -> None:
        with self._lock:
            self.connections.append(connection)

    def connected(self, sock: Any) -> None:
        # Kept apart from its connection: http.client lets go of the socket of an answer that
        # closes the connection (``Connection: close``) once its headers are read.
        with self._lock:
            self.sockets.append(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            # A connection's socket while it connects (the TLS handshake included), and each
            # socket a connection finished connecting.
            sockets = [getattr(connection, "sock", None) for connection in self.connections] + self.sockets
        for sock in sockets:
            if isinstance(sock, socket.socket):
                # socket.socket's own shutdown, also for a TLS socket: it wakes a reader blocked
                # in recv without touching the TLS state another thread is using.
                with contextlib.suppress(OSError):  # already closed
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, whose pool managers record every connection they make."""

    def __init__(self, watchdog: _Watchdog) -> None:
        self.watchdog = watchdog
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._watch(self.poolmanager)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        self._watch(manager)
        return manager

    def _watch(self, manager: Any) -> None:
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if not isinstance(classes, dict):
            return
        watched = {}
        for scheme, pool_class in classes.items():
            connection_class = getattr(pool_class, "ConnectionCls", None)
            if not isinstance(connection_class, type) or getattr(pool_class, "watchdog", None):
                return  # already watched, or a pool of another shape: the body's deadline only
            watched[scheme] = _watched_pool(pool_class, connection_class, self.watchdog)
        manager.pool_classes_by_scheme = watched


def _watched_pool(pool_class: type, connection_class: Any, watchdog: _Watchdog) -> type:
    def __init__(connection: Any, *args: Any, **kwargs: Any) -> None:
        connection_class.__init__(connection, *args, **kwargs)
        watchdog.record(connection)

    def connect(connection: Any) -> None:
        connection_class.connect(connection)
        watchdog.connected(connection.sock)
        if watchdog.expired:  # the deadline passed while it connected: before any request goes
            raise DownloadError("connected too late")

    connection = type(
        connection_class.__name__, (connection_class,), {"__init__": __init__, "connect": connect}
    )
    return type(pool_class.__name__, (pool_class,), {"ConnectionCls": connection, "watchdog": watchdog})


def fetch(
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    max_bytes: int = MAX_ANSWER_BYTES,
    data: dict[str, str] | None = None,
) -> bytes:
    """The body of a 200 answer to ``method url``, within ``timeout`` seconds for the whole
    exchange and at most ``max_bytes``; else :class:`DownloadError`."""
    deadline = time.monotonic() + timeout
    watchdog = _Watchdog()
    timer = threading.Timer(timeout, watchdog.expire)
    timer.daemon = True
    too_big = DownloadError(f"the answer exceeds {max_bytes} bytes")
    with requests.Session() as session:
        adapter = _WatchedAdapter(watchdog)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        timer.start()
        try:
            with session.request(
                method,
                url,
                headers=headers,
                data=data,
                timeout=(timeout, timeout),  # the connection and each read; the watchdog the whole
                allow_redirects=False,
                stream=True,
            ) as response:
                if response.status_code != 200:
                    raise DownloadError(f"answered {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise too_big
                body = bytearray()
                for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                    body += chunk
                    if len(body) > max_bytes:
                        raise too_big
                    if time.monotonic() > deadline:
                        raise DownloadError(f"answered in more than {timeout} s")
        except DownloadError:
            raise
        except Exception as error:  # requests', urllib3's or the socket's: a failure, never a 500
            if watchdog.expired:
                raise DownloadError(f"answered in more than {timeout} s") from None
            raise DownloadError(f"failed: {type(error).__name__}") from None
        finally:
            timer.cancel()
    if watchdog.expired or time.monotonic() > deadline:
        # Also an answer without Content-Length whose socket the watchdog shut: it looks complete.
        raise DownloadError(f"answered in more than {timeout} s")
    return bytes(body)

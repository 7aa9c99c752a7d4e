"""W015 and W016: a Redis server behind the replay cache that may evict a live jti.

A Redis with ``maxmemory`` set evicts keys when it is full unless its ``maxmemory-policy`` is
``noeviction``; ``volatile-*`` policies evict keys with a TTL, and every jti key has one. An
evicted jti makes a JWT that is still valid acceptable again. ``manage.py check --deploy`` asks
each server in the replay cache's ``LOCATION`` (``INFO memory``), and says so when it cannot ask.

The servers asked are real: the machine's Redis at 127.0.0.1:6379 (no maxmemory; skipped when it
does not answer, unless REQUIRE_REDIS=1) and ``redis-server`` processes this module starts and
stops on ports of their own.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from django.core.cache.backends.redis import RedisCache
from django.core.checks import run_checks
from django.core.management import call_command

from token_exchange import checks

REQUIRE_REDIS = os.environ.get("REQUIRE_REDIS") == "1"
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"


class ReplayRedisCache(RedisCache):
    """A site's own subclass of Django's backend: the same server behind it."""


# --- The decision --------------------------------------------------------------------------------

MB = 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("maxmemory", "policy", "may_evict"),
    [
        # No limit: nothing is evicted, whatever the policy.
        (0, "noeviction", False),
        (0, "allkeys-lru", False),
        (0, "volatile-lru", False),
        # A limit: only noeviction keeps every key (a write fails instead).
        (MB, "noeviction", False),
        (MB, "allkeys-lru", True),
        (MB, "allkeys-lfu", True),
        (MB, "allkeys-random", True),
        # Every jti key has a TTL: the volatile-* policies evict them too.
        (MB, "volatile-lru", True),
        (MB, "volatile-lfu", True),
        (MB, "volatile-random", True),
        (MB, "volatile-ttl", True),
        # A policy of a later Redis is taken to evict.
        (MB, "allkeys-some-new-policy", True),
        (1, " NoEviction ", False),
    ],
)
def test_which_memory_policies_may_evict_a_live_jti(maxmemory, policy, may_evict):
    assert checks.redis_may_evict(maxmemory=maxmemory, policy=policy) is may_evict


# --- Servers to ask ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int, password: str | None = None) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def unavailable(reason: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(f"{reason} (REQUIRE_REDIS=1)")
    pytest.skip(reason)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[Callable[..., int]]:
    """Starts a ``redis-server`` of this test's own with the given arguments; its port."""
    if not os.access(REDIS_SERVER, os.X_OK):
        unavailable(f"no {REDIS_SERVER}")
    started: list[subprocess.Popen[bytes]] = []

    def start(*arguments: str, password: str | None = None) -> int:
        port = free_port()
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(tmp_path), *arguments]
            + (["--requirepass", password] if password else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while not answers(port, password):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server {' '.join(arguments)} did not start on port {port}")
            time.sleep(0.05)
        return port

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


EVICTING = ("--maxmemory", "10mb", "--maxmemory-policy", "volatile-lru")


def replay_cache(settings, location: str | list[str] | None, backend: str = REDIS_BACKEND, **options) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "replay": {"BACKEND": backend, "LOCATION": location, **({"OPTIONS": options} if options else {})},
    }
    settings.TOKEN_EXCHANGE = {"REPLAY_CACHE": "replay"}


def check_deploy() -> str:
    """What ``manage.py check --deploy`` prints: warnings go to stderr and do not fail it."""
    out, err = io.StringIO(), io.StringIO()
    call_command("check", "--deploy", "--tag", "caches", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


# --- The machine's Redis -------------------------------------------------------------------------


def test_the_machines_redis_keeps_every_key(settings):
    """127.0.0.1:6379 runs without maxmemory (and with noeviction): nothing to say."""
    if not answers(6379):
        unavailable("no Redis answers at 127.0.0.1:6379")
    replay_cache(settings, "redis://127.0.0.1:6379/1")
    assert checks.check_replay_cache_eviction() == []
    output = check_deploy()
    assert "token_exchange.W015" not in output
    assert "token_exchange.W016" not in output


# --- W015: a server that evicts ------------------------------------------------------------------


def test_w015_a_redis_that_evicts_keys_with_a_ttl(settings, redis_server):
    port = redis_server(*EVICTING)
    replay_cache(settings, f"redis://127.0.0.1:{port}/0")

    [warning] = checks.check_replay_cache_eviction()

    assert warning.id == "token_exchange.W015"
    assert warning.msg == (
        f"TOKEN_EXCHANGE['REPLAY_CACHE'] is kept by the Redis server 127.0.0.1:{port}, which evicts "
        "keys once it holds maxmemory (10485760 bytes) under maxmemory-policy volatile-lru: the jti "
        "of a JWT that is still valid can be evicted (each has a TTL, so volatile-* policies evict "
        "them too), and the JWT accepted again."
    )
    assert warning.hint == (
        "Set 'maxmemory-policy noeviction' on that server: when it is full, a write fails instead "
        "of forgetting a key, and the token endpoint refuses client-signed JWTs until there is room "
        "(it fails closed). Or give the replay store a Redis of its own, with noeviction or "
        "maxmemory 0."
    )


def test_w015_only_with_check_deploy_and_never_with_the_password(settings, redis_server):
    password = "replay-store-s3cret"
    port = redis_server(*EVICTING, password=password)
    replay_cache(settings, f"redis://:{password}@127.0.0.1:{port}")

    output = check_deploy()

    assert (
        f"token_exchange.W015) TOKEN_EXCHANGE['REPLAY_CACHE'] is kept by the Redis server 127.0.0.1:{port},"
        in (output)
    )
    assert password not in output
    # Without --deploy the server is not asked.
    assert "token_exchange.W015" not in [message.id for message in run_checks(tags=["caches"])]


def test_w015_for_each_server_that_evicts_and_a_subclass_of_the_backend(settings, redis_server):
    """RedisCache writes to the first server and reads from the others; each is asked."""
    keeps = redis_server("--maxmemory", "10mb", "--maxmemory-policy", "noeviction")
    evicts = redis_server("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru")
    unlimited = redis_server("--maxmemory", "0", "--maxmemory-policy", "allkeys-lru")
    location = f"redis://127.0.0.1:{keeps},redis://127.0.0.1:{evicts};redis://127.0.0.1:{unlimited}"
    replay_cache(settings, location, backend=f"{__name__}.ReplayRedisCache")

    [warning] = checks.check_replay_cache_eviction()

    assert warning.id == "token_exchange.W015"
    assert f"the Redis server 127.0.0.1:{evicts}, which evicts" in warning.msg
    assert "under maxmemory-policy allkeys-lru:" in warning.msg
    # LOCATION as a list, as RedisCache also takes it.
    replay_cache(settings, [f"redis://127.0.0.1:{evicts}", f"redis://127.0.0.1:{keeps}"])
    assert [m.id for m in checks.check_replay_cache_eviction()] == ["token_exchange.W015"]


def test_the_cache_options_are_used_to_ask(settings, redis_server):
    """A password in the cache's OPTIONS, as RedisCache hands it to redis-py, is the one used."""
    password = "options-s3cret"
    port = redis_server(*EVICTING, password=password)
    replay_cache(settings, f"redis://127.0.0.1:{port}", password=password, socket_timeout=30)
    [warning] = checks.check_replay_cache_eviction()
    assert warning.id == "token_exchange.W015"


# --- W016: a server that cannot be asked ---------------------------------------------------------


def w016_msg(name: str, reason: str) -> str:
    return (
        f"The memory policy of the Redis server {name} behind TOKEN_EXCHANGE['REPLAY_CACHE'] could "
        f"not be verified ({reason}): if it evicts keys once it holds maxmemory, the jti of a JWT "
        "that is still valid can be evicted, and the JWT accepted again."
    )


def test_w016_a_closed_port_at_once(settings):
    port = free_port()  # nobody listens on it
    replay_cache(settings, f"redis://:hunter2@127.0.0.1:{port}")

    started = time.monotonic()
    [warning] = checks.check_replay_cache_eviction()

    assert time.monotonic() - started < checks.REDIS_TIMEOUT_SECONDS
    assert warning.id == "token_exchange.W016"
    assert warning.msg == w016_msg(f"127.0.0.1:{port}", "no connection")
    assert warning.hint == (
        "Make sure the server runs with 'maxmemory-policy noeviction' or 'maxmemory 0' "
        "('redis-cli INFO memory' shows both), and that this site's credentials may run INFO. If it "
        "does and cannot be reached from where 'check --deploy' runs, add 'token_exchange.W016' to "
        "SILENCED_SYSTEM_CHECKS."
    )
    assert "hunter2" not in warning.msg + str(warning.hint)


def test_w016_a_wrong_password(settings, redis_server):
    port = redis_server(*EVICTING, password="the-right-one")
    replay_cache(settings, f"redis://:the-wrong-one@127.0.0.1:{port}")
    [warning] = checks.check_replay_cache_eviction()
    assert warning.msg == w016_msg(f"127.0.0.1:{port}", "authentication failed")
    assert "the-wrong-one" not in check_deploy()


def test_w016_a_server_that_does_not_allow_info(settings, redis_server):
    """A managed service may take INFO away; the check says it could not look."""
    port = redis_server(*EVICTING, "--rename-command", "INFO", '""')
    replay_cache(settings, f"redis://127.0.0.1:{port}")
    [warning] = checks.check_replay_cache_eviction()
    assert warning.msg == w016_msg(f"127.0.0.1:{port}", "INFO memory was refused")


@pytest.mark.parametrize(
    ("location", "name"),
    [
        ("http://user:pw-in-url@127.0.0.1:6379", "number 1 in LOCATION"),
        ("redis://user:pw-in-url@127.0.0.1:notaport", "number 1 in LOCATION"),
        ("", "number 1 in LOCATION"),
        (None, "number 1 in LOCATION"),
    ],
    ids=["not-redis", "bad-port", "empty", "none"],
)
def test_w016_a_location_that_is_not_a_redis_url(settings, location, name):
    replay_cache(settings, location, serializer="ignored.by.the.check")
    [warning] = checks.check_replay_cache_eviction()
    assert warning.msg == w016_msg(name, "LOCATION is not a Redis URL")
    assert "pw-in-url" not in warning.msg


def test_w016_a_server_that_never_answers_within_the_timeout_whatever_the_url_asks(settings):
    """The URL's query string wins over redis-py's keyword arguments: the check's bounds win over it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never answers
        port = silent.getsockname()[1]
        replay_cache(settings, f"redis://127.0.0.1:{port}/0?socket_timeout=60", socket_timeout=60)

        started = time.monotonic()
        [warning] = checks.check_replay_cache_eviction()

        assert time.monotonic() - started < checks.REDIS_TIMEOUT_SECONDS + 1
        assert warning.msg == w016_msg(f"127.0.0.1:{port}", "no answer within 2 seconds")


@pytest.fixture
def trickling_server() -> Iterator[int]:
    """Accepts, then answers any command one byte every 0.2 s, for ever: no socket timeout ends
    that; only the check's own deadline does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        connections: list[socket.socket] = []
        try:
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                    connections.append(connection)
                    connection.sendall(b"$100000\r\n")
                except TimeoutError:
                    pass
                for connection in connections:
                    with contextlib.suppress(OSError):
                        connection.sendall(b"x")
                stop.wait(0.1)
        finally:
            for connection in connections:
                connection.close()
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)


def test_w016_a_server_that_trickles_its_answer_is_given_up(settings, monkeypatch, trickling_server):
    monkeypatch.setattr(checks, "REDIS_DEADLINE_SECONDS", 1.5)
    replay_cache(settings, f"redis://127.0.0.1:{trickling_server}")

    started = time.monotonic()
    [warning] = checks.check_replay_cache_eviction()

    assert time.monotonic() - started < 2
    assert warning.msg == w016_msg(f"127.0.0.1:{trickling_server}", "no answer within 1.5 seconds")


def test_w016_without_redis_py(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis: ImportError
    replay_cache(settings, "redis://127.0.0.1:6379")
    [warning] = checks.check_replay_cache_eviction()
    assert warning.msg == w016_msg("127.0.0.1:6379", "redis-py is not installed")


def test_w016_names_the_server_without_the_password(settings):
    assert checks._redis_server_name("rediss://u:pw@cache.example.com:6380/0", 0) == "cache.example.com:6380"
    assert checks._redis_server_name("redis://:pw@10.0.0.5", 0) == "10.0.0.5:6379"
    assert checks._redis_server_name("redis://:pw@[::1]:7000", 0) == "[::1]:7000"
    assert checks._redis_server_name("unix://:pw@/run/redis.sock?db=1", 2) == "/run/redis.sock"


# --- Everything else is not asked ----------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.db.DatabaseCache",
        "django.core.cache.backends.memcached.PyMemcacheCache",
        "django.core.cache.backends.dummy.DummyCache",
    ],
)
def test_other_backends_are_not_asked(settings, monkeypatch, backend):
    monkeypatch.setattr(checks, "_ask_redis_servers", lambda *a: pytest.fail("a server was asked"))
    replay_cache(settings, "redis://127.0.0.1:1", backend=backend)
    assert checks.check_replay_cache_eviction() == []
    settings.TOKEN_EXCHANGE = {"REPLAY_CACHE": "missing"}  # E006 says so
    assert checks.check_replay_cache_eviction() == []


def test_a_resource_server_that_issues_nothing_is_not_asked(settings, monkeypatch):
    """It serves no token endpoint, so it keeps no jti."""
    monkeypatch.setattr(checks, "_ask_redis_servers", lambda *a: pytest.fail("a server was asked"))
    replay_cache(settings, "redis://127.0.0.1:1")
    settings.ROOT_URLCONF = "example_resource_server.urls"
    settings.OAUTH2_PROVIDER = {
        "OAUTH2_VALIDATOR_CLASS": "token_exchange.resource_server.IntrospectionValidator",
        "RESOURCE_SERVER_INTROSPECTION_URL": "https://id.example.com/o/introspect/",
        "RESOURCE_SERVER_INTROSPECTION_CREDENTIALS": ("aggregates", "secret"),
    }
    settings.TOKEN_EXCHANGE = {
        "REPLAY_CACHE": "replay",
        "RESOURCE_SERVER": {"ISSUER": "https://id.example.com/o", "RESOURCE_URI": "https://api.example.com/"},
    }
    assert checks.check_replay_cache_eviction() == []

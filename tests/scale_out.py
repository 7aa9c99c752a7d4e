"""Several server processes of the example, served as a deployment serves it.

Each :class:`Server` is a gunicorn master with its own worker processes, started with the
example's own configuration (``example_project/gunicorn.conf.py``, the one ``make serve`` uses)
and its production settings: DEBUG off, one fixed issuer, persistent database connections checked
before reuse, and the replay store and refusal throttle in Redis (``REDIS_URL``). They all use
pytest-django's test database, which the tests fill through the ORM in transactional tests, so
every row a test writes is committed and seen by every process.

One worker per server by default, so that "a request to another server" means "a request to
another process": the scale-out tests name the process that serves each request.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from django.db import connections, router

ROOT = Path(__file__).resolve().parent.parent

# A database of its own on the machine's Redis, flushed by the tests (never database 0 or 1,
# which `make serve` uses).
REDIS_URL = os.environ.get("SCALE_OUT_REDIS_URL", "redis://127.0.0.1:6379/13")
SECRET_KEY = "scale-out-suite-secret-key-shared-by-every-process-0123456789"

# What a shell may have exported for `make demo` or `make serve`: the servers get the suite's own.
_NOT_INHERITED = (
    "DEMO_ORIGIN",
    "OIDC_ISS_ENDPOINT",
    "REDIS_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DATABASE_CONN_MAX_AGE",
    "GUNICORN_CMD_ARGS",
    "WEB_CONCURRENCY",
    "BIND",
    "ACCESS_LOG",
)


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_client(url: str = REDIS_URL) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def database_url(model: Any) -> str:
    """The URL of the database ``model`` is written to: during the tests, pytest-django's."""
    settings = connections[router.db_for_write(model)].settings_dict
    user = quote(settings["USER"] or "", safe="")
    password = f":{quote(settings['PASSWORD'], safe='')}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{quote(settings['NAME'], safe='')}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Server:
    """One gunicorn master and its workers, on a port of its own."""

    def __init__(self, name: str, *, env: dict[str, str], workers: int, directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"{name}.log"
        self.workers = workers
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "example_project/gunicorn.conf.py",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(workers),
                    "example_project.wsgi",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __repr__(self) -> str:
        return f"<Server {self.name} {self.url}>"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def worker_pids(self) -> list[int]:
        return _children(self.process.pid)

    def wait_until_serving(self, timeout: float = 60) -> None:
        """Until every worker has booted and one answers a request."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self} exited with {self.process.returncode}:\n{self.output()}")
            if len(self.worker_pids()) == self.workers:
                try:
                    response = requests.get(f"{self.url}/o/.well-known/jwks.json", timeout=5)
                except requests.ConnectionError:
                    pass
                else:
                    if response.status_code == 200:
                        return
            time.sleep(0.1)
        pytest.fail(f"{self} did not serve within {timeout} s:\n{self.output()}")

    def kill_worker(self) -> int:
        """SIGKILL one worker (the only one, by default); its master starts another."""
        [pid, *_rest] = self.worker_pids()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def server_errors(self) -> list[str]:
        """Lines of the whole log that report a failed request or a crashed worker."""
        markers = ("Internal Server Error", "Traceback", "WORKER TIMEOUT", "Worker exiting", "[ERROR]")
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if any(marker in line for marker in markers)]


def server_env(*, database: str, redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DATABASE_URL=database,
        DATABASE_CONN_MAX_AGE="600",
        REDIS_URL=redis_url,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=SECRET_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


@contextmanager
def servers(
    count: int,
    *,
    database: str,
    redis_url: str,
    directory: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[list[Server]]:
    env = server_env(database=database, redis_url=redis_url, extra=extra_env)
    started: list[Server] = []
    try:
        for index in range(count):
            started.append(Server(f"server-{index + 1}", env=env, workers=workers, directory=directory))
        for server in started:
            server.wait_until_serving()
        yield started
    finally:
        for server in started:
            server.stop()


class RedisServer:
    """A Redis of the test's own, on a port of its own, to stop, freeze and restart at will."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Persistent: every write is on disk before Redis answers it (appendfsync always), so a
        # restart forgets nothing; otherwise a restart starts empty, as the machine's Redis does.
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer on {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """Unreachable, not refused: the port still accepts connections, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def spread(count: int, send: Callable[[int], requests.Response]) -> list[tuple[int, dict[str, Any]]]:
    """Send ``count`` requests at once (a barrier, a thread and a connection each); return each
    answer's status and JSON body, in order."""
    barrier = threading.Barrier(count)
    results: list[tuple[int, dict[str, Any]] | None] = [None] * count

    def one(index: int) -> None:
        barrier.wait(timeout=60)
        response = send(index)
        results[index] = (response.status_code, json_of(response))

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(result is not None for result in results), results
    return [result for result in results if result is not None]


def json_of(response: requests.Response) -> dict[str, Any]:
    """The JSON body of an answer; a body that is not JSON (an HTML error page) fails the test."""
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        f"{response.status_code} {response.headers.get('Content-Type')}: {response.text[:300]}"
    )
    body = response.json()
    assert isinstance(body, dict)
    return body

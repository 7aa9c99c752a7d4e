"""``python -m bench --http``: the cases over HTTP, through gunicorn, at several concurrencies.

The example served as ``make serve`` serves it: gunicorn with ``example_project/gunicorn.conf.py``
(sync workers, the application preloaded), DEBUG off, persistent database connections
(``DATABASE_CONN_MAX_AGE=600``, checked before reuse), on PostgreSQL in a database of its own
(``BENCH_HTTP_DATABASE_NAME``, default ``token_exchange_bench_http``, created, filled with
bench's clients, people and tokens, and dropped after), the replay store and throttle in Redis
when ``--redis-url`` answers (else each worker's local memory). ``--workers`` (default 2, one per
core here).

Each case runs ``--requests`` requests at each ``--concurrency``, in ``--passes`` batches (the
cases shuffled in each pass, so the machine's drift moves them alike): that many client threads,
each with its own ``http.client.HTTPConnection`` (gunicorn's sync workers close the connection after
each answer, so each request also opens a TCP connection on the loopback; the client reopens it).
Every request is built before the clock starts, a fresh ``jti`` in each client assertion, so
the client's RS256 signing does not take CPU from the server while it is measured. Reported per
case and concurrency: throughput (req/s), p50 and p95 latency, throughput as a ratio to
``client_credentials`` at the same concurrency, and the answers that were not 200, which must be
none. The client runs on the same machine as the server and PostgreSQL and takes its share of
the CPUs. Writes ``bench/http_results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # bench.cases needs Django set up, which main() does first
    from .cases import Case, Request

RESULTS = Path(__file__).resolve().parent / "http_results.json"
ROOT = Path(__file__).resolve().parent.parent
HTTP_DATABASE = os.environ.get("BENCH_HTTP_DATABASE_NAME", "token_exchange_bench_http")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"  # not make serve's (1), nor the tests' (13)
# What a shell may have exported for `make demo` or `make serve`: the server gets bench's own.
NOT_INHERITED = (
    "DEMO_ORIGIN",
    "OIDC_ISS_ENDPOINT",
    "REDIS_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "DATABASE_CONN_MAX_AGE",
    "GUNICORN_CMD_ARGS",
    "WEB_CONCURRENCY",
    "BIND",
    "ACCESS_LOG",
)
ERROR_MARKERS = ("Internal Server Error", "Traceback", "WORKER TIMEOUT", "Worker exiting", "[ERROR]")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("--http")
    group.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    group.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16], help="client threads (default 1 4 16)"
    )
    group.add_argument("--requests", type=int, default=600, help="requests per case and concurrency")
    group.add_argument(
        "--http-warmup",
        type=int,
        default=100,
        help="untimed requests per case first (gunicorn.conf.py freezes after 200 a worker)",
    )
    group.add_argument("--passes", type=int, default=4, help="batches per case, cases shuffled in each")
    group.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="'' for each worker's local memory")


def database_url(settings: dict[str, Any]) -> str:
    """The URL of the database Django's ``settings`` name (PostgreSQL)."""
    user = quote(settings["USER"] or "", safe="")
    password = f":{quote(settings['PASSWORD'], safe='')}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{quote(settings['NAME'], safe='')}"


def redis_answers(url: str) -> bool:
    if not url:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Server:
    """One gunicorn master with ``workers`` workers, on a free port, logging to a file."""

    def __init__(self, *, database: str, workers: int, redis_url: str, directory: Path) -> None:
        self.port = _free_port()
        self.workers = workers
        self.log = directory / "gunicorn.log"
        env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
        env.update(
            DJANGO_SETTINGS_MODULE="example_project.settings",
            DATABASE_URL=database,
            DATABASE_CONN_MAX_AGE="600",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            WEB_CONCURRENCY=str(workers),
            BIND=f"127.0.0.1:{self.port}",
            PYTHONUNBUFFERED="1",
        )
        if redis_url:
            env["REDIS_URL"] = redis_url
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "example_project/gunicorn.conf.py",
                    "example_project.wsgi",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.output()}")
            if len(_children(self.process.pid)) == self.workers:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    connection.request("GET", "/o/.well-known/jwks.json")
                    status = connection.getresponse().status
                    connection.close()
                except OSError:
                    status = 0
                if status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not serve within {timeout} s:\n{self.output()}")

    def errors(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if any(marker in line for marker in ERROR_MARKERS)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def serving(*, database: str, workers: int, redis_url: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="token-exchange-bench-http-") as directory:
        server = Server(database=database, workers=workers, redis_url=redis_url, directory=Path(directory))
        try:
            server.wait_until_serving()
            yield server
        finally:
            server.stop()


def http_headers(request: Request) -> dict[str, str]:
    """``Request.headers`` are WSGI environ keys (``HTTP_AUTHORIZATION``): as HTTP headers."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Host": "127.0.0.1:8000"}
    for key, value in request.headers.items():
        headers[key.removeprefix("HTTP_").replace("_", "-").title()] = value
    return headers


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the first few answers that were not 200

    def merge(self, other: Outcome) -> None:
        self.latencies.extend(other.latencies)
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count


def drive(
    port: int, case: Case, requests: list[Request], concurrency: int, *, check: bool = True
) -> tuple[Outcome, float]:
    """Send ``requests`` from ``concurrency`` threads; what came back, and the wall-clock seconds."""
    from .cases import TOKEN_PATH

    prepared = [(request.body, http_headers(request)) for request in requests]
    shares = [prepared[index::concurrency] for index in range(concurrency)]
    outcomes = [Outcome() for _ in shares]
    barrier = threading.Barrier(concurrency + 1)

    def client(share: list[tuple[bytes, dict[str, str]]], outcome: Outcome) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        barrier.wait()
        for number, (body, headers) in enumerate(share):
            started = time.perf_counter()
            try:
                connection.request("POST", TOKEN_PATH, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                outcome.statuses[0] = outcome.statuses.get(0, 0) + 1
                if len(outcome.errors) < 5:
                    outcome.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            outcome.latencies.append(time.perf_counter() - started)
            if response.will_close:
                connection.close()  # sync workers close after each answer; the next request reopens
            outcome.statuses[response.status] = outcome.statuses.get(response.status, 0) + 1
            if response.status != 200:
                if len(outcome.errors) < 5:
                    outcome.errors.append(f"{response.status} {payload[:200]!r}")
            elif check and number == 0:
                case.check(json.loads(payload))
        connection.close()

    threads = [threading.Thread(target=client, args=pair) for pair in zip(shares, outcomes, strict=True)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    total = Outcome()
    for outcome in outcomes:
        total.merge(outcome)
    return total, seconds


def measure(
    port: int,
    cases: list[Case],
    *,
    concurrency: list[int],
    requests: int,
    warmup: int,
    passes: int = 4,
    seed: int = 8693,
) -> dict[str, Any]:
    """Warm every case up, then each case at each concurrency; figures by concurrency, then case.

    At each concurrency the requests of a case are sent in ``passes`` batches, the cases in a
    shuffled order in each pass, so that the machine's drift moves all cases alike; throughput
    is the requests over the seconds of the case's batches.
    """
    from .measure import percentile

    for case in cases:
        outcome, _ = drive(port, case, [case.make() for _ in range(warmup)], min(4, max(concurrency)))
        if outcome.statuses.get(200, 0) != warmup:
            raise AssertionError(f"{case.name}: warm-up answers {outcome.statuses}: {outcome.errors[:2]}")
    shuffler = random.Random(seed)
    figures: dict[str, Any] = {}
    for threads in concurrency:
        totals = {case.name: (Outcome(), [0.0]) for case in cases}
        batches = [requests // passes + (1 if number < requests % passes else 0) for number in range(passes)]
        for batch in batches:
            order = list(cases)
            shuffler.shuffle(order)
            for case in order:
                built = [case.make() for _ in range(batch)]  # signed before the clock starts
                outcome, seconds = drive(port, case, built, threads)
                total, elapsed = totals[case.name]
                total.merge(outcome)
                elapsed[0] += seconds
        row: dict[str, Any] = {}
        for case in cases:
            outcome, (seconds,) = totals[case.name]
            latencies = outcome.latencies or [0.0]
            row[case.name] = {
                "title": case.title,
                "requests": requests,
                "seconds": round(seconds, 3),
                "throughput_rps": round(requests / seconds, 1),
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
                "non_200": requests - outcome.statuses.get(200, 0),
                "statuses": {str(status): count for status, count in sorted(outcome.statuses.items())},
                "errors": outcome.errors[:5],
            }
        baseline = row[cases[0].name]["throughput_rps"]
        for figures_of_case in row.values():
            figures_of_case["throughput_ratio_to_baseline"] = round(
                figures_of_case["throughput_rps"] / baseline, 2
            )
        figures[str(threads)] = row
    return figures


def table(figures: dict[str, Any]) -> str:
    header = (
        f"{'case':<46} {'threads':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'x baseline':>10} {'non-200':>7}"
    )
    lines = [header, "-" * len(header)]
    for threads, row in figures.items():
        for figure in row.values():
            lines.append(
                f"{figure['title'][:46]:<46} {threads:>7} {figure['throughput_rps']:>7.1f} "
                f"{figure['p50_ms']:>7.2f} {figure['p95_ms']:>7.2f} "
                f"{figure['throughput_ratio_to_baseline']:>9.2f}x {figure['non_200']:>7}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def non_200(figures: dict[str, Any]) -> int:
    return sum(figure["non_200"] for row in figures.values() for figure in row.values())


def http_cases(cases: list[Case]) -> list[Case]:
    """The cases fast enough to run at length: the PBKDF2 reference (0.4 s a request) is left out."""
    return [case for case in cases if case.rounds_divisor == 1]


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()
    from django.db import connection
    from oauth2_provider import __version__ as dot_version

    from . import cases

    if connection.vendor != "postgresql":
        print("python -m bench --http needs PostgreSQL: DATABASE_URL=postgres://… (make bench-http)")
        return 2
    redis_url = args.redis_url if redis_answers(args.redis_url) else ""
    test = connection.settings_dict.setdefault("TEST", {})
    test["NAME"] = HTTP_DATABASE
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        world = cases.build()
        measured = http_cases(world.cases)
        database = database_url(connection.settings_dict)
        connection.close()  # the server's workers are the ones to hold connections now
        print(
            f"HTTP benchmark: gunicorn, {args.workers} sync workers, PostgreSQL {HTTP_DATABASE}, "
            f"replay store {'in Redis ' + redis_url if redis_url else 'in each worker (no Redis)'}; "
            f"{args.requests} requests per case and concurrency, built before the clock starts"
        )
        with serving(database=database, workers=args.workers, redis_url=redis_url) as server:
            figures = measure(
                server.port,
                measured,
                concurrency=args.concurrency,
                requests=args.requests,
                warmup=args.http_warmup,
                passes=args.passes,
            )
            errors = server.errors()
        failed = non_200(figures)
        results = {
            "environment": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "database": "postgresql",
                "python": platform.python_version(),
                "django": django.get_version(),
                "django_oauth_toolkit": dot_version,
                "cpus": os.cpu_count(),
                "workers": args.workers,
                "requests": args.requests,
                "warmup": args.http_warmup,
                "passes": args.passes,
                "replay_store": "redis" if redis_url else "local memory",
                "left_out": [case.name for case in world.cases if case not in measured],
            },
            "figures": figures,
            "non_200": failed,
            "server_errors": errors[:20],
        }
    finally:
        connection.close()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print()
    print(table(figures))
    print()
    print(f"NON-200 ANSWERS: {failed}" + ("" if failed == 0 else "  <-- must be zero"))
    if errors:
        print(f"SERVER ERRORS in gunicorn's log: {len(errors)}, first: {errors[0]}")
    output = args.output or RESULTS
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {output}")
    return 0

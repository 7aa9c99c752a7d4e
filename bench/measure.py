"""Times token requests through Django's WSGI handler, the way a WSGI server would call it.

No HTTP server and no socket: what is measured is the server's own work, middleware included,
so the ratios between cases are not diluted by network time. Rounds are interleaved (every case
once per round, in a shuffled order) so that drift of the machine affects all cases alike.
"""

from __future__ import annotations

import gc
import io
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test.utils import CaptureQueriesContext

from .cases import TOKEN_PATH, Case, Request

FORM = "application/x-www-form-urlencoded"


class Driver:
    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def post(self, path: str, request: Request) -> tuple[int, bytes]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": FORM,
            "CONTENT_LENGTH": str(len(request.body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            **request.headers,
        }
        status: list[str] = []

        def start_response(value: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status.append(value)
            return lambda data: None

        response = self.handler(environ, start_response)
        try:
            body = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        return int(status[0].split()[0]), body


def send(driver: Driver, case: Case) -> float:
    """One request of ``case``; the seconds it took. The response must be the case's success."""
    request = case.make()
    started = time.perf_counter()
    status, body = driver.post(TOKEN_PATH, request)
    elapsed = time.perf_counter() - started
    payload = json.loads(body)
    if status != 200:
        raise AssertionError(f"{case.name}: HTTP {status} {payload.get('error')}")
    case.check(payload)
    return elapsed


def count_queries(driver: Driver, case: Case, times: int = 3) -> int:
    """SQL statements per request; ``times`` requests must agree on it."""
    counts = set()
    for _ in range(times):
        with CaptureQueriesContext(connection) as queries:
            send(driver, case)
        counts.add(len(queries.captured_queries))
    if len(counts) != 1:
        raise AssertionError(f"{case.name}: the statements per request vary: {sorted(counts)}")
    return counts.pop()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def median_interval(values: list[float]) -> tuple[float, float]:
    """A distribution-free 95 % confidence interval of the median (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half))
    return ordered[low], ordered[high]


def run(
    driver: Driver,
    cases: list[Case],
    *,
    rounds: int,
    warmup: int,
    seed: int = 8693,
    each: Callable[[Case], None] | None = None,
) -> dict[str, Any]:
    """Warm up, count queries, then time ``rounds`` interleaved rounds; figures per case.

    ``each(case)``, if given, runs after each timed request (``bench.floor.Floor.sample``).
    """
    for case in cases:
        for _ in range(max(1, warmup // case.rounds_divisor)):
            send(driver, case)
    queries = {
        case.name: count_queries(driver, case, times=1 if case.rounds_divisor > 1 else 3) for case in cases
    }
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    shuffler = random.Random(seed)
    gc.collect()
    for number in range(rounds):
        order = [case for case in cases if number % case.rounds_divisor == 0]
        shuffler.shuffle(order)
        for case in order:
            samples[case.name].append(send(driver, case))
            if each is not None:
                each(case)
    baseline = statistics.median(samples[cases[0].name])
    figures = {}
    for case in cases:
        values = samples[case.name]
        median = statistics.median(values)
        low, high = median_interval(values)
        figures[case.name] = {
            "title": case.title,
            "requests": len(values),
            "median_ms": round(median * 1000, 3),
            "p95_ms": round(percentile(values, 0.95) * 1000, 3),
            "median_95ci_ms": [round(low * 1000, 3), round(high * 1000, 3)],
            "queries": queries[case.name],
            "ratio_to_baseline": round(median / baseline, 2),
        }
    return figures

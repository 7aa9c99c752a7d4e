"""``python -m bench.gc_pause``: the cyclic garbage collector's pauses in a busy worker's tail
latency, and what ``gc.freeze()`` does to them.

Each mode runs in a fresh interpreter (this module again, with ``--child``), which is what one
WSGI worker is: Django with the example project's settings on ``DATABASE_URL`` (PostgreSQL in a
database of its own, created and dropped here, else an SQLite file), bench's clients, people and
tokens (``bench/cases.py``), a warm-up, then a steady alternation of two token requests, a plain
exchange (access token → opaque) and an impersonation (user id + actor → JWT + ID token), posted
as forms to ``/o/token/`` through ``example_project.wsgi.application``. Every collection is
recorded through ``gc.callbacks`` and every request is timed, in wall-clock time (what a client
waits) and in the process's CPU time (which the machine's other work moves less). 20,000
requests a mode by default: with the collector as it comes, these requests see a full
(generation 2) collection about once in 10,000. Prints a table and writes
``bench/gc_results.json``.

Modes (``--modes``, in the order given):

``default``
    the collector as the interpreter starts it.
``freeze_at_start``
    ``gc.freeze()`` once the application is loaded and its database ready, before the first
    request: what a pre-forking server's master freezes before fork (``preload_app``), since
    its workers fork before they serve anything.
``freeze_after_warmup``
    ``gc.freeze()`` after the warm-up: also what the first requests made once and keep.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "gc_results.json"
ROOT = Path(__file__).resolve().parent.parent
GC_DATABASE = "token_exchange_bench_gc"  # not bench's own: the two may run side by side
MODES = ("default", "freeze_at_start", "freeze_after_warmup")
MIX = ("exchange", "impersonation")  # bench/cases.py's case names, alternated
SLOWEST = 10  # the slowest requests are listed, with the collection time in each


@contextmanager
def gc_database() -> Iterator[Any]:
    """A fresh database for the child, as ``bench/__main__.py``'s ``bench_database`` makes one,
    under a name of its own; dropped afterwards."""
    from django.db import connection

    test = connection.settings_dict.setdefault("TEST", {})
    with tempfile.TemporaryDirectory(prefix="token-exchange-bench-gc-") as directory:
        if connection.vendor == "sqlite":
            test["NAME"] = str(Path(directory) / "bench.sqlite3")  # a file, as a site's would be
        else:
            test["NAME"] = GC_DATABASE
        connection.settings_dict["CONN_MAX_AGE"] = None  # persistent, as in production
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            yield connection
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)


@dataclass
class Collection:
    generation: int
    seconds: float  # time.perf_counter(): what a client waits
    cpu_seconds: float  # time.process_time(): the same without the time other processes had the CPU
    collected: int
    uncollectable: int


class Recorder:
    """Every collection, through ``gc.callbacks``: ``finished[g]`` counts generation ``g``'s,
    ``seconds`` adds up their durations."""

    def __init__(self) -> None:
        self.collections: list[Collection] = []
        self.finished = [0, 0, 0]
        self.seconds = 0.0
        self._started = (0.0, 0.0)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = (time.perf_counter(), time.process_time())
        if phase == "start":
            self._started = now
            return
        generation = info["generation"]
        seconds, cpu_seconds = now[0] - self._started[0], now[1] - self._started[1]
        self.collections.append(
            Collection(generation, seconds, cpu_seconds, info["collected"], info["uncollectable"])
        )
        self.finished[generation] += 1
        self.seconds += seconds

    def __enter__(self) -> Recorder:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest rank, as bench/measure.py; None for no values."""
    if not values:
        return None
    from .measure import percentile as nearest_rank

    return nearest_rank(values, fraction)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _per_thousand(count: int, requests: int) -> float:
    return round(count * 1000 / requests, 2)


def _latency(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": _ms(percentile(values, 0.50)),
        "p99": _ms(percentile(values, 0.99)),
        "p99.9": _ms(percentile(values, 0.999)),
        "max": _ms(max(values)),
    }


def summarize(
    mode: str,
    latencies: list[float],
    cpu_times: list[float],
    gen2_during: list[int],
    gc_during: list[float],
    collections: list[Collection],
    *,
    objects: dict[str, int],
) -> dict[str, Any]:
    """One mode's figures (milliseconds)."""
    requests = len(latencies)
    by_generation = {g: [c for c in collections if c.generation == g] for g in (0, 1, 2)}
    gen2 = [c.seconds for c in by_generation[2]]
    gen2_cpu = [c.cpu_seconds for c in by_generation[2]]
    with_gen2 = [value for value, count in zip(latencies, gen2_during, strict=True) if count]
    without_gen2 = [value for value, count in zip(latencies, gen2_during, strict=True) if not count]
    slowest = sorted(zip(latencies, cpu_times, gc_during, gen2_during, strict=True), reverse=True)[:SLOWEST]
    return {
        "mode": mode,
        "requests": requests,
        "gc_threshold": list(gc.get_threshold()),
        "objects": objects,
        "collections": {
            str(g): {
                "count": len(items),
                "per_1000_requests": _per_thousand(len(items), requests),
                "median_ms": _ms(statistics.median([c.seconds for c in items]) if items else None),
                "max_ms": _ms(max((c.seconds for c in items), default=None)),
                "total_ms": _ms(sum(c.seconds for c in items)),
                "collected": sum(c.collected for c in items),
                "uncollectable": sum(c.uncollectable for c in items),
            }
            for g, items in by_generation.items()
        },
        "gen2_per_1000_requests": _per_thousand(len(gen2), requests),
        "gen2_pause_median_ms": _ms(statistics.median(gen2) if gen2 else None),
        "gen2_pause_max_ms": _ms(max(gen2, default=None)),
        "gen2_ms_per_1000_requests": round(sum(gen2) * 1_000_000 / requests, 3),
        "gen2_pauses_ms": [_ms(value) for value in gen2],
        "gen2_pause_cpu_median_ms": _ms(statistics.median(gen2_cpu) if gen2_cpu else None),
        "gen2_pause_cpu_max_ms": _ms(max(gen2_cpu, default=None)),
        # Collections between two requests (the loop's own bookkeeping) are in no request; a
        # worker would have paused in one.
        "gen2_outside_requests": len(gen2) - sum(gen2_during),
        "gc_ms_per_1000_requests": round(sum(c.seconds for c in collections) * 1_000_000 / requests, 3),
        "latency_ms": _latency(latencies),
        # The process's CPU time in each request: no time waiting for PostgreSQL or for a CPU
        # another process had, so the figure moves less with the rest of the machine's work.
        "cpu_ms": _latency(cpu_times),
        "requests_with_gen2": len(with_gen2),
        "p99_with_gen2_ms": _ms(percentile(with_gen2, 0.99)),
        "p99_without_gen2_ms": _ms(percentile(without_gen2, 0.99)),
        "slowest": [
            {"ms": _ms(latency), "cpu_ms": _ms(cpu), "gc_ms": _ms(in_gc), "gen2": count}
            for latency, cpu, in_gc, count in slowest
        ],
    }


def child(mode: str, *, requests: int, warmup: int, output: Path) -> None:
    """One worker: start, warm up, freeze as ``mode`` says, then time ``requests`` requests."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG would keep every query in memory
    # With DEBUG off the settings want a key from the environment; nothing this process signs
    # outlives it.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    import django
    from django.conf import settings
    from oauth2_provider import __version__ as dot_version

    from example_project.wsgi import application  # django.setup(), then the worker's handler

    from . import cases, measure

    gc.collect()
    tracked_after_load = len(gc.get_objects())  # what a pre-forking master holds
    load_before = os.getloadavg()
    with gc_database() as connection:
        world = cases.build()
        mix = [case for name in MIX for case in world.cases if case.name == name]
        made = [(case, case.make()) for case in mix]  # both bodies are the same on every request
        driver = measure.Driver()
        driver.handler = application

        if mode == "freeze_at_start":
            # Before the first request, as a master's freeze before fork; the collection takes
            # away what creating the database left (a master that loads with the collector off
            # and freezes without collecting freezes the little garbage its imports made).
            gc.collect()
            gc.freeze()
        for number in range(warmup):
            case, request = made[number % len(made)]
            status, body = driver.post(cases.TOKEN_PATH, request)
            payload = json.loads(body)
            if status != 200:
                raise AssertionError(f"{case.name}: HTTP {status} {payload.get('error')}")
            case.check(payload)
        gc.collect()  # every mode starts timing from the same state: nothing young
        tracked_after_warmup = len(gc.get_objects())  # the permanent generation left out
        if mode == "freeze_after_warmup":
            gc.freeze()
        freeze_count = gc.get_freeze_count()

        latencies: list[float] = []
        cpu_times: list[float] = []
        gen2_during: list[int] = []  # gen-2 collections that ran in each request
        gc_during: list[float] = []  # seconds of collection (any generation) in each request
        statuses: dict[int, int] = {}
        with Recorder() as recorder:
            for number in range(requests):
                case, request = made[number % len(made)]
                gen2_before, gc_before = recorder.finished[2], recorder.seconds
                started, cpu_started = time.perf_counter(), time.process_time()
                status, _body = driver.post(cases.TOKEN_PATH, request)
                latencies.append(time.perf_counter() - started)
                cpu_times.append(time.process_time() - cpu_started)
                gen2_during.append(recorder.finished[2] - gen2_before)
                gc_during.append(recorder.seconds - gc_before)
                statuses[status] = statuses.get(status, 0) + 1
        if set(statuses) != {200}:
            raise AssertionError(f"{mode}: responses other than 200: {statuses}")
        figures = summarize(
            mode,
            latencies,
            cpu_times,
            gen2_during,
            gc_during,
            recorder.collections,
            objects={
                "tracked_after_load": tracked_after_load,
                "tracked_after_warmup": tracked_after_warmup,
                "freeze_count": freeze_count,
                "tracked_at_end": len(gc.get_objects()),
            },
        )
        figures["environment"] = {
            "database": connection.vendor,
            "database_version": ".".join(map(str, connection.get_database_version())),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "django": django.get_version(),
            "django_oauth_toolkit": dot_version,
            "cache": settings.CACHES["default"]["BACKEND"],
            "conn_health_checks": connection.settings_dict["CONN_HEALTH_CHECKS"],
            "loadavg_1min_before": round(load_before[0], 2),
            "loadavg_before": [round(value, 2) for value in load_before],
            "loadavg_after": [round(value, 2) for value in os.getloadavg()],
        }
    output.write_text(json.dumps(figures, indent=2) + "\n")


def run_mode(mode: str, *, requests: int, warmup: int) -> dict[str, Any]:
    """``mode`` in a fresh interpreter; its figures."""
    with tempfile.TemporaryDirectory(prefix="token-exchange-bench-gc-") as directory:
        output = Path(directory) / f"{mode}.json"
        command = [sys.executable, "-m", "bench.gc_pause", "--child", mode]
        command += ["--requests", str(requests), "--warmup", str(warmup), "--child-output", str(output)]
        subprocess.run(command, cwd=ROOT, check=True)  # noqa: S603 (this interpreter, this module)
        figures: dict[str, Any] = json.loads(output.read_text())
        return figures


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def table(modes: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, str]] = [
        ("gen-2 collections / 1,000 requests", "gen2_per_1000_requests"),
        ("gen-2 pause median (ms)", "gen2_pause_median_ms"),
        ("gen-2 pause max (ms)", "gen2_pause_max_ms"),
        ("gen-2 pause median, CPU time (ms)", "gen2_pause_cpu_median_ms"),
        ("gen-2 pause max, CPU time (ms)", "gen2_pause_cpu_max_ms"),
        ("time in gen-2 / 1,000 requests (ms)", "gen2_ms_per_1000_requests"),
        ("gen-0 collections / 1,000 requests", "collections.0.per_1000_requests"),
        ("gen-1 collections / 1,000 requests", "collections.1.per_1000_requests"),
        ("time in GC / 1,000 requests (ms)", "gc_ms_per_1000_requests"),
        ("objects tracked after loading", "objects.tracked_after_load"),
        ("objects tracked after warm-up", "objects.tracked_after_warmup"),
        ("frozen (gc.get_freeze_count())", "objects.freeze_count"),
        ("objects tracked at the end", "objects.tracked_at_end"),
        ("request p50 (ms)", "latency_ms.p50"),
        ("request p99 (ms)", "latency_ms.p99"),
        ("request p99.9 (ms)", "latency_ms.p99.9"),
        ("request max (ms)", "latency_ms.max"),
        ("request CPU time p50 (ms)", "cpu_ms.p50"),
        ("request CPU time p99 (ms)", "cpu_ms.p99"),
        ("request CPU time p99.9 (ms)", "cpu_ms.p99.9"),
        ("request CPU time max (ms)", "cpu_ms.max"),
        ("requests with a gen-2 collection", "requests_with_gen2"),
        ("p99 of those (ms)", "p99_with_gen2_ms"),
        ("p99 of the others (ms)", "p99_without_gen2_ms"),
        ("load average before (1 min)", "environment.loadavg_1min_before"),
    ]

    def lookup(figures: dict[str, Any], key: str) -> Any:
        if key.startswith(("latency_ms.", "cpu_ms.", "objects.", "environment.")):
            group, field = key.split(".", 1)
            return figures[group][field]
        if key.startswith("collections."):
            _, generation, field = key.split(".")
            return figures["collections"][generation][field]
        return figures[key]

    width = max(len(title) for title, _ in rows)
    column = max(12, *(len(mode) for mode in modes))
    header = f"{'':<{width}}" + "".join(f" {mode:>{column}}" for mode in modes)
    lines = [header, "-" * len(header)]
    for title, key in rows:
        lines.append(
            f"{title:<{width}}" + "".join(f" {_cell(lookup(f, key)):>{column}}" for f in modes.values())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_pause", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="timed requests per mode")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, of {', '.join(MODES)} (default: %(default)s)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1 and --warmup at least 0")

    if args.child:
        if args.child_output is None:
            parser.error("--child needs --child-output")
        child(args.child, requests=args.requests, warmup=args.warmup, output=args.child_output)
        return 0

    modes = list(dict.fromkeys(mode.strip() for mode in args.modes.split(",") if mode.strip()))
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}, choose from {', '.join(MODES)}")

    print(
        f"GC pauses: {args.requests} requests per mode after {args.warmup} warm-up requests, "
        f"alternating {' and '.join(MIX)}, each mode in a fresh process",
        flush=True,
    )
    figures: dict[str, dict[str, Any]] = {}
    for mode in modes:
        print(f"  {mode} …", flush=True)
        figures[mode] = run_mode(mode, requests=args.requests, warmup=args.warmup)
    first = next(iter(figures.values()))["environment"]
    results = {
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **{key: value for key, value in first.items() if not key.startswith("loadavg")},
            "cpus": os.cpu_count(),
            "requests": args.requests,
            "warmup": args.warmup,
            "mix": list(MIX),
            "gc_threshold": list(gc.get_threshold()),
        },
        "modes": figures,
    }
    print()
    print(f"On {first['database']} {first['database_version']}, Python {first['python']}")
    print(table(figures))
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

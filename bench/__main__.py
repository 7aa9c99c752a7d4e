"""``python -m bench [--scale | --http]``: token exchange against DOT's own client_credentials grant.

Runs in one process against the example project's settings, on ``DATABASE_URL`` (``make bench``
points it at PostgreSQL when PostgreSQL answers) in a database of its own (``BENCH_DATABASE_NAME``,
default ``token_exchange_bench``), created and dropped here. Times each case, then its floor (its
statements replayed and its signatures, ``bench/floor.py``), prints a table and whether issue 19's
targets hold (``bench/targets.py``), and writes ``bench/results.json``. ``--scale`` then fills
the database (100,000 users, 200,000 access tokens, 1,000,000 audit rows), measures again, and
times the audit-event admin list. ``--http`` measures over HTTP instead, through gunicorn
(``bench/over_http.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"
BENCH_DATABASE = os.environ.get("BENCH_DATABASE_NAME", "token_exchange_bench")


@contextmanager
def bench_database(name: str = BENCH_DATABASE) -> Iterator[Any]:
    """A fresh database for the run (Django's test database machinery), dropped afterwards.

    Connections persist across requests, as they should in production (``CONN_MAX_AGE`` or a
    pool): reconnecting on every request would add the same cost to every case.
    """
    from django.db import connection

    test = connection.settings_dict.setdefault("TEST", {})
    if connection.vendor == "sqlite":
        directory = tempfile.mkdtemp(prefix="token-exchange-bench-")
        test["NAME"] = str(Path(directory) / "bench.sqlite3")  # a file, as a site's would be
    else:
        test["NAME"] = name
    connection.settings_dict["CONN_MAX_AGE"] = None
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield connection
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _table(title: str, figures: dict[str, Any], compare: dict[str, Any] | None = None) -> str:
    header = (
        f"{'case':<46} {'median ms':>9} {'p95 ms':>7} {'stmts':>5} {'floor ms':>8} "
        f"{'x floor':>7} {'x baseline':>10}"
    )
    if compare is not None:
        header += f" {'x small db':>10}"
    lines = [title, header, "-" * len(header)]
    for name, row in figures.items():
        floor = row.get("floor_ms")
        line = (
            f"{row['title'][:46]:<46} {row['median_ms']:>9.2f} {row['p95_ms']:>7.2f} "
            f"{row.get('statements', row['queries']):>5} "
            + (f"{floor:>8.2f} {row['ratio_to_floor']:>6.2f}x" if floor is not None else f"{'':>8} {'':>7}")
            + f" {row['ratio_to_baseline']:>9.2f}x"
        )
        if compare is not None:
            line += f" {row['median_ms'] / compare[name]['median_ms']:>9.2f}x"
        lines.append(line)
    return "\n".join(lines)


def _floor_notes(figures: dict[str, Any]) -> str:
    lines = [
        "stmts: SQL statements per request, BEGIN and COMMIT included, the connection health check",
        "not. floor: those statements replayed over one connection plus the request's RSA work:",
    ]
    for row in figures.values():
        if "floor_ms" in row:
            lines.append(
                f"  {row['title'][:46]:<46} {row['replay_ms']:>6.2f} ms SQL"
                f" ({row['begin']} BEGIN, {row['commit']} COMMIT, {row['health_checks']} health check)"
                f" + {row['signing_ms']:.2f} ms for {row['signatures']} signature(s),"
                f" {row['verifications']} verification(s)"
            )
    return "\n".join(lines)


def add_floor(figures: dict[str, Any], floors: dict[str, Any]) -> None:
    """Merge ``bench.floor``'s figures into ``measure.run``'s rows, with each ratio to its floor."""
    for name, floor in floors.items():
        row = figures[name]
        row.update(floor)
        row["ratio_to_floor"] = round(row["median_ms"] / floor["floor_ms"], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="fill the large tables and measure again")
    parser.add_argument("--rounds", type=int, default=400, help="timed rounds per database size")
    parser.add_argument("--warmup", type=int, default=40, help="untimed requests per case first")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results file (bench/results.json; with --http, bench/http_results.json)",
    )
    parser.add_argument("--http", action="store_true", help="measure over HTTP through gunicorn instead")
    from . import over_http

    over_http.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.http:
        return over_http.main(args)
    output = args.output or RESULTS

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG would keep every query in memory
    # DEBUG off wants a real secret key (example_project/settings.py); nothing signed here outlives the run.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()
    from django.conf import settings
    from oauth2_provider import __version__ as dot_version

    from . import cases, floor, measure, scale, targets

    results: dict[str, Any] = {}
    with bench_database() as connection:
        results["environment"] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "database": connection.vendor,
            "database_version": ".".join(map(str, connection.get_database_version())),
            "python": platform.python_version(),
            "django": django.get_version(),
            "django_oauth_toolkit": dot_version,
            "client_secret_hasher": settings.OAUTH2_PROVIDER.get("CLIENT_SECRET_HASHER", "default"),
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "warmup": args.warmup,
        }
        print(f"Benchmark on {connection.vendor}, {args.rounds} rounds after {args.warmup} warm-up requests")
        world = cases.build()
        driver = measure.Driver()
        floors = floor.Floor(driver, world.cases)
        small = measure.run(driver, world.cases, rounds=args.rounds, warmup=args.warmup, each=floors.sample)
        add_floor(small, floors.figures())
        results["small"] = small
        print()
        print(_table("Small database", small))
        print(_floor_notes(small))
        checked = targets.check(small)
        results["targets"] = [target.as_json() for target in checked]
        print()
        for target in checked:
            print(target.line())
        if args.scale:
            print("\nFilling the large tables …", flush=True)
            results["scale"] = {"rows": scale.fill(world)}
            large = measure.run(driver, world.cases, rounds=args.rounds, warmup=args.warmup)
            results["scale"]["figures"] = large
            results["scale"]["ratio_to_small"] = {
                name: round(row["median_ms"] / small[name]["median_ms"], 2) for name, row in large.items()
            }
            results["scale"]["audit_admin_list_ms"] = scale.audit_admin_list(world)
            print()
            print(_table("Large database", large, compare=small))
            print("\nAudit admin list (median ms):", json.dumps(results["scale"]["audit_admin_list_ms"]))
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench [--scale]``: token exchange against DOT's own client_credentials grant.

Runs in one process against the example project's settings, on ``DATABASE_URL`` (``make bench``
points it at PostgreSQL when PostgreSQL answers) in a database of its own, created and dropped
here. Prints a table and writes ``bench/results.json``. ``--scale`` then fills the database
(100,000 users, 200,000 access tokens, 1,000,000 audit rows), measures again, and times the
audit-event admin list.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"
BENCH_DATABASE = "token_exchange_bench"


@contextmanager
def bench_database() -> Iterator[Any]:
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
        test["NAME"] = BENCH_DATABASE
    connection.settings_dict["CONN_MAX_AGE"] = None
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield connection
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _table(title: str, figures: dict[str, Any], compare: dict[str, Any] | None = None) -> str:
    header = f"{'case':<50} {'median ms':>10} {'p95 ms':>9} {'queries':>8} {'x baseline':>11}"
    if compare is not None:
        header += f" {'x small db':>11}"
    lines = [title, header, "-" * len(header)]
    for name, row in figures.items():
        line = (
            f"{row['title']:<50} {row['median_ms']:>10.2f} {row['p95_ms']:>9.2f} "
            f"{row['queries']:>8} {row['ratio_to_baseline']:>10.2f}x"
        )
        if compare is not None:
            line += f" {row['median_ms'] / compare[name]['median_ms']:>10.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", action="store_true", help="fill the large tables and measure again")
    parser.add_argument("--rounds", type=int, default=400, help="timed rounds per database size")
    parser.add_argument("--warmup", type=int, default=40, help="untimed requests per case first")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # DEBUG would keep every query in memory
    import django

    django.setup()
    from django.conf import settings
    from oauth2_provider import __version__ as dot_version

    from . import cases, measure, scale

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
        small = measure.run(driver, world.cases, rounds=args.rounds, warmup=args.warmup)
        results["small"] = small
        print()
        print(_table("Small database", small))
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
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What ``make test`` says it proved: the adversarial cases, fuzz examples, concurrency runs and
injected faults it executed, counted as they pass and printed at the end of the run.

Tests carry one of the markers in :data:`KINDS`; a test of subtests counts one case per subtest.
A fuzz property calls :func:`count` once per example it runs and a concurrency test once per
request it sends in parallel, so the figures are what ran, not what was written.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.db import connections, router

KINDS = {
    "adversarial": "adversarial cases over HTTP",
    "fuzz": "fuzz properties",
    "concurrency": "concurrency scenarios",
    "faults": "injected faults",
}
# What the tests count themselves, printed beside their kind.
EXTRAS = {
    "fuzz": ("fuzz examples", "examples"),
    "concurrency": ("parallel requests", "requests sent in parallel"),
}

_outcomes: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
_counts: Counter[str] = Counter()


def count(what: str, n: int = 1) -> None:
    """Add ``n`` to a figure of the summary: ``"fuzz examples"`` or ``"parallel requests"``."""
    _counts[what] += n


_kind_of: dict[str, str] = {}  # node id -> kind
_of_subtests: set[str] = set()  # node ids of tests that use subtests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = next((kind for kind in KINDS if item.get_closest_marker(kind)), None)
        if kind is not None:
            _kind_of[item.nodeid] = kind
            if "subtests" in getattr(item, "fixturenames", ()):
                _of_subtests.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kind = _kind_of.get(report.nodeid)
    if kind is None:
        return
    if report.nodeid in _of_subtests and report.when == "call" and type(report).__name__ != "SubtestReport":
        return  # a test of subtests is counted by its subtests, one case each
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _outcomes[kind][report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not any(_outcomes[kind] for kind in KINDS):
        return
    write = terminalreporter.write_line
    from token_exchange.models import AuditEvent

    vendor = connections[router.db_for_write(AuditEvent)].vendor  # "default", unless routed
    terminalreporter.section(f"what this run proved ({vendor})")
    for kind, label in KINDS.items():
        tally = _outcomes[kind]
        if not tally:
            continue
        parts = [f"{tally[name]} {name}" for name in ("passed", "failed", "skipped") if tally[name]]
        line = f"{label}: {', '.join(parts)}"
        if kind in EXTRAS and _counts[EXTRAS[kind][0]]:
            name, unit = EXTRAS[kind]
            line += f"; {_counts[name]:,} {unit}"
        write(line)

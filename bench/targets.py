"""Issue 19's targets, checked against a run's figures: printed, never a failure of the command.

The statement counts are ``bench.floor``'s (the ORM's statements with BEGIN and COMMIT, the
connection health check left out); the ratios are medians of the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATEMENTS = {"exchange": 6, "impersonation": 9}
RATIO_TO_BASELINE = {"exchange": 1.4, "impersonation": 2.0}
RATIO_TO_FLOOR = 2.0
# The PBKDF2 reference case exists to show the cost of its hash, which no floor counts.
NO_FLOOR_TARGET = ("impersonation_pbkdf2_secret",)


@dataclass(frozen=True)
class Target:
    text: str  # "exchange ≤ 6 statements"
    value: str  # what this run measured: "8", "1.45x"
    holds: bool

    def line(self) -> str:
        return f"target: {self.text} ({self.value}) {'holds' if self.holds else 'misses'}"

    def as_json(self) -> dict[str, Any]:
        return {"target": self.text, "measured": self.value, "holds": self.holds}


def check(figures: dict[str, Any]) -> list[Target]:
    """``figures``: case name → a row with ``statements``, ``ratio_to_baseline``, ``ratio_to_floor``."""
    targets = []
    for name, limit in STATEMENTS.items():
        if name in figures:
            count = figures[name]["statements"]
            targets.append(Target(f"{name} ≤ {limit} statements", str(count), count <= limit))
    for name, ratio_limit in RATIO_TO_BASELINE.items():
        if name in figures:
            ratio = figures[name]["ratio_to_baseline"]
            targets.append(
                Target(f"{name} ≤ {ratio_limit}x client_credentials", f"{ratio:.2f}x", ratio <= ratio_limit)
            )
    for name, row in figures.items():
        if name not in NO_FLOOR_TARGET and row.get("ratio_to_floor") is not None:
            ratio = row["ratio_to_floor"]
            targets.append(
                Target(f"{name} ≤ {RATIO_TO_FLOOR}x its floor", f"{ratio:.2f}x", ratio <= RATIO_TO_FLOOR)
            )
    return targets

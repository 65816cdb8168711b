"""Is a rerun the committed run? Each metric's tolerance, and the comparison a notebook or a maintainer prints (06).

Trainings run a fixed number of steps with a seed, so a rerun on a CPU gives the committed losses, accuracies and
scores up to the rounding of bf16 matrix products and of the thread count (a few thousandths of a nat); times depend
on the machine and are compared as a ratio only. TOLERANCES holds the expected spread per unit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Metrics whose unit is a time, a rate or a ratio of times: they measure the machine, not the course.
TIMING_UNITS = {"s", "ms", "min", "tokens/s", "characters/s", "chars/s", "x"}
TIMING_WORDS = ("seconds", "_per_s", "speedup", "slowdown", "time", "_ms")
# The spread a rerun may show, by unit: absolute differences.
TOLERANCES = {
    "nats/char": 0.02,  # about twice the standard error of a validation loss on the whole split
    "nats": 0.02,
    "BLEU": 1.0,
    "chrF": 1.0,
    "": 0.02,  # accuracies and other fractions in [0, 1]
    "fraction": 0.02,
    "probability": 0.02,
    "cosine": 0.02,
    "abs": 1e-3,
    "variance": 0.05,
    "slope": 0.1,
    "MiB": 0.05,
}
EXACT_UNITS = {"parameters", "characters", "steps", "runs"}  # counts: a rerun must give the same number


def is_timing(key: str, unit: str) -> bool:
    """True for a metric that measures the machine's speed (compared as a ratio, never held to a tolerance)."""
    return unit in TIMING_UNITS or any(word in key for word in TIMING_WORDS)


def tolerance(unit: str) -> float:
    """The absolute difference a rerun may show for a metric of this unit (0 for counts)."""
    return 0.0 if unit in EXACT_UNITS else TOLERANCES.get(unit, 0.02)


@dataclass
class Comparison:
    """One metric of a rerun beside its committed value."""

    key: str
    unit: str
    committed: float
    measured: float | None  # None: the rerun did not record it
    timing: bool

    @property
    def within(self) -> bool:
        """True when the rerun reproduces the committed value (timings always pass: they only inform)."""
        if self.measured is None:
            return False
        return self.timing or abs(self.measured - self.committed) <= tolerance(self.unit) + 1e-12

    def line(self) -> str:
        """One row of the report: committed, measured, and whether it is within the expected spread."""
        if self.measured is None:
            return f"{self.key:45s} {self.committed:12.4g}  (not recorded by this run)  MISSING"
        if self.timing:
            ratio = self.measured / self.committed if self.committed else float("nan")
            return f"{self.key:45s} {self.committed:12.4g} {self.measured:12.4g}  {ratio:.2f}x the committed time"
        verdict = "ok" if self.within else "OUTSIDE"
        spread = f"±{tolerance(self.unit):g}"
        return f"{self.key:45s} {self.committed:12.4g} {self.measured:12.4g}  {spread:>7} {self.unit:10s} {verdict}"


def compare(
    committed: dict[str, dict], measured: dict[str, dict], notebooks: set[str] | None = None
) -> list[Comparison]:
    """Every committed metric of the chosen notebooks beside the rerun's value (metrics.json dicts)."""
    rows = []
    for key, entry in sorted(committed.items()):
        if notebooks is not None and entry["notebook"] not in notebooks:
            continue
        value = measured.get(key, {}).get("value")
        rows.append(Comparison(key, entry["unit"], entry["value"], value, is_timing(key, entry["unit"])))
    return rows


def report(rows: list[Comparison]) -> str:
    """The comparison as a table, then one summary line."""
    header = f"{'metric':45s} {'committed':>12s} {'this run':>12s}"
    bad = [r.key for r in rows if not r.within]
    held = sum(not r.timing for r in rows)
    summary = f"{held - len(bad)}/{held} non-timing metrics within their tolerance" + (
        f"; outside or missing: {', '.join(bad)}" if bad else ""
    )
    return "\n".join([header, *(r.line() for r in rows), summary])


def committed_metrics(root: Path) -> dict[str, dict]:
    """The committed results, artifacts/metrics.json."""
    return json.loads((root / "metrics.json").read_text())


def print_against_committed(committed: dict[str, dict], recorded: dict[str, dict], keys: list[str]) -> None:
    """After a notebook's run: its key figures beside the committed ones, and whether they agree (for the learner)."""
    rows = [r for r in compare(committed, recorded) if r.key in keys]
    for row in rows:
        print(row.line())
    held = [r for r in rows if not r.timing]
    if held and all(r.within for r in held):
        print("every figure above is within the spread expected of a rerun: this run reproduces the committed one")
    elif held:
        print("a figure lies outside the expected spread: compare the settings above with the committed run's")

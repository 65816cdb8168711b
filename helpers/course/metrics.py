"""Named metrics that notebooks record and run_all.py collects (introduced in 01_attention_by_hand)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from helpers.course.utils import artifacts_dir, atomic_write_text


class MetricRecorder:
    """Record a notebook's key figures in artifacts[/quick]/metrics/<notebook>.json.

    The recorder starts from what that file already holds and updates it, so a notebook run cell by cell in JupyterLab
    (or stopped half-way) keeps the figures it has not recorded again. `fresh=True` starts from nothing instead;
    run_all.py gets the same effect by deleting the notebook's file from its staging copy before the run, so metrics
    a notebook no longer records disappear from the results.
    """

    def __init__(self, notebook: str, mode: str, fresh: bool = False):
        self.notebook, self.mode = notebook, mode
        self.path = artifacts_dir(mode) / "metrics" / f"{notebook}.json"
        self.metrics: dict[str, dict] = {} if fresh else self._load()

    def _load(self) -> dict[str, dict]:
        """Return the metrics already in this notebook's file ({} when there is none or it cannot be read)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            warnings.warn(f"{self.path.name} could not be read ({err}); starting a new one", stacklevel=3)
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, name: str, value: float, unit: str, description: str = "") -> float:
        """Store one metric (and rewrite the notebook's file at once, so a crash keeps what came before)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is not finite: {value}")
        self.metrics[name] = {
            "value": value,
            "unit": unit,
            "notebook": self.notebook,
            "mode": self.mode,
            "description": description,
        }
        atomic_write_text(self.path, json.dumps(self.metrics, indent=2, sort_keys=True) + "\n")
        return value


def collect_metrics(mode: str) -> dict[str, dict]:
    """Merge every notebook's metric file of a run mode into one dict: name -> value, unit, notebook, mode."""
    merged: dict[str, dict] = {}
    for path in sorted((artifacts_dir(mode) / "metrics").glob("*.json")):
        merged.update(json.loads(path.read_text()))
    return dict(sorted(merged.items()))


def format_value(value: float) -> str:
    """Format a figure with a sensible number of significant digits."""
    if value == int(value) and abs(value) < 1e12:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"  # never an exponent: 12,345 rather than 1.234e+04


def results_table(metrics: dict[str, dict]) -> list[str]:
    """Return the Markdown lines of a table of metrics."""
    lines = ["| metric | value | unit | notebook | what it is |", "|---|---|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| `{name}` | {format_value(m['value'])} | {m['unit']} | {m['notebook']} | {m['description']} |")
    return lines


def sync_readme(readme: Path, mode: str = "full") -> bool:
    """Replace the README's results table (between the results markers) with the current one; True if changed."""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme.name} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    block = "\n".join([start, *results_table(collect_metrics(mode)), end])
    new = head + block + tail
    if new != text:
        atomic_write_text(readme, new)
    return new != text


def write_results(mode: str) -> tuple[Path, Path]:
    """Write metrics.json and a Markdown table results.md for a run mode; return their paths."""
    metrics = collect_metrics(mode)
    out = artifacts_dir(mode)
    json_path = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    lines = [
        f"# Results ({mode} mode)",
        "",
        "Written by `run_all.py` from the metrics the notebooks record.",
        "",
        *results_table(metrics),
    ]
    md_path = atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return json_path, md_path

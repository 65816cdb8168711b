"""Figures quoted in notes/ and the README must match artifacts/metrics.json of the full run."""

import json
import math
import re

import pytest

from helpers.utils import PROJECT_ROOT

QUOTE = re.compile(r"`([a-z_0-9]+\.[A-Za-z0-9_.]+)` = ([0-9][0-9,]*(?:\.[0-9]+)?(?:e-?[0-9]+)?)")
DOCS = sorted((PROJECT_ROOT / "notes").glob("*.md")) + [PROJECT_ROOT / "README.md"]


def metrics():
    return json.loads((PROJECT_ROOT / "artifacts" / "metrics.json").read_text())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_metrics_match_the_full_run(doc):
    known = metrics()
    for name, text in QUOTE.findall(doc.read_text()):
        assert name in known, f"{doc.name} quotes {name}, which artifacts/metrics.json does not have"
        quoted, actual = float(text.replace(",", "")), known[name]["value"]
        assert math.isclose(quoted, actual, rel_tol=1e-3, abs_tol=1e-9), f"{doc.name}: {name} = {quoted}, run: {actual}"


def test_every_metric_in_metrics_json_is_from_a_full_run():
    assert all(m["mode"] == "full" for m in metrics().values())


def test_notes_quote_something():
    assert sum(len(QUOTE.findall(d.read_text())) for d in DOCS) > 20

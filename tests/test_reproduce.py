"""The comparison of a rerun with the committed results: tolerances by unit, timings as ratios, missing metrics."""

import json
import subprocess
import sys

from helpers.course.reproduce import compare, is_timing, print_against_committed, report, tolerance
from helpers.course.utils import PROJECT_ROOT


def entry(value, unit, notebook="06_char_gpt"):
    return {"value": value, "unit": unit, "notebook": notebook, "mode": "full", "description": ""}


COMMITTED = {
    "char_gpt.val_loss": entry(1.4821, "nats/char"),
    "char_gpt.n_params": entry(1816896, "parameters"),
    "char_gpt.train_seconds": entry(600.0, "s"),
    "experiments.heads_4_val_acc": entry(0.9769, "", "10_experiments"),
}


def test_losses_within_their_spread_pass_and_outside_fail():
    rerun = {**COMMITTED, "char_gpt.val_loss": entry(1.4951, "nats/char")}
    rows = {r.key: r for r in compare(COMMITTED, rerun)}
    assert rows["char_gpt.val_loss"].within  # 0.013 apart: within ±0.02
    rerun["char_gpt.val_loss"] = entry(1.5321, "nats/char")
    rows = {r.key: r for r in compare(COMMITTED, rerun)}
    assert not rows["char_gpt.val_loss"].within and "OUTSIDE" in rows["char_gpt.val_loss"].line()


def test_counts_are_exact_timings_are_ratios_and_a_missing_metric_fails():
    rerun = {**COMMITTED, "char_gpt.n_params": entry(1816897, "parameters"), "char_gpt.train_seconds": entry(1500, "s")}
    del rerun["experiments.heads_4_val_acc"]
    rows = {r.key: r for r in compare(COMMITTED, rerun)}
    assert tolerance("parameters") == 0 and not rows["char_gpt.n_params"].within
    assert rows["char_gpt.train_seconds"].within and "2.50x the committed time" in rows["char_gpt.train_seconds"].line()
    assert not rows["experiments.heads_4_val_acc"].within
    text = report(list(rows.values()))
    assert text.splitlines()[-1].startswith("1/3 non-timing metrics within their tolerance; outside or missing:")


def test_only_the_chosen_notebooks_are_compared_and_timing_is_recognised():
    assert [r.key for r in compare(COMMITTED, COMMITTED, {"10_experiments"})] == ["experiments.heads_4_val_acc"]
    assert is_timing("generation.kv_cache_speedup", "x") and is_timing("char_gpt.eval_seconds", "s")
    assert not is_timing("char_gpt.val_loss", "nats/char")


def test_a_notebook_sees_its_figures_beside_the_committed_ones(capsys):
    print_against_committed(COMMITTED, COMMITTED, ["char_gpt.val_loss", "char_gpt.train_seconds"])
    out = capsys.readouterr().out
    assert "1.482" in out and "1.00x the committed time" in out and "this run reproduces the committed one" in out


def test_the_maintainer_command_compares_a_rerun_it_finds(tmp_path):
    res = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "99"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and "no notebook is numbered 99" in res.stderr and "Traceback" not in res.stderr
    json.loads((PROJECT_ROOT / "artifacts" / "metrics.json").read_text())  # what it compares against

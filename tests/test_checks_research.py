"""The 09 and 10 checks catch planted mistakes with a named symptom (solutions and stubs: test_workspace.py)."""

import math
from dataclasses import replace

import torch

from grader.checks.research import _no_rescale
from grader.core import grade
from helpers.course.experiments import ExperimentConfig, run_experiment

SMALL = ExperimentConfig(steps=20, d_model=16, n_heads=2, seq_len=4, batch_size=16, eval_size=64)


def _full_matrix(q, k, v, block_size, causal=False):
    """Right answer, but through the whole score matrix."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(s, -1) @ v


def _blocks_without_causal(q, k, v, block_size, causal=False):
    return _no_rescale(q, k, v, 10**6)  # one block: right without a mask, wrong with one


def test_09_catches_planted_mistakes():
    report = grade("09.blockwise", _no_rescale)
    assert not report.passed and "forgetting to rescale" in report.text()
    report = grade("09.blockwise", _full_matrix)
    assert not report.passed and "the whole score matrix" in report.text()
    report = grade("09.blockwise", _blocks_without_causal)
    assert not report.passed and "without the causal mask" in report.text()


def _ablation(**override):
    base = SMALL
    var = replace(base, warmup_steps=5)
    seeds = [0, 1]
    b = [run_experiment(replace(base, seed=s)).metrics["val_acc"] for s in seeds]
    v = [run_experiment(replace(var, seed=s)).metrics["val_acc"] for s in seeds]
    result = {
        "question": "Does warm-up help?",
        "metric": "val_acc",
        "baseline": base,
        "variant": var,
        "seeds": seeds,
        "baseline_scores": b,
        "variant_scores": v,
        "reading": f"Baseline {sum(b) / 2:.3f}, warm-up {sum(v) / 2:.3f}.",
    }
    result.update(override)
    return result


def test_10_accepts_a_sound_design_and_names_what_is_missing():
    assert grade("10.ablation", _ablation).passed
    two_changes = grade("10.ablation", lambda: _ablation(variant=replace(SMALL, warmup_steps=5, lr=3e-3)))
    assert not two_changes.passed and "2 settings differ (lr, warmup_steps)" in two_changes.text()
    one_seed = grade("10.ablation", lambda: _ablation(seeds=[0, 0]))
    assert not one_seed.passed and "at least two different seeds" in one_seed.text()
    vague = grade("10.ablation", lambda: _ablation(reading="Warm-up helps a lot."))
    assert not vague.passed and "does not state the mean of: baseline, variant" in vague.text()
    made_up = grade("10.ablation", lambda: _ablation(baseline_scores=[0.5, 0.5], reading="0.500 and 0.0"))
    assert not made_up.passed and "running the baseline with seed 0 gives" in made_up.text()
    missing = grade("10.ablation", lambda: {"question": "?"})
    assert not missing.passed and "missing keys: metric, baseline" in missing.text()

"""Checks of the exercises of notebooks 09-10: attention block by block, and an ablation of one's own (exercises).

09 compares with F.scaled_dot_product_attention in float64 and watches every tensor the learner's code makes, so a
version that builds the whole score matrix is caught. 10 checks the structure of an experiment: one change against a
baseline, several seeds, a spread, a reading that quotes what was measured.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from grader.core import exercise
from helpers.course.experiments import ExperimentConfig, run_experiment, spread

# ---------------------------------------------------------------- 09 attention block by block


class LargestTensor(TorchFunctionMode):
    """Record the largest trailing (rows, columns) of any tensor that torch functions return inside the block."""

    def __init__(self):
        super().__init__()
        self.largest = (0, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-2] * t.shape[-1] > math.prod(self.largest):
                self.largest = tuple(t.shape[-2:])
        return out


def _qkv(shape_q, t_k, d_v, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape_q, generator=g, dtype=torch.float64)
    k = torch.randn(*shape_q[:-2], t_k, shape_q[-1], generator=g, dtype=torch.float64)
    v = torch.randn(*shape_q[:-2], t_k, d_v, generator=g, dtype=torch.float64)
    return q, k, v


def _no_rescale(q, k, v, block_size, causal=False):
    """Online softmax that forgets to rescale what it kept when the maximum grows (a known mistake)."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    out_num = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    den = torch.zeros(*q.shape[:-1], 1, dtype=q.dtype)
    rows = torch.arange(t_q)[:, None] + (t_k - t_q)
    for start in range(0, t_k, block_size):
        s = q @ k[..., start : start + block_size, :].transpose(-2, -1) / math.sqrt(q.shape[-1])
        if causal:
            s = s.masked_fill(torch.arange(start, start + s.shape[-1])[None, :] > rows, float("-inf"))
        p = torch.exp(s - s.amax(-1, keepdim=True).clamp_min(-1e300))
        den = den + p.sum(-1, keepdim=True)
        out_num = out_num + p @ v[..., start : start + block_size, :]
    return out_num / den


@exercise("09.blockwise", "attention block by block with an online softmax", "blockwise_attention")
def _blockwise(fn, case):
    cases = [
        ("one block holds every key (block_size >= T)", (1, 5, 4), 5, 3, 8, False),
        ("blocks of 2 over 7 keys (the last block is shorter)", (2, 7, 4), 7, 3, 2, False),
        ("block_size = 1: one key at a time", (2, 6, 4), 6, 2, 1, False),
        ("causal, blocks of 3, batched (2, 3, T, d_k)", (2, 3, 8, 4), 8, 5, 3, True),
        ("scores far from 0 (q scaled by 30): the running max matters", (1, 6, 4), 6, 3, 2, False),
    ]
    for i, (name, shape_q, t_k, d_v, block, causal) in enumerate(cases):
        with case(name) as c:
            q, k, v = _qkv(shape_q, t_k, d_v, seed=i)
            if "scaled by 30" in name:
                q = q * 30
            mode = LargestTensor()
            with mode:
                out = c.call(fn, q, k, v, block, causal=causal)
            want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            mistakes = {
                "forgetting to rescale the running sums when the maximum grows": _no_rescale(q, k, v, block, causal),
                "attention without the causal mask": F.scaled_dot_product_attention(q, k, v),
            }
            c.expect_close("the output", out, want, atol=1e-9, rtol=1e-7, mistakes=mistakes)
            t_q = shape_q[-2]
            if block < t_k:
                c.expect(
                    mode.largest[0] * mode.largest[1] < t_q * t_k,
                    f"a ({t_q}, {t_k}) tensor was built: the whole score matrix, not one block of {block} keys",
                    "compute the scores of one block of keys at a time: q @ k_blockᵀ has shape (..., T_q, block_size)",
                )


# ---------------------------------------------------------------- 10 an ablation of one's own

ABLATION_KEYS = {
    "question": str,  # what the experiment asks, in one sentence
    "metric": str,  # the key of ExperimentResult.metrics it compares, such as "val_acc"
    "baseline": ExperimentConfig,  # the configuration without the change
    "variant": ExperimentConfig,  # the same configuration with one change
    "seeds": list,  # the seeds every arm is run with
    "baseline_scores": list,  # the metric per seed, in the order of seeds
    "variant_scores": list,
    "reading": str,  # what the numbers say, quoting them
}


def _numbers(text: str) -> list[tuple[float, int]]:
    """Every number in a text with its count of decimals."""
    return [(float(m), len(m.split(".")[1]) if "." in m else 0) for m in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _quotes(text: str, value: float) -> bool:
    """True when the text states value to the precision it prints (at least one decimal)."""
    return any(dec >= 1 and abs(x - value) <= 0.5 * 10**-dec + 1e-12 for x, dec in _numbers(text))


@exercise("10.ablation", "an ablation of your own design", "my_ablation")
def _ablation(fn, case):
    with case("returns a dict with question, metric, baseline, variant, seeds, scores and reading") as c:
        result = c.call(fn)
        c.expect(isinstance(result, dict), f"my_ablation() should return a dict, got {type(result).__name__}")
        missing = [key for key in ABLATION_KEYS if key not in result]
        c.expect(not missing, f"missing keys: {', '.join(missing)}")
        wrong = [f"{key} ({kind.__name__})" for key, kind in ABLATION_KEYS.items() if not isinstance(result[key], kind)]
        c.expect(not wrong, f"these values have the wrong type, expected: {', '.join(wrong)}")
    with case("one change against the baseline (the seed aside)") as c:
        base, var = result["baseline"], result["variant"]
        changed = [
            f.name
            for f in fields(ExperimentConfig)
            if f.name != "seed" and getattr(base, f.name) != getattr(var, f.name)
        ]
        c.expect(changed, "the variant is the baseline: change one setting", "an ablation changes exactly one thing")
        c.expect(
            len(changed) == 1,
            f"{len(changed)} settings differ ({', '.join(changed)}): a difference could come from any of them",
            "change one setting, so the result can be credited to it",
        )
    with case("at least two seeds, one score per seed for each arm") as c:
        seeds = result["seeds"]
        c.expect(len(set(seeds)) >= 2, f"seeds {seeds}: use at least two different seeds to see the spread")
        for arm in ("baseline_scores", "variant_scores"):
            scores = result[arm]
            c.expect(len(scores) == len(seeds), f"{arm} has {len(scores)} values for {len(seeds)} seeds")
            c.expect(
                all(isinstance(s, float | int) and math.isfinite(s) for s in scores), f"{arm} holds a non-finite value"
            )
    with case("the first baseline seed reproduces its score (seeded runs)") as c:
        rerun = run_experiment(replace(result["baseline"], seed=seeds[0]))
        c.expect(
            result["metric"] in rerun.metrics, f"metric {result['metric']!r} is not one of {sorted(rerun.metrics)}"
        )
        again = rerun.metrics[result["metric"]]
        c.expect(
            abs(again - result["baseline_scores"][0]) < 1e-6,
            f"running the baseline with seed {seeds[0]} gives {again:.4f}, not {result['baseline_scores'][0]:.4f}",
            "score each arm with run_experiment(replace(config, seed=s)) and keep the scores in the order of seeds",
        )
    with case("the reading quotes the mean of each arm") as c:
        means = {arm: sum(result[arm]) / len(result[arm]) for arm in ("baseline_scores", "variant_scores")}
        summary = ", ".join(f"{arm.split('_')[0]} {spread(result[arm])}" for arm in means)
        missing = [arm.split("_")[0] for arm, m in means.items() if not _quotes(result["reading"], m)]
        c.expect(
            not missing,
            f"the reading does not state the mean of: {', '.join(missing)} (measured: {summary}, mean [min–max])",
            "say what each arm reached and whether the gap is larger than the spread over seeds",
        )

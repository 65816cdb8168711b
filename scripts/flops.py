"""Compute accounting for notebook 06's GPT: FLOPs per training step, the machine's matmul ceiling, the fraction used.

    python scripts/flops.py          # writes artifacts/compute/char_gpt_flops.json and prints the table

1. FLOPs of one training step by formula (a multiply-add counts 2; the backward pass costs twice the forward):
   per token and block, 24 d^2 for the four attention projections and the feed-forward network (width 4d), 4 T d for
   the scores and the weighted sum (the from-scratch attention computes the whole T x T square, masked half included),
   and 2 d V for the output head; times 3 for forward + backward, times B T tokens.
2. The same step counted by PyTorch's FlopCounterMode (matrix products only), to check the formula.
3. The machine's ceiling: the median time of a 1024 x 1024 matrix product, float32 and bfloat16.
4. The measured step (notebook 06's settings: bf16 autocast, fast dropout, AdamW), and the share of the ceiling it
   reaches. Steps and products are timed alternately-free, one after the other, with PyTorch's default threads.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.course.datasets import load_dataset  # noqa: E402
from helpers.course.runs import build_char_gpt, describe_device  # noqa: E402
from helpers.course.trainer import Trainer  # noqa: E402
from helpers.course.utils import PROJECT_ROOT, atomic_write_text  # noqa: E402
from helpers.training import TrainConfig  # noqa: E402

SIZES = dict(block_size=128, d_model=192, n_heads=4, n_layers=4, dropout=0.1, attn_dropout=0.0, ffn_dropout=0.0)
BATCH = 16
OUT = PROJECT_ROOT / "artifacts" / "compute" / "char_gpt_flops.json"


def formula_flops(vocab: int, d: int, n_layers: int, t: int, batch: int) -> dict:
    """FLOPs of one training step of the course's GPT by formula, split by part."""
    tokens = batch * t
    parts = {
        "projections_and_feed_forward": n_layers * 24 * d * d,
        "attention_scores_and_weighted_sum": n_layers * 4 * t * d,
        "output_head": 2 * d * vocab,
    }
    return {name: 3 * per_token * tokens for name, per_token in parts.items()}


def counted_flops(model, x, y) -> int:
    """FLOPs of one forward + backward pass, as PyTorch's FlopCounterMode counts them (matrix products)."""
    with FlopCounterMode(display=False) as counter:
        _, loss = model(x, y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_ceiling(dtype: torch.dtype, n: int = 1024, repeat: int = 30) -> float:
    """FLOP/s of an n x n matrix product in dtype: 2 n^3 over the median time of `repeat` products."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_seconds(trainer: Trainer, warmup: int = 20, repeat: int = 60) -> float:
    """The median time of one training step."""
    times = []
    for i in range(warmup + repeat):
        t0 = time.perf_counter()
        trainer.train_step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> dict:
    ds = load_dataset()
    vocab = ds.tokenizer.vocab_size
    model = build_char_gpt(SIZES, vocab, None, seed=0)
    x = torch.randint(vocab, (BATCH, SIZES["block_size"]))
    by_part = formula_flops(vocab, SIZES["d_model"], SIZES["n_layers"], SIZES["block_size"], BATCH)
    formula, counted = sum(by_part.values()), counted_flops(model, x, x)
    cfg = TrainConfig(max_steps=100_000, batch_size=BATCH, lr=2e-3, warmup_steps=100, eval_interval=100_000,
                      amp=True, flush_denormal=True, fast_dropout=True)  # fmt: skip
    seconds = step_seconds(Trainer(model, ds.train, ds.val, cfg, SIZES["block_size"]))
    ceilings = {"float32": matmul_ceiling(torch.float32), "bfloat16": matmul_ceiling(torch.bfloat16)}
    record = {
        "model": {**SIZES, "vocab_size": vocab, "batch_size": BATCH, "parameters": model.num_params()},
        "flops_per_step_formula": formula,
        "flops_per_step_formula_by_part": by_part,
        "flops_per_step_counted": counted,
        "step_seconds_median": seconds,
        "achieved_flops_per_s": formula / seconds,
        "matmul_flops_per_s_1024": ceilings,
        "share_of_ceiling": {k: formula / seconds / v for k, v in ceilings.items()},
        "machine": describe_device(torch.device("cpu")),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(record, indent=2) + "\n")
    print(f"notebook 06's GPT, batch {BATCH} x {SIZES['block_size']} tokens, {model.num_params():,} parameters")
    for name, flops in by_part.items():
        print(f"  {name.replace('_', ' '):36s} {flops / 1e9:7.2f} GFLOP per step ({flops / formula:.0%})")
    print(f"  {'formula, in all':36s} {formula / 1e9:7.2f} GFLOP; FlopCounterMode counted {counted / 1e9:.2f}")
    print(f"step: {1000 * seconds:.1f} ms (median), so {formula / seconds / 1e9:.1f} GFLOP/s achieved")
    for name, ceiling in ceilings.items():
        share = formula / seconds / ceiling
        print(f"1024 x 1024 matmul, {name}: {ceiling / 1e9:.1f} GFLOP/s; the step reaches {share:.0%} of it")
    print(f"machine: {record['machine']['cpu']}, {record['machine']['threads']} threads, torch {torch.__version__}")
    print(f"written to {OUT.relative_to(PROJECT_ROOT)}")
    return record


if __name__ == "__main__":
    main()

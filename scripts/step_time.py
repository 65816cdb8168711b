"""Median training-step time of notebook 06's and 11's full settings on this machine (maintainers).

    python scripts/step_time.py 06      # the course's GPT, bf16 autocast, fast dropout, AdamW
    python scripts/step_time.py 11      # the modern GPT with Muon + AdamW

30 warm-up steps, then the median of 200 timed steps, with PyTorch's default thread count. The step budgets of the
full runs are chosen from such a median: steps = training seconds / median step time.
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.course.datasets import load_dataset  # noqa: E402
from helpers.course.runs import build_char_gpt, describe_device  # noqa: E402
from helpers.course.trainer import Trainer  # noqa: E402
from helpers.optim import make_muon_adamw  # noqa: E402
from helpers.training import TrainConfig  # noqa: E402

SIZES = dict(block_size=128, d_model=192, n_heads=4, n_layers=4, dropout=0.1, attn_dropout=0.0, ffn_dropout=0.0)


def main(which: str) -> None:
    """Print the median step time of one notebook's full settings, with the machine that measured it."""
    ds = load_dataset()
    cfg = TrainConfig(
        max_steps=100_000,
        batch_size=16,
        lr=2e-3,
        min_lr_ratio=0.05,
        warmup_steps=100,
        beta2=0.99,
        eval_interval=100_000,
        amp=True,
        flush_denormal=True,
        fast_dropout=True,
    )
    model = build_char_gpt(SIZES, ds.tokenizer.vocab_size, None if which == "06" else "all", seed=0)
    optimizer = make_muon_adamw(model, muon_lr=0.02, adamw_lr=2e-3, ns_dtype="bfloat16") if which == "11" else None
    trainer = Trainer(model, ds.train, ds.val, cfg, SIZES["block_size"], optimizer=optimizer)
    times = []
    for _ in range(230):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[30:])
    print(
        f"notebook {which}: median {1000 * statistics.median(timed):.1f} ms/step "
        f"(10th-90th percentile {1000 * timed[20]:.1f}-{1000 * timed[180]:.1f}), {torch.get_num_threads()} threads"
    )
    print(describe_device(torch.device("cpu")))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "06")

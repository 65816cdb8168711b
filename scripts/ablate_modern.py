"""Ablations for notebook 11: each post-2019 change alone, on notebook 06's model and settings, for a short clock.

    python scripts/ablate_modern.py                          # every run below, seed 0 (about 25 minutes on 2 cores)
    python scripts/ablate_modern.py baseline modern_muon --seed 1
    python scripts/ablate_modern.py --smoke --out /tmp/abl   # a few steps of a tiny model, to check the script

Every run trains notebook 06's full-mode model and settings (4 layers, width 192, context 128, batch 16, AdamW at
2e-3 with the speed-ups of 06) with one change switched on, for 120 s of training with the cosine fitted to 118 s,
and evaluates on the whole validation split at 60 s and at the end. Nothing else should run on the machine meanwhile:
the budget is wall-clock time. Each run writes <out>/<run>_seed<seed>.json (helpers.course.runs.recorded_run's record).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.course.datasets import load_dataset  # noqa: E402
from helpers.course.runs import recorded_run  # noqa: E402
from helpers.training import TrainConfig  # noqa: E402

SIZES = dict(block_size=128, d_model=192, n_heads=4, n_layers=4, dropout=0.1, attn_dropout=0.0, ffn_dropout=0.0)
TRAIN = dict(max_steps=100_000, batch_size=16, lr=2e-3, min_lr_ratio=0.05, warmup_steps=100, beta2=0.99)
# the learning rates of tuning runs P and S (artifacts/tuning/README.md); Newton-Schulz in bfloat16 (notebook 11, 5)
MUON = dict(muon_lr=0.02, adamw_lr=2e-3, ns_dtype="bfloat16")
ABLATIONS = {  # run name: (helpers.modern switches, Muon settings)
    "baseline": (None, None),  # notebook 06's GPT
    "rmsnorm": ({"norm": "rmsnorm"}, None),
    "swiglu": ({"ffn": "swiglu"}, None),
    "rope": ({"positions": "rope"}, None),
    "qk_norm": ({"qk_norm": True}, None),
    "no_bias": ({"bias": False}, None),
    "untied": ({"tie_embeddings": False}, None),
    "muon": (None, MUON),
    "modern": ("all", None),
    "modern_muon": ("all", MUON),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"any of {', '.join(ABLATIONS)} (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "ablations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=120.0, help="training seconds per run")
    parser.add_argument("--smoke", action="store_true", help="a few steps of a tiny model, to check the script")
    args = parser.parse_args(argv)
    unknown = [name for name in args.runs if name not in ABLATIONS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    ds = load_dataset()
    sizes, train = dict(SIZES), dict(TRAIN)
    timing = dict(time_budget=args.seconds - 2, time_limit=args.seconds, eval_at_seconds=[args.seconds / 2])
    if args.smoke:
        sizes.update(block_size=32, d_model=48, n_layers=2)
        train.update(max_steps=12, warmup_steps=4)
        timing = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.runs or list(ABLATIONS):
        switches, muon = ABLATIONS[name]
        cfg = TrainConfig(
            **train, **timing, eval_interval=100_000, seed=args.seed, amp=True, flush_denormal=True, fast_dropout=True
        )
        print(f"== {name}, seed {args.seed}", flush=True)
        record = recorded_run(name, ds, sizes, cfg, switches, muon)
        (args.out / f"{name}_seed{args.seed}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: val {record['val_loss']:.4f} after {record['steps']} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

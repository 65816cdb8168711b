"""Train the course's GPT and the modern GPT on a GPU: tokens per second and validation loss against training time.

    python scripts/gpu_runs.py --out artifacts/gpu nanogpt_course nanogpt_modern   # nanoGPT's sizes, 5,000 steps
    python scripts/gpu_runs.py --out artifacts/gpu nb06_course nb06_modern        # notebook 06's sizes, 120 s
    python scripts/gpu_runs.py --out artifacts/gpu compile                        # torch.compile against eager
    python scripts/gpu_runs.py --device cpu --smoke --out /tmp/gpu_smoke nanogpt_course   # a few steps, any machine

Each run writes <out>/<run>.json: the device, the PyTorch version, the settings, the evaluation log (validation loss
over the whole validation split against training seconds) and the throughput. Notebook 11 reads these files as a
recorded table; they are never mixed with the CPU figures of artifacts/metrics.json.

The runs (all with bfloat16 autocast and the fused attention kernel, use_sdpa=True, which tests/test_attention.py and
tests/test_modern.py prove equal to the from-scratch path):
  nanogpt_course  the course's GPT at nanoGPT's Shakespeare sizes and schedule: 6 layers, 6 heads, width 384,
                  context 256, dropout 0.2, no biases, batch 64, AdamW at 1e-3 (beta2 0.99), 5,000 steps with
                  100 warm-up steps and a cosine to 1e-4. nanoGPT reports a validation loss of 1.4697 for it.
  nanogpt_modern  the same sizes and steps with every modern switch (helpers/modern.py) and Muon + AdamW.
  nanogpt_modern_adamw  the modern GPT at those sizes with nanogpt_course's AdamW: what Muon changes.
  nb06_course     notebook 06's full settings (4 layers, width 192, context 128, batch 16), 120 s of training.
  nb06_modern     the same with every modern switch and Muon + AdamW (tuning run S's settings).
  compile         ms per step of nanogpt_course's model, eager against torch.compile, after warm-up;
  compile_nb06, compile_nb06_modern   the same for nb06_course's and nb06_modern's models (on a CPU too);
  compile_modern  the same for nanogpt_modern's model (with Muon's batched float32 Newton-Schulz).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from helpers.course.datasets import load_dataset  # noqa: E402
from helpers.course.measure import synchronize  # noqa: E402
from helpers.course.runs import build_char_gpt, describe_device, recorded_run  # noqa: E402
from helpers.course.trainer import Trainer  # noqa: E402
from helpers.course.utils import get_device  # noqa: E402
from helpers.optim import make_muon_adamw  # noqa: E402
from helpers.training import TrainConfig  # noqa: E402

NANOGPT_SIZES = dict(block_size=256, d_model=384, n_heads=6, n_layers=6, dropout=0.2, bias=False, use_sdpa=True)
# time_limit only guards the device's 10-minute call limit: a run that reaches it records fewer than 5,000 steps
NANOGPT_TRAIN = dict(
    max_steps=5000, batch_size=64, lr=1e-3, min_lr_ratio=0.1, warmup_steps=100, beta2=0.99, time_limit=420.0
)
NB06_SIZES = dict(
    block_size=128, d_model=192, n_heads=4, n_layers=4, dropout=0.1, attn_dropout=0.0, ffn_dropout=0.0, use_sdpa=True
)
NB06_TRAIN = dict(max_steps=100_000, batch_size=16, lr=2e-3, min_lr_ratio=0.05, warmup_steps=100, beta2=0.99)
MUON = dict(muon_lr=0.02, adamw_lr=2e-3)  # tuning runs P and S (artifacts/tuning/README.md); float32 Newton-Schulz

RUNS = {
    # name: (modern?, model sizes, train settings, Muon settings or None, seconds between evaluations)
    "nanogpt_course": (False, NANOGPT_SIZES, NANOGPT_TRAIN, None, 15),
    "nanogpt_modern": (True, NANOGPT_SIZES, NANOGPT_TRAIN, {**MUON, "adamw_lr": 1e-3}, 15),
    "nanogpt_modern_adamw": (True, NANOGPT_SIZES, NANOGPT_TRAIN, None, 15),
    "nb06_course": (False, NB06_SIZES, {**NB06_TRAIN, "time_budget": 118.0, "time_limit": 120.0}, None, 10),
    "nb06_modern": (True, NB06_SIZES, {**NB06_TRAIN, "time_budget": 118.0, "time_limit": 120.0}, MUON, 10),
}


def train_run(name: str, device: torch.device, smoke: bool, seed: int) -> dict:
    """One training run of RUNS, as helpers.course.runs.recorded_run's record."""
    modern, sizes, train, muon, every = RUNS[name]
    sizes = dict(sizes)
    if smoke:  # a few steps of a tiny model: checks the script, measures nothing
        sizes.update(block_size=32, d_model=48, n_heads=4, n_layers=2)
        train = {**train, "max_steps": 12, "warmup_steps": 4, "time_budget": None, "time_limit": None}
    limit = train.get("time_limit")
    marks = [every * k for k in range(1, int((limit or 3600) // every) + 1)]
    cfg = TrainConfig(amp=True, eval_interval=100_000, eval_at_seconds=marks, seed=seed, **train)
    record = recorded_run(name, load_dataset(), sizes, cfg, "all" if modern else None, muon, device)
    return {**record, "model": "modern" if modern else "course", "smoke": smoke}


COMPILE_RUNS = {  # name: (modern?, model sizes, batch size, Muon settings or None, steps timed)
    "compile": (False, NANOGPT_SIZES, 64, None, 150),
    "compile_nb06": (False, NB06_SIZES, 16, None, 100),
    "compile_nb06_modern": (True, NB06_SIZES, 16, MUON, 100),
    "compile_modern": (True, NANOGPT_SIZES, 64, MUON, 150),
}


def compile_run(name: str, device: torch.device, smoke: bool, seed: int) -> dict:
    """Median ms per training step, eager and compiled (TrainConfig.compile), each after 3 steps of warm-up.

    On a CPU both arms use notebook 06's CPU speed-ups (flush_denormal, fast_dropout) as the full runs do.
    """
    modern, sizes, batch, muon, steps = COMPILE_RUNS[name]
    ds = load_dataset()
    sizes = {**sizes, "use_sdpa": device.type == "cuda"}
    if smoke:
        sizes.update(block_size=32, d_model=48, n_heads=4, n_layers=2)
        steps = 6
    out = {"run": name, **describe_device(device), "seed": seed, "smoke": smoke, "steps_timed": steps}
    out.update(model="modern" if modern else "course", model_sizes=sizes, batch_size=batch, muon=muon)
    cpu = device.type == "cpu"
    for compiled in (False, True):
        model = build_char_gpt(sizes, ds.tokenizer.vocab_size, "all" if modern else None, seed).to(device)
        optimizer = make_muon_adamw(model, **muon) if muon else None
        cfg = TrainConfig(
            max_steps=10 * steps,
            batch_size=batch,
            lr=1e-3,
            warmup_steps=10,
            amp=True,
            compile=compiled,
            seed=seed,
            flush_denormal=cpu,
            fast_dropout=cpu,
        )
        trainer = Trainer(model, ds.train, ds.val, cfg, model.cfg.block_size, optimizer=optimizer)
        t0 = time.perf_counter()
        for _ in range(3):  # the first steps compile (or warm the kernels); their time is reported apart
            trainer.train_step()
        synchronize(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()  # its loss.item() waits for the step to finish
            times.append(time.perf_counter() - t0)
        key = "compiled" if compiled else "eager"
        out[key] = {
            "first_3_steps_seconds": first,
            "median_ms_per_step": 1000 * statistics.median(times),
            "loss_after": trainer.losses[-1],
        }
    out["speedup"] = out["eager"]["median_ms_per_step"] / out["compiled"]["median_ms_per_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", choices=[*RUNS, *COMPILE_RUNS])
    parser.add_argument("--out", type=Path, required=True, help="folder for <run>.json")
    parser.add_argument("--device", default=None, help="cuda, cpu or auto (default: $COURSE_DEVICE, else the best)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few steps of a tiny model, to check the script")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matrix products on tensor cores (evaluation)
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        print(f"== {name} on {device}", flush=True)
        result = (
            compile_run(name, device, args.smoke, args.seed)
            if name in COMPILE_RUNS
            else train_run(name, device, args.smoke, args.seed)
        )
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        summary = {k: result[k] for k in ("steps", "train_seconds", "tokens_per_second", "val_loss") if k in result}
        print(name, json.dumps(summary if summary else {k: result[k] for k in ("eager", "compiled", "speedup")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

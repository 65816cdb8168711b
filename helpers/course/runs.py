"""Recorded training runs: one seeded char-GPT run as a JSON-ready record (scripts/gpu_runs.py, ablate_modern.py).

Notebook 11 reads these records as tables and curves. A record names the machine it ran on, so GPU and CPU figures
are never mixed.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from helpers.course.datasets import CharDataset
from helpers.course.trainer import Trainer
from helpers.course.utils import PROJECT_ROOT
from helpers.models import GPT, GPTConfig
from helpers.modern import ModernGPT, ModernGPTConfig
from helpers.optim import make_muon_adamw
from helpers.training import TrainConfig


def cpu_model() -> str:
    """The CPU's model name as the operating system reports it ("" where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def source_commit() -> dict:
    """The commit of the course's code that ran, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30).stdout

    try:
        return {"commit": git("rev-parse", "HEAD").strip() or None, "dirty": bool(git("status", "--porcelain", "-uno"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # not a git checkout, or no git


def describe_device(device: torch.device) -> dict:
    """What ran the numbers: device name, CPU model and threads, PyTorch (and CUDA) version, commit and command."""
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model()}
    if device.type == "cuda":
        info.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    else:
        info.update(name=device.type)
    return {**info, **source_commit(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def build_char_gpt(sizes: dict, vocab_size: int, switches: dict | str | None = None, seed: int = 0) -> GPT:
    """A seeded char-GPT: the course's GPT (switches None), ModernGPT with some switches, or "all" of them."""
    torch.manual_seed(seed)
    if switches is None:
        return GPT(GPTConfig(vocab_size=vocab_size, **sizes))
    if switches == "all":
        return ModernGPT(ModernGPTConfig.modern(vocab_size=vocab_size, **sizes))
    return ModernGPT(ModernGPTConfig(vocab_size=vocab_size, **sizes, **switches))


def recorded_run(
    name: str,
    ds: CharDataset,
    sizes: dict,
    cfg: TrainConfig,
    switches: dict | str | None = None,
    muon: dict | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Train one char-GPT (build_char_gpt; Muon + AdamW when muon holds make_muon_adamw's arguments) and return
    its record: settings, machine, evaluation log, steps, tokens, throughput and the last validation loss."""
    model = build_char_gpt(sizes, ds.tokenizer.vocab_size, switches, cfg.seed).to(device)
    optimizer = make_muon_adamw(model, **muon) if muon else None
    trainer = Trainer(model, ds.train, ds.val, cfg, model.cfg.block_size, optimizer=optimizer)
    t0 = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - t0
    tokens = trainer.step * cfg.batch_size * cfg.grad_accum * model.cfg.block_size
    return {
        "run": name,
        **describe_device(torch.device(device)),
        "switches": switches,
        "optimizer": {"muon": muon} if muon else {"adamw_lr": cfg.lr},
        "model_config": dict(vars(model.cfg)),
        "train_config": {k: getattr(cfg, k) for k in ("max_steps", "batch_size", "lr", "warmup_steps", "time_limit")},
        "seed": cfg.seed,
        "n_params": model.num_params(),
        "steps": trainer.step,
        "tokens": tokens,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": trainer.eval_seconds,
        "wall_seconds": wall,
        "tokens_per_second": tokens / trainer.train_seconds,
        "ms_per_step": 1000 * trainer.train_seconds / trainer.step,
        "val_loss": trainer.log[-1]["val_loss"],
        "val_se": trainer.log[-1]["val_se"],
        "log": trainer.log,
    }

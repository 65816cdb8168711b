"""Tables, figures and recorded metrics of notebooks 06, 07 and 11 (introduced in 06_char_gpt).

The notebooks keep what they teach (the model, the Trainer being built and run, the numbers being computed); this
module holds the bookkeeping around it: loading, saving and resuming a char-GPT run, the samples taken during
training, the tables and figures of the results, and the recorded runs notebook 11 reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

from helpers.course.checkpoints import load_checkpoint, model_checkpoint, model_from_checkpoint, save_checkpoint
from helpers.course.datasets import CharDataset, known_word_share, load_dataset
from helpers.course.metrics import MetricRecorder
from helpers.course.trainer import Trainer, resume_trainer
from helpers.course.utils import relative
from helpers.decoding import generate_text
from helpers.models import GPT, GPTConfig
from helpers.tokenizers import CharTokenizer
from helpers.training import TrainConfig

LOG_COLUMNS = ["step", "train_seconds", "lr", "train_loss", "val_loss", "val_se"]  # the printed evaluation log

# ---------------------------------------------------------------- a run: load, resume, save (06, 07, 11)


def load_run(path: Path, device: torch.device | str) -> tuple[nn.Module, dict]:
    """Load a finished char-GPT checkpoint (float16 weights back as float32): (model on `device`, the run's meta)."""
    ckpt = load_checkpoint(path, kind="char-gpt")
    model = model_from_checkpoint(ckpt, source=path).to(device)
    meta = ckpt["meta"]
    summary = meta["summary"]
    print(f"loaded {relative(path)}: trained {summary['steps']} steps in {summary['train_seconds']:.0f} s")
    return model, meta


def resume_run(
    state_path: Path, model: nn.Module, ds: CharDataset, optimizer: torch.optim.Optimizer | None = None
) -> Trainer:
    """Rebuild the Trainer of an unfinished run from its training state and say where it continues."""
    trainer = resume_trainer(state_path, model, ds.train, ds.val, optimizer=optimizer)
    print(f"resuming the unfinished run in {relative(state_path)} at step {trainer.step}")
    return trainer


def run_summary(trainer: Trainer) -> dict:
    """Return a finished run's summary: steps, training and evaluation seconds, characters, last validation loss."""
    last = trainer.log[-1]
    return {
        "steps": trainer.step,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": trainer.eval_seconds,
        "tokens": last["tokens"],
        "val_loss": last["val_loss"],
        "val_se": last["val_se"],
    }


def save_run(trainer: Trainer, tok: CharTokenizer, final_path: Path, log_dir: Path, **extra) -> dict:
    """Write a finished run's logs and save its model with the run in the checkpoint's meta; return that meta."""
    # logs: <log_dir>/<name>_log.csv and .json, name the checkpoint's stem (char_gpt, modern_gpt); the model:
    # model_checkpoint(model, tok, meta) at final_path, meta holding train_config, log, `extra` (snapshots...), summary
    meta = {"train_config": asdict(trainer.cfg), "log": trainer.log, **extra, "summary": run_summary(trainer)}
    name = Path(final_path).stem
    trainer.write_logs(Path(log_dir) / f"{name}_log.csv", Path(log_dir) / f"{name}_log.json")
    save_checkpoint(model_checkpoint(trainer.model, tok, meta=meta), final_path)
    return meta


def describe_run(summary: dict, final_path: Path) -> str:
    """Return two lines on a run: its steps, characters and seconds, then the checkpoint file and its size."""
    return (
        f"{summary['steps']} steps, {summary['tokens']:,} training tokens, "
        f"{summary['train_seconds']:.1f} s of training (+ {summary['eval_seconds']:.1f} s of evaluation, not counted)\n"
        f"saved {relative(final_path)} ({Path(final_path).stat().st_size / 1e6:.1f} MB)"
    )


def sample_snapshot(
    trainer: Trainer,
    tok: CharTokenizer,
    label: str,
    known_words: set[str],
    prompt: str,
    length: int,
    seed: int,
    temperature: float = 0.8,
) -> dict:
    """Sample from the trainer's model as it is now; append text, validation loss and known-word share to its extra."""
    text = generate_text(trainer.model, tok, prompt, length, seed=seed, temperature=temperature)
    row = trainer.log[-1]
    snap = {
        "label": label,
        "step": trainer.step,
        "train_seconds": row["train_seconds"],
        "val_loss": row["val_loss"],
        "word_share": known_word_share(text, known_words),
        "text": text,
    }
    trainer.extra["snapshots"].append(snap)
    return snap


def load_or_stand_in(ckpt_path: Path, mode: str, device: torch.device | str) -> tuple[nn.Module, CharTokenizer]:
    """Load notebook 06's model; in quick mode without it, train a tiny stand-in for a few seconds (full: an error)."""
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, kind="char-gpt")
        model, tok = model_from_checkpoint(ckpt, ckpt_path).to(device), CharTokenizer.from_dict(ckpt["tokenizer"])
        summary = ckpt["meta"]["summary"]
        print(f"loaded {relative(ckpt_path)}: validation loss {summary['val_loss']:.3f} after {summary['steps']} steps")
        return model, tok
    if mode != "quick":
        raise FileNotFoundError(
            f"{relative(ckpt_path)} not found. Create it by running notebook 06 in full mode "
            f"(python run_all.py --only 06), or restore the committed file with git."
        )
    print(f"{relative(ckpt_path)} not found: training a tiny stand-in (run notebook 06 in quick mode to save one)")
    ds = load_dataset()
    tok = ds.tokenizer
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, d_model=64, n_heads=4, n_layers=2)).to(device)
    cfg = TrainConfig(max_steps=150, lr=3e-3, warmup_steps=15, eval_interval=150, eval_windows=50)
    Trainer(model, ds.train, ds.val, cfg, 64).run()
    return model, tok


# ---------------------------------------------------------------- the evaluation log (06, 11)


def val_at(log_df: pd.DataFrame, seconds: float) -> pd.Series | None:
    """Return the first evaluation at or after `seconds` of training time (None if training was shorter)."""
    later = log_df[log_df["train_seconds"] >= seconds]
    return None if later.empty else later.iloc[0]


def log_table(log_df: pd.DataFrame) -> str:
    """Return the evaluation log as a text table: step, seconds, learning rate, losses (4 decimals)."""
    return log_df[LOG_COLUMNS].round(4).to_string(index=False)


def read_log(path: Path) -> pd.DataFrame | None:
    """Return the evaluation log of a run's JSON log file (Trainer.write_logs) as a table; None if there is none."""
    path = Path(path)
    return pd.DataFrame(json.loads(path.read_text())["log"]) if path.exists() else None


# ---------------------------------------------------------------- figures and readings of notebook 06


def plot_loss_curves(log_df: pd.DataFrame, uniform: float, bigram: float) -> plt.Figure:
    """Draw both losses against steps (with the baselines), and validation loss against training time (references)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    ax.plot(log_df["step"][1:], log_df["train_loss"][1:], "o-", label="train (mean since the last evaluation)")
    ax.plot(log_df["step"], log_df["val_loss"], "s-", label="validation")
    ax.axhline(uniform, color="grey", ls=":", label="uniform (ln 65)")
    ax.axhline(bigram, color="grey", ls="--", label="bigram")
    ax.set(title="Loss against optimiser steps", xlabel="step", ylabel="cross-entropy (nats/char)")
    ax.legend()
    ax = axes[1]
    ax.plot(log_df["train_seconds"], log_df["val_loss"], "s-", color="C1", label="this GPT, validation")
    ax.plot([120, 600], [1.88, 1.55], "k*", markersize=12, label="nanoGPT references (2 and 10 min)")
    ax.axhline(1.50, color="C2", ls="--", label="target 1.50")
    ax.set(
        title="Validation loss against training wall time",
        xlabel="training seconds (evaluation excluded)",
        ylabel="cross-entropy (nats/char)",
        ylim=(1.3, 3.0),
    )
    ax.legend()
    fig.tight_layout()
    return fig


def head_patterns(first: torch.Tensor, last: torch.Tensor, line: str) -> str:
    """Describe (H, T, T) weights on `line`: block 0's mean weight d places back, the last block's newline rows."""
    n_heads = first.shape[0]
    lines = ["block 0, mean weight on the character d places back (d = 0: the character itself):"]
    for h in range(n_heads):
        lines.append(f"  head {h}: " + "  ".join(f"d={d}: {torch.diagonal(first[h], -d).mean():.2f}" for d in range(4)))
    newline = line.index("\n")
    lines.append(
        f"last block, rows of the second line ({len(line) - newline - 1} of them) "
        "whose largest weight is on the newline:"
    )
    lines.append(
        "  "
        + "  ".join(f"head {h}: {int((last[h, newline + 1 :].argmax(-1) == newline).sum())}" for h in range(n_heads))
    )
    return "\n".join(lines)


def plot_position_similarity(pos_sim: torch.Tensor, sim_at: dict[int, float]) -> plt.Figure:
    """Draw the cosine similarity of every pair of positions, and its mean over the pairs d apart."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    im = axes[0].imshow(pos_sim, cmap="RdBu", vmin=-1, vmax=1)
    fig.colorbar(im, ax=axes[0], label="cosine similarity")
    axes[0].set(title="Learned position vectors: cosine similarity", xlabel="position j", ylabel="position i")
    axes[1].plot(list(sim_at), list(sim_at.values()), ".-")
    axes[1].axhline(0.0, color="grey", lw=0.8)
    axes[1].set(
        title="Mean similarity of positions d apart",
        xlabel="distance d = |i - j|",
        ylabel="mean cosine similarity",
        xscale="log",
    )
    return fig


# ---------------------------------------------------------------- figures, tables and readings of notebook 11


def plot_singular_values(before: torch.Tensor, after: torch.Tensor, shape: tuple[int, int]) -> plt.Figure:
    """Draw the singular values of a matrix of `shape` before and after Newton–Schulz, on a log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(before, label="before (G / ||G||)")
    ax.plot(after, label="after 5 Newton–Schulz steps")
    ax.set(
        yscale="log",
        xlabel="index of the singular value",
        ylabel="singular value",
        title=f"Newton–Schulz on a {shape[0]} × {shape[1]} matrix",
    )
    ax.legend()
    return fig


def plot_ablations(means: pd.DataFrame, base_mean: float) -> plt.Figure:
    """Draw each run's mean loss minus the baseline's as a bar, with the range over seeds where there are several."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = ["grey"] + ["C0"] * 6 + ["C1", "C2", "C3"]
    ax.bar(means.index.astype(str), means["mean"] - base_mean, color=colors[: len(means)])
    for i, (_, row) in enumerate(means.iterrows()):
        if row["count"] > 1:
            ax.plot([i, i], [row["min"] - base_mean, row["max"] - base_mean], "k-", lw=2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(
        ylabel="validation loss minus baseline (nats/char)",
        title="Each change alone, 120 s of training (lower is better)",
    )
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def ablation_reading(means: pd.DataFrame, ablations: pd.DataFrame, order: list[str], base_mean: float) -> str:
    """Return the Markdown reading of the ablations: each change against the baseline, the best run, the seed spread."""
    seeds_run = ablations.groupby("run", observed=True)["seed"].nunique()
    spread_runs = [r for r in order if seeds_run.get(r, 0) > 1]
    spread_text = "; ".join(
        f"{r}: {means.loc[r, 'min']:.3f} to {means.loc[r, 'max']:.3f} over {int(means.loc[r, 'count'])} seeds"
        for r in spread_runs
    )
    best = means["mean"].idxmin()
    return (
        f"**Reading.** The baseline reaches {base_mean:.3f} after 120 s. "
        + "; ".join(f"{r} {means.loc[r, 'mean'] - base_mean:+.3f}" for r in order[1:] if r in means.index)
        + f" (nats/char against the baseline). The best run is {best} at {means.loc[best, 'mean']:.3f}. "
        + (f"Seed spread where measured: {spread_text}." if spread_text else "")
    )


def plot_against_course(log_df: pd.DataFrame, course_df: pd.DataFrame | None, targets: bool) -> plt.Figure:
    """Draw the modern GPT's validation loss against training time beside notebook 06's (and the targets)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if course_df is not None:
        ax.plot(course_df["train_seconds"], course_df["val_loss"], "s-", color="grey", label="notebook 06's GPT, AdamW")
    ax.plot(log_df["train_seconds"], log_df["val_loss"], "o-", color="C3", label="modern GPT, Muon + AdamW")
    if targets:
        ax.axhline(1.45, color="C2", ls="--", label="target at 10 min: 1.45")
        ax.plot([120], [1.65], "C2*", markersize=12, label="target at 120 s: 1.65")
        ax.set(ylim=(1.3, 3.0))
    ax.set(
        xlabel="training seconds (evaluation excluded)",
        ylabel="validation loss (nats/char)",
        title="Validation loss against training wall time",
    )
    ax.legend()
    return fig


def modern_results(log_df: pd.DataFrame, summary: dict, course_df: pd.DataFrame | None) -> str:
    """Return the modern GPT's log table, its final loss and its loss at 120 s, and notebook 06's beside them."""
    final, at_120 = log_df.iloc[-1], val_at(log_df, 120.0)
    lines = [
        log_table(log_df),
        f"\nfinal validation loss {final['val_loss']:.4f} ± {final['val_se']:.4f} "
        f"after {final['train_seconds']:.1f} s, {summary['steps']:,} steps, {summary['tokens']:,} training characters",
    ]
    if at_120 is not None:
        lines.append(f"validation loss {at_120['val_loss']:.4f} at {at_120['train_seconds']:.1f} s")
    if course_df is not None:
        course_120 = val_at(course_df, 120.0)
        lines.append(
            f"notebook 06's GPT: {course_df.iloc[-1]['val_loss']:.4f} at the end"
            + (
                f", {course_120['val_loss']:.4f} at {course_120['train_seconds']:.1f} s"
                if course_120 is not None
                else ""
            )
        )
    return "\n".join(lines)


GPU_ROUNDING = {"train s": 1, "ms per step": 1, "tokens per s": 0, "final val": 4, "best val": 4, "best at s": 0}


def gpu_table(gpu_runs: list[dict]) -> pd.DataFrame:
    """Return one row per recorded GPU run (scripts/gpu_runs.py): size, speed, final and best loss, rounded."""
    rows = [
        {
            "run": r["run"],
            "device": r["name"],
            "parameters": r["n_params"],
            "steps": r["steps"],
            "train s": r["train_seconds"],
            "ms per step": r["ms_per_step"],
            "tokens per s": r["tokens_per_second"],
            "final val": r["val_loss"],
            "best val": min(e["val_loss"] for e in r["log"]),
            "best at s": min(r["log"], key=lambda e: e["val_loss"])["train_seconds"],
        }
        for r in gpu_runs
    ]
    return pd.DataFrame(rows).round(GPU_ROUNDING)


def plot_gpu_runs(gpu_runs: list[dict]) -> plt.Figure:
    """Draw validation loss against training seconds: nanoGPT's sizes on the left, notebook 06's on the right."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in gpu_runs:
        ax = axes[0] if r["run"].startswith("nanogpt") else axes[1]
        ax.plot([e["train_seconds"] for e in r["log"]], [e["val_loss"] for e in r["log"]], ".-", label=r["run"])
    axes[0].axhline(1.4697, color="k", ls=":", label="nanoGPT's reported 1.4697")
    axes[0].set(title="nanoGPT's sizes on an H100", ylim=(1.35, 2.0))
    axes[1].set(title="notebook 06's sizes on an H100, 120 s", ylim=(1.35, 2.5))
    for ax in axes:
        ax.set(xlabel="training seconds", ylabel="validation loss (nats/char)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def record_gpu_runs(metrics: MetricRecorder, gpu_runs: list[dict]) -> None:
    """Record each GPU run's validation loss and throughput, named gpu_h100.<run> so they never mix with CPU ones."""
    for r in gpu_runs:
        tag = f"gpu_h100.{r['run']}"
        metrics.record(
            f"{tag}.val_loss",
            r["val_loss"],
            "nats/char",
            f"recorded on {r['name']} by scripts/gpu_runs.py: validation loss after {r['steps']} steps",
        )
        metrics.record(
            f"{tag}.tokens_per_second",
            r["tokens_per_second"],
            "characters/s",
            f"recorded on {r['name']} by scripts/gpu_runs.py: training throughput",
        )


def ddp_summary(log_text: str) -> pd.DataFrame:
    """Return one row per setting of a recorded DDP timing log: its runs' seconds, their median, the final losses."""
    rows, command = [], None
    for line in log_text.splitlines():
        if line.startswith("$ "):
            threads = re.search(r"OMP_NUM_THREADS=(\d+)", line).group(1)
            procs = re.search(r"--nproc_per_node (\d+)", line)
            command = f"{procs.group(1) if procs else 1} process(es) x {threads} thread(s)"
        elif " s training" in line and line.startswith("step") and command:
            rows.append(
                {
                    "setting": command,
                    "training seconds": float(re.search(r"([\d.]+) s training", line).group(1)),
                    "final train loss": float(re.search(r"train ([\d.]+)", line).group(1)),
                }
            )
    return (
        pd.DataFrame(rows)
        .groupby("setting", sort=False)
        .agg(
            runs=("training seconds", "size"),
            seconds=("training seconds", lambda s: " / ".join(f"{v:.1f}" for v in s)),
            median=("training seconds", "median"),
            losses=("final train loss", lambda s: sorted(set(s))),
        )
    )


def ddp_commands(log_text: str) -> list[str]:
    """Return the distinct launchers of a recorded DDP timing log (each `$ ` line up to train_gpt.py), sorted."""
    return sorted({line.split(" train_gpt.py")[0][2:] for line in log_text.splitlines() if line.startswith("$ ")})

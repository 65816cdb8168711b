"""One TrainConfig, the losses, one training step and one training loop for every task (introduced in 06_char_gpt).

- the losses: lm_loss (a GPT's next-token loss), seq2seq_loss and translation_loss (08), token_loss (10);
- train_step: one optimiser step (forward, loss, backward, clip, step, schedule), the same for the GPT (06),
  the translator (08) and the experiments (10);
- train: the loop around it, with evaluations on a schedule and an optional time limit.
The char-GPT's resumable runner (whole-split validation, checkpoints) is helpers.course.trainer.Trainer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from helpers.decoding import model_device
from helpers.optim import make_adamw, make_scheduler
from helpers.tokenizers import PAD_ID

IGNORE = -100  # a target id that the cross-entropy skips (F.cross_entropy's default ignore_index)


@dataclass
class TrainConfig:
    """Optimisation settings of a training run (every task uses this one class)."""

    max_steps: int = 1000  # optimiser steps; the cosine schedule ends here
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step (effective batch = batch_size * grad_accum)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak (1.0: constant after warm-up)
    warmup_steps: int = 100  # linear warm-up steps
    weight_decay: float = 0.1  # AdamW decay on weight matrices only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 switches clipping off)
    eval_interval: int = 200  # evaluate every this many steps (and at the end)
    eval_at_seconds: list = field(default_factory=list)  # Trainer: also evaluate once training time passes each
    eval_windows: int | None = None  # Trainer: validation windows per evaluation; None = the whole split
    eval_batch_size: int = 64  # Trainer: windows per forward pass during evaluation
    time_limit: float | None = None  # stop once training time (evaluations excluded) reaches this many seconds
    time_budget: float | None = None  # Trainer: fit the schedule to this many seconds (max_steps re-derived)
    seed: int = 0  # seeds the batch sampler and dropout
    compile: bool = False  # Trainer: torch.compile the model for training steps
    amp: bool = False  # speed-up: autocast the forward pass (bfloat16 on CPU and CUDA; none on MPS)
    flush_denormal: bool = False  # speed-up: treat denormal floats as zero on CPU (helpers.course.speedups)
    fast_dropout: bool = False  # speed-up: the bit-packed dropout mask on CPU (helpers.course.speedups)

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("max_steps, batch_size and grad_accum must be positive")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps must be in 0..max_steps, got {self.warmup_steps}")
        if self.time_budget is not None and (self.time_budget <= 0 or self.warmup_steps < 4):
            raise ValueError("time_budget needs a positive number of seconds and warmup_steps >= 4 to time the steps")


# ---------------------------------------------------------------- reduced precision


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision used under autocast on a device: bfloat16 on CPU and recent CUDA GPUs, else none."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        return None  # float16 would need loss scaling; older GPUs train in float32
    return torch.bfloat16 if kind in ("cpu", "cuda") else None


def autocast(device: torch.device | str, enabled: bool = True):
    """torch.autocast for the device's reduced precision, or a no-op where the device has none or enabled=False."""
    dtype = autocast_dtype(device)
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=enabled and dtype is not None)


# ---------------------------------------------------------------- the losses


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The language-model loss of a batch (x, y): mean cross-entropy of predicting y[t] from x[0..t]."""
    x, y = batch
    return model(x, y)[1]


def seq2seq_loss(
    logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0, ignore_padding: bool = True
) -> torch.Tensor:
    """Mean token cross-entropy of logits (B, T, V) against tgt_out (B, T), skipping <pad> positions by default."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        tgt_out.reshape(-1),
        ignore_index=PAD_ID if ignore_padding else IGNORE,
        label_smoothing=label_smoothing,
    )


def translation_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], label_smoothing: float = 0.0):
    """The teacher-forced loss of a batch (src, tgt), tgt = <bos> y_1 ... <eos>: predict tgt[1:] from tgt[:-1]."""
    src, tgt = batch
    return seq2seq_loss(model(src, tgt[:, :-1]), tgt[:, 1:], label_smoothing)


def token_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of a model's logits (B, T, V) against y (B, T), skipping targets equal to IGNORE (10)."""
    x, y = batch
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


# ---------------------------------------------------------------- one step, one loop


def train_step(
    model: nn.Module, micro_batches: list, loss_fn, optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig
) -> float:
    """One optimiser step over the micro-batches; return their mean loss.

    For each micro-batch: loss_fn(model, batch), backward of loss / len(micro_batches) (so the gradients add up to
    the mean). Then clip the global gradient norm, step, clear the gradients and advance the schedule.
    A loss that is NaN or infinite is returned at once, without a step, so it cannot damage the weights.
    """
    model.train()
    device = model_device(model)  # autocast needs the device type
    total = 0.0
    for batch in micro_batches:
        with autocast(device, enabled=cfg.amp):
            loss = loss_fn(model, batch)
        value = loss.item()
        if not math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            return value
        (loss / len(micro_batches)).backward()
        total += value
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return total / len(micro_batches)


def train(
    model: nn.Module,
    next_batch,
    loss_fn,
    cfg: TrainConfig,
    evaluate=None,
    optimizer: torch.optim.Optimizer | None = None,
    log=print,
) -> dict:
    """Train for cfg.max_steps steps (or until cfg.time_limit seconds of training); return the history.

    next_batch() gives one micro-batch (already on the model's device); loss_fn(model, batch) its loss.
    evaluate(step) -> dict runs every cfg.eval_interval steps and at the end; its results go into history["evals"]
    with the mean training loss since the previous evaluation, and one line per evaluation goes to `log`.
    The optimiser defaults to make_adamw from cfg. Training time excludes evaluations. A NaN or infinite loss stops the
    run. cfg.amp acts in train_step; the caller switches on cfg's other speed-ups (helpers.course.speedups).
    """
    optimizer = optimizer or make_adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    scheduler = make_scheduler(optimizer, cfg)
    history = {"loss": [], "evals": [], "steps": 0, "train_seconds": 0.0}
    start = time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        tic = time.perf_counter()
        loss = train_step(model, [next_batch() for _ in range(cfg.grad_accum)], loss_fn, optimizer, scheduler, cfg)
        history["train_seconds"] += time.perf_counter() - tic
        history["loss"].append(loss)
        history["steps"] = step
        if not math.isfinite(loss):
            break
        out_of_time = cfg.time_limit is not None and history["train_seconds"] >= cfg.time_limit
        if evaluate is not None and (step % cfg.eval_interval == 0 or step == cfg.max_steps or out_of_time):
            row = _evaluation(history, step, evaluate)
            history["evals"].append(row)
            log("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if out_of_time:
            break
    history["wall_seconds"] = time.perf_counter() - start
    return history


def _evaluation(history: dict, step: int, evaluate) -> dict:
    """One row of history["evals"]: step, training time, mean training loss since the last row, and evaluate()."""
    since = history["evals"][-1]["step"] if history["evals"] else 0
    recent = history["loss"][since:]
    return {
        "step": step,
        "train_seconds": history["train_seconds"],
        "train_loss": sum(recent) / len(recent),
        **evaluate(step),
    }

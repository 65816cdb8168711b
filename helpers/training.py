"""AdamW, warm-up + cosine, one TrainConfig and one training step for every task (introduced in 06_char_gpt).

- train_step: one optimiser step (forward, loss, backward, clip, step, schedule), the same for the GPT (06),
  the translator (08) and the experiments (10);
- train: the short loop around it, with evaluations on a schedule and an optional time limit (08, 10);
- Trainer: the char-GPT's runner around the same train_step (06): validation on the whole split, a time budget that
  fits the schedule to the machine, and a training state that resumes exactly after an interruption.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from helpers.checkpoints import load_checkpoint, make_checkpoint, save_checkpoint
from helpers.datasets import get_batch
from helpers.evaluation import evaluate_lm
from helpers.speedups import autocast, flush_denormal, use_fast_dropout
from helpers.utils import atomic_write_text


def make_adamw(model: nn.Module, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: no decay on biases, norms or embeddings."""
    no_decay_ids = set()  # a weight shared by an embedding and a linear layer (tied LM head) counts as embedding
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not (name == "weight" and isinstance(module, nn.Linear)):
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():  # each shared parameter once
        if param.requires_grad:
            (no_decay if id(param) in no_decay_ids else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warmup to 1, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
    flush_denormal: bool = False  # speed-up: treat denormal floats as zero on CPU (helpers.speedups)
    fast_dropout: bool = False  # speed-up: the bit-packed dropout mask on CPU (helpers.speedups)

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("max_steps, batch_size and grad_accum must be positive")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps must be in 0..max_steps, got {self.warmup_steps}")
        if self.time_budget is not None and (self.time_budget <= 0 or self.warmup_steps < 4):
            raise ValueError("time_budget needs a positive number of seconds and warmup_steps >= 4 to time the steps")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine from cfg, as a scheduler that multiplies each parameter group's learning rate."""
    schedule = partial(
        warmup_cosine, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, min_ratio=cfg.min_lr_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def use_speedups(model: nn.Module, cfg: TrainConfig) -> None:
    """Switch on the speed-ups cfg asks for that act on the model or the process (amp acts inside train_step)."""
    if cfg.flush_denormal:
        flush_denormal(True)  # a process-wide switch; it stays on after training
    if cfg.fast_dropout:
        use_fast_dropout(model)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The language-model loss of a batch (x, y): mean cross-entropy of predicting y[t] from x[0..t]."""
    x, y = batch
    return model(x, y)[1]


def train_step(
    model: nn.Module, micro_batches: list, loss_fn, optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig
) -> float:
    """One optimiser step over the micro-batches; return their mean loss.

    For each micro-batch: loss_fn(model, batch), backward of loss / len(micro_batches) (so the gradients add up to
    the mean). Then clip the global gradient norm, step, clear the gradients and advance the schedule.
    A loss that is NaN or infinite is returned at once, without a step, so it cannot damage the weights.
    """
    model.train()
    device = next(model.parameters()).device
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
    The optimiser defaults to make_adamw(model, ...) from cfg. Training time counts batches, forward, backward and
    optimiser steps, not evaluations. A NaN or infinite loss stops the run.
    """
    use_speedups(model, cfg)
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
            since = history["evals"][-1]["step"] if history["evals"] else 0
            recent = history["loss"][since:]
            row = {
                "step": step,
                "train_seconds": history["train_seconds"],
                "train_loss": sum(recent) / len(recent),
                **evaluate(step),
            }
            history["evals"].append(row)
            log("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if out_of_time:
            break
    history["wall_seconds"] = time.perf_counter() - start
    return history


_BUDGET_REFITS = 3  # time_budget: fits after the first one, at 1/4, 1/2 and 3/4 of the way


class Trainer:
    """Train a language model on a 1-D id tensor with train_step, validating on a schedule; resumable exactly.

    Its whole state (model, optimiser, scheduler, step, RNG states, logs) goes into one checkpoint, and a
    Trainer rebuilt from that checkpoint continues exactly as if it had never stopped.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: torch.Tensor,
        val_data: torch.Tensor,
        cfg: TrainConfig,
        block_size: int,
        extra: dict | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        self.model, self.train_data, self.val_data, self.cfg = model, train_data, val_data, cfg
        self.block_size, self.extra = block_size, dict(extra or {})
        use_speedups(model, cfg)
        # default: AdamW from cfg; another optimiser (e.g. helpers.modern.make_muon_adamw) must hold model's parameters
        self.optimizer = optimizer or make_adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self._schedule = self.scheduler.lr_lambdas[0]  # the partial(warmup_cosine, ...) that a time budget refits
        self.generator = torch.Generator().manual_seed(cfg.seed)  # batch sampling
        torch.manual_seed(cfg.seed)  # dropout
        self.step = 0
        self.train_seconds = 0.0  # batches, forward, backward and optimiser time only
        self.eval_seconds = 0.0
        self.losses: list[float] = []  # training loss of every step
        self.log: list[dict] = []  # one row per evaluation
        self._pending_marks = sorted(cfg.eval_at_seconds)
        self._budget_fit: dict | None = None  # time_budget bookkeeping (see _fit_to_budget)
        self._forward = torch.compile(model) if cfg.compile else model

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random micro-batch of training windows (x, y), on the model's device."""
        x, y = get_batch(self.train_data, self.cfg.batch_size, self.block_size, self.generator)
        return x.to(self.device), y.to(self.device)

    def train_step(self) -> float:
        """One optimiser step over grad_accum micro-batches (helpers.training.train_step); return the mean loss."""
        batches = [self.next_batch() for _ in range(self.cfg.grad_accum)]
        loss = train_step(self._forward, batches, lm_loss, self.optimizer, self.scheduler, self.cfg)
        self.step += 1
        self.losses.append(loss)
        return loss

    def validate(self) -> dict:
        """Score the validation data, append a row to the log and return it (its time is not training time)."""
        t0 = time.perf_counter()
        val_loss, val_se = evaluate_lm(
            self.model, self.val_data, self.block_size, self.cfg.eval_batch_size, self.cfg.eval_windows
        )
        self.eval_seconds += time.perf_counter() - t0
        since = self.log[-1]["step"] if self.log else 0
        recent = self.losses[since:] or [float("nan")]  # the training steps since the previous evaluation
        row = {
            "step": self.step,
            "train_seconds": round(self.train_seconds, 3),
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": sum(recent) / len(recent),
            "val_loss": val_loss,
            "val_se": val_se,
            "tokens": self.step * self.cfg.batch_size * self.cfg.grad_accum * self.block_size,
        }
        self.log.append(row)
        return row

    def run(
        self,
        steps: int | None = None,
        checkpoint_path: Path | str | None = None,
        checkpoint_every: int = 0,
        on_eval=None,
    ) -> list[dict]:
        """Train until max_steps (or `steps` more steps, or the time limit); validate on schedule; return the log.

        One line is printed per evaluation; on_eval(trainer, row) is called after each. Every checkpoint_every
        steps the training state is written to checkpoint_path.
        """
        stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, self.step + steps)
        if self.step == 0 and not self.log:
            self._report(self.validate(), on_eval)
        while self.step < stop:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss} at step {self.step}; the weights are "
                    f"those of the step before (lower lr or check the data)"
                )
            self._fit_to_budget()
            stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, stop)
            out_of_time = self.cfg.time_limit is not None and self.train_seconds >= self.cfg.time_limit
            mark = bool(self._pending_marks) and self.train_seconds >= self._pending_marks[0]
            while self._pending_marks and self.train_seconds >= self._pending_marks[0]:
                self._pending_marks.pop(0)
            if mark or self.step % self.cfg.eval_interval == 0 or self.step == self.cfg.max_steps or out_of_time:
                self._report(self.validate(), on_eval)
            if checkpoint_path is not None and checkpoint_every and self.step % checkpoint_every == 0:
                self.save(checkpoint_path)
            if out_of_time:
                break
        return self.log

    def _fit_to_budget(self) -> None:
        """Set max_steps so that the cosine decay ends when time_budget is spent; fit again 3 times on the way.

        The first fit uses the step time of the second half of the warmup (the first steps are slower). The refits,
        a quarter, a half and three quarters of the way to the fitted end, each use the steps since the previous
        fit: a wrong first estimate (a few slow seconds during warmup) is corrected early, and a machine that slows
        down or speeds up later still ends its schedule close to the budget.
        The fits go into the config and the training state, so a resumed run keeps the same schedule.
        """
        budget, warmup = self.cfg.time_budget, self.cfg.warmup_steps
        if budget is None:
            return
        if self.step == warmup // 2:
            self._budget_fit = {
                "mark_step": self.step,
                "mark_seconds": self.train_seconds,
                "refit_step": None,
                "refits_left": _BUDGET_REFITS,
            }
            return
        fit = self._budget_fit
        if fit is None or self.step not in (warmup, fit["refit_step"]):
            return
        step_seconds = (self.train_seconds - fit["mark_seconds"]) / (self.step - fit["mark_step"])
        remaining = int((budget - self.train_seconds) / step_seconds)
        self.cfg.max_steps = max(self.step + 1, self.step + remaining)
        self._schedule.keywords["total_steps"] = self.cfg.max_steps  # the scheduler reads it at every step
        left = fit.get("refits_left", 0) - (self.step != warmup)  # refits still to come after this fit
        refit_step = self.step + (self.cfg.max_steps - self.step) // (left + 1) if left > 0 else None
        self._budget_fit = {
            "mark_step": self.step,
            "mark_seconds": self.train_seconds,
            "refit_step": refit_step if refit_step != self.step else None,
            "refits_left": left,
        }
        print(
            f"time budget {budget:.0f} s at {1000 * step_seconds:.0f} ms per step (step {self.step}): "
            f"max_steps = {self.cfg.max_steps}"
        )

    def _report(self, row: dict, on_eval) -> None:
        """Print one line per evaluation and call the user's hook."""
        print(
            f"step {row['step']:>5} | {row['train_seconds']:7.1f} s | lr {row['lr']:.2e} | "
            f"train {row['train_loss']:.4f} | val {row['val_loss']:.4f} ± {row['val_se']:.4f}"
        )
        if on_eval is not None:
            on_eval(self, row)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, in the course's checkpoint layout ("training-state").

        "model": float32 weights; "config": the TrainConfig; "meta": optimiser, scheduler, step, RNG states, logs,
        the time-budget fit, and `extra` (whatever the caller keeps with the run, such as samples).
        """
        meta = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": {"torch": torch.get_rng_state(), "batches": self.generator.get_state()},
            "block_size": self.block_size,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "losses": list(self.losses),
            "log": [dict(r) for r in self.log],
            "pending_marks": list(self._pending_marks),
            "budget_fit": None if self._budget_fit is None else dict(self._budget_fit),
            "extra": self.extra,
        }
        return make_checkpoint("training-state", self.model.state_dict(), asdict(self.cfg), meta=meta)

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by state_dict (the model and data must already match it)."""
        meta = state["meta"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(meta["optimizer"])
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step = meta["step"]
        torch.set_rng_state(meta["rng"]["torch"])
        self.generator.set_state(meta["rng"]["batches"])
        self.train_seconds, self.eval_seconds = meta["train_seconds"], meta["eval_seconds"]
        self.losses, self.log = list(meta["losses"]), [dict(r) for r in meta["log"]]
        self._pending_marks = list(meta["pending_marks"])
        self._budget_fit = meta["budget_fit"]
        self.extra = dict(meta["extra"])

    def save(self, path: Path | str) -> Path:
        """Write the full training state atomically."""
        return save_checkpoint(self.state_dict(), path)

    def write_logs(self, csv_path: Path | str, json_path: Path | str | None = None) -> None:
        """Write the evaluation log as CSV (and the run's summary as JSON)."""
        if not self.log:
            return
        columns = list(self.log[0])
        lines = [",".join(columns)] + [",".join(f"{r[c]}" for c in columns) for r in self.log]
        atomic_write_text(csv_path, "\n".join(lines) + "\n")
        if json_path is not None:
            summary = {
                "train_config": asdict(self.cfg),
                "steps": self.step,
                "train_seconds": self.train_seconds,
                "eval_seconds": self.eval_seconds,
                "log": self.log,
            }
            atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")


def resume_trainer(
    path: Path | str,
    model: nn.Module,
    train_data: torch.Tensor,
    val_data: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
) -> Trainer:
    """Rebuild a Trainer from a checkpoint written by Trainer.save and continue where it stopped.

    A run that trained with its own optimiser must pass a fresh one of the same kind; its state is then loaded.
    """
    state = load_checkpoint(path, kind="training-state")
    cfg, block_size = TrainConfig(**state["config"]), state["meta"]["block_size"]
    trainer = Trainer(model, train_data, val_data, cfg, block_size, optimizer=optimizer)
    trainer.load_state_dict(state)
    return trainer

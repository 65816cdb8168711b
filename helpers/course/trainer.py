"""The char-GPT's resumable runner around helpers.training.train_step (introduced in 06_char_gpt).

Trainer validates on the whole split on a schedule, can fit its schedule to a time budget, and saves a training state
that resumes exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from helpers.course.checkpoints import first_line, load_checkpoint, make_checkpoint, save_checkpoint
from helpers.course.datasets import get_batch
from helpers.course.scoring import evaluate_lm
from helpers.course.speedups import use_speedups
from helpers.course.utils import atomic_write_text
from helpers.decoding import model_device
from helpers.optim import make_adamw, make_scheduler
from helpers.training import TrainConfig, lm_loss, train_step

_BUDGET_REFITS = 3  # time_budget: fits after the first one, at 1/4, 1/2 and 3/4 of the way


@dataclass
class Hooks:
    """What a caller changes in Trainer.run: train_gpt.py shards each batch over processes and decides on rank 0."""

    step_model: nn.Module | None = None  # the module the steps run through (DDP around the model); None: the model
    loss_fn: Callable = lm_loss  # loss_fn(step_model, batch)
    batch: Callable = field(default=lambda batch: batch)  # a global batch -> this process's share of it
    decide: Callable = field(default=lambda flag: flag)  # one decision for every process (rank 0's)
    validates: bool = True  # this process validates and prints (rank 0 only, under torchrun)
    save: Callable | None = None  # save(trainer) at each evaluation and when the run stops


def format_eval(row: dict, max_steps: int) -> str:
    """The one log line of an evaluation (Trainer.run, train_gpt.py)."""
    train = f"{row['train_loss']:.4f}" if math.isfinite(row["train_loss"]) else "-"  # none before the first step
    return (
        f"step {row['step']:>5}/{max_steps} | {row['train_seconds']:7.1f} s | lr {row['lr']:.2e} | "
        f"train {train:>6} | val {row['val_loss']:.4f} ± {row['val_se']:.4f}"
    )


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
        # default: AdamW from cfg; another optimiser (e.g. helpers.optim.make_muon_adamw) must hold model's parameters
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
        self.compiled: bool | None = None  # with cfg.compile: True once a compiled step ran, False after a fallback

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return model_device(self.model)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random micro-batch of training windows (x, y), on the model's device."""
        x, y = get_batch(self.train_data, self.cfg.batch_size, self.block_size, self.generator)
        return x.to(self.device), y.to(self.device)

    def train_step(self, hooks: Hooks | None = None) -> float:
        """One optimiser step over grad_accum micro-batches (helpers.training.train_step); return the mean loss."""
        hooks = hooks or Hooks()
        batches = [hooks.batch(self.next_batch()) for _ in range(self.cfg.grad_accum)]
        model = hooks.step_model or self._forward
        try:
            loss = train_step(model, batches, hooks.loss_fn, self.optimizer, self.scheduler, self.cfg)
        except Exception as err:  # compilation happens at the first call: no C++ compiler, no Triton, ...
            if model is not self._forward or not self.cfg.compile or self.compiled is not None:
                raise
            self._forward, self.compiled = self.model, False
            print(f"torch.compile failed ({first_line(err)[:150]}); training in eager mode")
            self.optimizer.zero_grad(set_to_none=True)
            loss = train_step(self.model, batches, hooks.loss_fn, self.optimizer, self.scheduler, self.cfg)
        if self.cfg.compile and self.compiled is None:
            self.compiled = True
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
        hooks: Hooks | None = None,
    ) -> list[dict]:
        """Train until max_steps (or `steps` more steps, or the time limit); validate on schedule; return the log.

        One line is printed per evaluation; on_eval(trainer, row) is called after each. Every checkpoint_every
        steps the training state is written to checkpoint_path. hooks: see Hooks (the defaults train one process).
        """
        hooks = hooks or Hooks()
        stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, self.step + steps)
        if self.step == 0 and not self.log and hooks.validates:
            self._report(self.validate(), on_eval)
        while self.step < stop:
            t0 = time.perf_counter()
            loss = self.train_step(hooks)
            self.train_seconds += time.perf_counter() - t0
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {loss} at step {self.step}; the weights are "
                    f"those of the step before (lower lr or check the data)"
                )
            self._fit_to_budget()
            stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, stop)
            out_of_time = hooks.decide(self.cfg.time_limit is not None and self.train_seconds >= self.cfg.time_limit)
            evaluate = self._evaluation_due(hooks) or out_of_time
            if evaluate and hooks.validates:
                self._report(self.validate(), on_eval)
            if hooks.save is not None and (evaluate or self.step == stop):
                hooks.save(self)
            if checkpoint_path is not None and checkpoint_every and self.step % checkpoint_every == 0:
                self.save(checkpoint_path)
            if out_of_time:
                break
        return self.log

    def _evaluation_due(self, hooks: Hooks) -> bool:
        """The one rule for validating: every eval_interval steps, at max_steps, and once past each eval_at_seconds."""
        mark = bool(self._pending_marks) and self.train_seconds >= self._pending_marks[0]
        while self._pending_marks and self.train_seconds >= self._pending_marks[0]:
            self._pending_marks.pop(0)
        return hooks.decide(mark) or self.step % self.cfg.eval_interval == 0 or self.step == self.cfg.max_steps

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
        print(format_eval(row, self.cfg.max_steps), flush=True)
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
                "compiled": self.compiled,  # None: not asked for; False: torch.compile failed and eager mode ran
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

"""Optimiser groups, learning-rate schedules, atomic checkpoints and a resumable training loop (introduced in 06_char_gpt)."""
from __future__ import annotations

import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from helpers.utils import atomic_write_bytes, atomic_write_text, autocast


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


def save_checkpoint(obj: dict, path: Path | str) -> Path:
    """torch.save a dict atomically: the old checkpoint survives until the new one is complete."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path (also a FileNotFoundError, which load_checkpoint raised before)."""


CHECKPOINT_KINDS = {"char-gpt": "a char-GPT checkpoint (from notebook 06)",
                    "translation": "a translation checkpoint (from notebook 08)",
                    "training-state": "a training-state checkpoint (Trainer.save, for resuming training)"}
_CHECKPOINT_USE = {"char-gpt": "sample.py reads it", "translation": "translate.py reads it",
                   "training-state": "resume_trainer reads it"}
_CHECKPOINT_SOURCE = {"char-gpt": "run notebooks/06_char_gpt.ipynb in full mode to create it (python run_all.py --only 06)",
                      "translation": "run notebooks/08_translation.ipynb in full mode to create it "
                                     "(python run_all.py --only 08)"}


def checkpoint_kind(ckpt) -> str | None:
    """Which course checkpoint a loaded object is: "char-gpt", "translation", "training-state", or None."""
    if not isinstance(ckpt, dict):
        return None
    keys = set(ckpt)
    if {"model", "model_config", "tokenizer"} <= keys:
        return "char-gpt"
    if {"model", "config", "src_vocab", "tgt_vocab"} <= keys:
        return "translation"
    if {"model", "optimizer", "train_config"} <= keys:
        return "training-state"
    return None


def load_checkpoint(path: Path | str, map_location="cpu", kind: str | None = None) -> dict:
    """Load a checkpoint safely: torch.load with weights_only=True (tensors and plain Python values only).

    Every problem is a CheckpointError (a ValueError) naming the file: missing (CheckpointNotFoundError, also a
    FileNotFoundError), a directory, unreadable, empty, truncated or damaged, not a PyTorch checkpoint, refused by
    the safe loader, not a dictionary, or - when `kind` ("char-gpt", "translation", "training-state") is given -
    a checkpoint of another kind, which the message names.
    """
    import pickle
    import re
    import warnings

    if kind is not None and kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {tuple(CHECKPOINT_KINDS)} or None, got {kind!r}")
    path = Path(path)
    if not path.exists():
        hint = f"; {_CHECKPOINT_SOURCE[kind]}" if kind in _CHECKPOINT_SOURCE else ""
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the file does not exist{hint}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from None
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a checkpoint (an interrupted save or copy?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing anyway
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... on bad files
        # Never pass torch's own message on: it advises retrying with weights_only=False, which runs arbitrary code.
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(f"{path} was refused by the safe loader: it holds a Python object ({refused.group(1)}) "
                                  f"that is not a tensor or plain value, so the course did not write it; "
                                  f"it is not loaded") from None
        if isinstance(err, pickle.UnpicklingError) and head == b"PK\x03\x04":
            raise CheckpointError(f"{path} was refused by the safe loader: it is damaged or holds more than tensors "
                                  f"and plain values; it is not loaded") from None
        if head == b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(f"{path} is truncated or damaged: not a complete PyTorch checkpoint "
                                  f"({size} bytes; save or copy it again)") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (not a file written by torch.save)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dictionary")
    found = checkpoint_kind(ckpt)
    if kind is not None and found != kind:
        if found is not None:
            raise CheckpointError(f"{path} is {CHECKPOINT_KINDS[found]}, not {CHECKPOINT_KINDS[kind]}; "
                                  f"{_CHECKPOINT_USE[found]}")
        keys = ", ".join(repr(k) for k in list(ckpt)[:8]) or "none"
        raise CheckpointError(f"{path} is not {CHECKPOINT_KINDS[kind]}: it is a dictionary with keys {keys}")
    return ckpt


@dataclass
class TrainConfig:
    """Optimisation settings of a language-model training run."""

    max_steps: int = 1000  # optimiser steps; the cosine schedule ends here
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step (effective batch = batch_size * grad_accum)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.1  # AdamW decay on weight matrices only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 switches clipping off)
    amp: bool = False  # reduced-precision autocast for forward passes (bfloat16 on CPU and CUDA; none on MPS)
    eval_interval: int = 200  # evaluate every this many steps (and at the end)
    eval_at_seconds: list = field(default_factory=list)  # also evaluate once training time passes each of these
    eval_windows: int | None = None  # validation windows per evaluation; None = the whole validation split
    eval_batch_size: int = 64  # windows per forward pass during evaluation
    time_limit: float | None = None  # stop early once training wall time exceeds this many seconds
    time_budget: float | None = None  # fit the schedule to this many seconds (max_steps re-derived 4 times)
    seed: int = 0  # seeds the batch sampler and dropout
    compile: bool = False  # torch.compile the model for training steps
    flush_denormal: bool = True  # treat tiny (denormal) floats as zero on CPU: they can slow float32 maths 4x

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("max_steps, batch_size and grad_accum must be positive")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps must be in 0..max_steps, got {self.warmup_steps}")
        if self.time_budget is not None and (self.time_budget <= 0 or self.warmup_steps < 4):
            raise ValueError("time_budget needs a positive number of seconds and warmup_steps >= 4 to time the steps")


@torch.no_grad()
def evaluate_lm(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 64,
                max_windows: int | None = None, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy (nats/token) over non-overlapping windows of data, and its standard error across windows."""
    from helpers.shakespeare import eval_windows

    was_training = model.training
    model.eval()
    x, y = eval_windows(data, block_size, max_windows)  # (N, T), (N, T)
    per_window = []
    device = next(model.parameters()).device
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        with autocast(device, enabled=amp):
            logits, _ = model(xb)
        loss = F.cross_entropy(logits.float().transpose(1, 2), yb, reduction="none")  # (B, V, T) -> (B, T)
        per_window.append(loss.mean(dim=1))
    model.train(was_training)
    losses = torch.cat(per_window).double()
    se = losses.std().item() / math.sqrt(len(losses)) if len(losses) > 1 else float("nan")
    return losses.mean().item(), se


_BUDGET_REFITS = 3  # time_budget: fits after the first one, at 1/4, 1/2 and 3/4 of the way

_STATE_KEYS = {"model", "optimizer", "scheduler", "step", "rng", "train_config", "block_size", "train_seconds",
               "eval_seconds", "losses", "log", "pending_marks", "budget_fit"}


class Trainer:
    """Train a language model on a 1-D id tensor with AdamW, warmup + cosine, clipping and accumulation.

    Its whole state (model, optimiser, scheduler, step, RNG states, logs) goes into one checkpoint, and a
    Trainer rebuilt from that checkpoint continues exactly as if it had never stopped.
    """

    def __init__(self, model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor, cfg: TrainConfig,
                 block_size: int, extra: dict | None = None):
        self.model, self.train_data, self.val_data, self.cfg = model, train_data, val_data, cfg
        self.block_size, self.extra = block_size, dict(extra or {})
        self.optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        schedule = partial(warmup_cosine, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps,
                           min_ratio=cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self._schedule = schedule
        self.generator = torch.Generator().manual_seed(cfg.seed)  # batch sampling
        if cfg.flush_denormal:
            torch.set_flush_denormal(True)  # a process-wide switch; it stays on after training
        torch.manual_seed(cfg.seed)  # dropout
        self.step = 0
        self.train_seconds = 0.0  # forward, backward and optimiser time only
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

    def train_step(self) -> float:
        """One optimiser step over grad_accum micro-batches; return the mean training loss."""
        from helpers.shakespeare import get_batch

        self.model.train()
        total = 0.0
        for _ in range(self.cfg.grad_accum):
            x, y = get_batch(self.train_data, self.cfg.batch_size, self.block_size, self.generator)
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.device, enabled=self.cfg.amp):
                _, loss = self._forward(x, y)
            (loss / self.cfg.grad_accum).backward()
            total += loss.item()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        loss = total / self.cfg.grad_accum
        self.losses.append(loss)
        return loss

    def evaluate(self) -> dict:
        """Score the validation data, append a row to the log and return it (its time is not training time)."""
        t0 = time.perf_counter()
        val_loss, val_se = evaluate_lm(self.model, self.val_data, self.block_size, self.cfg.eval_batch_size,
                                       self.cfg.eval_windows)
        self.eval_seconds += time.perf_counter() - t0
        since = self.log[-1]["step"] if self.log else 0
        recent = self.losses[since:] or [float("nan")]  # the training steps since the previous evaluation
        row = {"step": self.step, "train_seconds": round(self.train_seconds, 3), "lr": self.scheduler.get_last_lr()[0],
               "train_loss": sum(recent) / len(recent), "val_loss": val_loss, "val_se": val_se,
               "tokens": self.step * self.cfg.batch_size * self.cfg.grad_accum * self.block_size}
        self.log.append(row)
        return row

    def run(self, steps: int | None = None, progress: bool = True, progress_interval: float = 30.0,
            checkpoint_path: Path | str | None = None, checkpoint_every: int = 0, on_eval=None) -> list[dict]:
        """Train until max_steps (or `steps` more steps, or the time limit); evaluate on schedule; return the log.

        The progress bar refreshes at most every progress_interval seconds, so saved notebooks stay short;
        one line is printed per evaluation. on_eval(trainer, row) is called after each evaluation.
        """
        stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, self.step + steps)
        bar = tqdm(total=stop, initial=self.step, disable=not progress, mininterval=progress_interval,
                   maxinterval=max(progress_interval, 10.0), file=sys.stdout, ncols=90, desc="train")
        if self.step == 0 and not self.log:
            self._report(self.evaluate(), bar, on_eval)
        while self.step < stop:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.train_seconds += time.perf_counter() - t0
            self._fit_to_budget()
            stop = self.cfg.max_steps if steps is None else min(self.cfg.max_steps, stop)
            bar.total = stop
            bar.set_postfix_str(f"loss {loss:.3f}", refresh=False)
            bar.update(1)
            out_of_time = self.cfg.time_limit is not None and self.train_seconds >= self.cfg.time_limit
            mark = bool(self._pending_marks) and self.train_seconds >= self._pending_marks[0]
            while self._pending_marks and self.train_seconds >= self._pending_marks[0]:
                self._pending_marks.pop(0)
            if mark or self.step % self.cfg.eval_interval == 0 or self.step == self.cfg.max_steps or out_of_time:
                self._report(self.evaluate(), bar, on_eval)
            if checkpoint_path is not None and checkpoint_every and self.step % checkpoint_every == 0:
                self.save(checkpoint_path)
            if out_of_time:
                break
        bar.close()
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
            self._budget_fit = {"mark_step": self.step, "mark_seconds": self.train_seconds, "refit_step": None,
                                "refits_left": _BUDGET_REFITS}
            return
        fit = self._budget_fit
        if fit is None or self.step not in (warmup, fit["refit_step"]):
            return
        step_seconds = (self.train_seconds - fit["mark_seconds"]) / (self.step - fit["mark_step"])
        remaining = int((budget - self.train_seconds) / step_seconds)
        self.cfg.max_steps = max(self.step + 1, self.step + remaining)
        self._schedule.keywords["total_steps"] = self.cfg.max_steps
        left = fit.get("refits_left", 0) - (self.step != warmup)  # refits still to come after this fit
        refit_step = self.step + (self.cfg.max_steps - self.step) // (left + 1) if left > 0 else None
        self._budget_fit = {"mark_step": self.step, "mark_seconds": self.train_seconds,
                            "refit_step": refit_step if refit_step != self.step else None, "refits_left": left}
        tqdm.write(f"time budget {budget:.0f} s at {1000 * step_seconds:.0f} ms per step (step {self.step}): "
                   f"max_steps = {self.cfg.max_steps}", file=sys.stdout)

    def _report(self, row: dict, bar, on_eval) -> None:
        """Print one line per evaluation and call the user's hook."""
        line = (f"step {row['step']:>5} | {row['train_seconds']:7.1f} s | lr {row['lr']:.2e} | "
                f"train {row['train_loss']:.4f} | val {row['val_loss']:.4f} ± {row['val_se']:.4f}")
        if bar.disable:
            print(line)
        else:
            bar.write(line, file=sys.stdout)
        if on_eval is not None:
            on_eval(self, row)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimiser, scheduler, step, RNG states and logs."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "rng": {"torch": torch.get_rng_state(), "batches": self.generator.get_state()},
                "train_config": asdict(self.cfg), "block_size": self.block_size,
                "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "losses": list(self.losses), "log": [dict(r) for r in self.log],
                "pending_marks": list(self._pending_marks),
                "budget_fit": None if self._budget_fit is None else dict(self._budget_fit), **self.extra}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by state_dict (the model and data must already match it)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["batches"])
        self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
        self.losses, self.log = list(state["losses"]), [dict(r) for r in state["log"]]
        self._pending_marks = list(state["pending_marks"])
        self._budget_fit = state.get("budget_fit")

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
            summary = {"train_config": asdict(self.cfg), "steps": self.step, "train_seconds": self.train_seconds,
                       "eval_seconds": self.eval_seconds, "log": self.log}
            atomic_write_text(json_path, json.dumps(summary, indent=2) + "\n")


def resume_trainer(path: Path | str, model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor) -> Trainer:
    """Rebuild a Trainer from a checkpoint written by Trainer.save and continue where it stopped."""
    state = load_checkpoint(path)
    extra = {k: v for k, v in state.items() if k not in _STATE_KEYS}
    trainer = Trainer(model, train_data, val_data, TrainConfig(**state["train_config"]), state["block_size"], extra)
    trainer.load_state_dict(state)
    return trainer

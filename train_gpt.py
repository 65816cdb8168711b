"""Train the character-level GPT of notebooks/06_char_gpt.ipynb in one process or several (torchrun + DDP).

    python train_gpt.py --max-steps 2000 --batch-size 32                                     # one process
    torchrun --standalone --nproc_per_node 2 train_gpt.py --max-steps 2000 --batch-size 32   # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node 4 train_gpt.py --device cuda --batch-size 256 --amp   # 4 GPUs (NCCL)
    python train_gpt.py --resume                                        # continue the saved run (any process count)

--batch-size is the global batch: every process draws the same batch and trains on its own 1/N of it, so N processes
take the same steps as one (helpers/course/distributed.py). Only rank 0 prints and writes the training state, at every
evaluation and at the end; --resume continues it with the same losses as a run that never stopped. Ctrl-C or SIGTERM
stops at once and leaves the last checkpoint as it was. Bad options and data end with "error: ..." and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from helpers.course.checkpoints import first_line, load_checkpoint, model_checkpoint, save_checkpoint
from helpers.course.data import DataUnavailableError, sha256_of
from helpers.course.datasets import load_text, split_data
from helpers.course.distributed import (
    BACKENDS,
    check_backend,
    gather_objects,
    init,
    is_main,
    local_batch_size,
    main_decides,
    rank,
    rank_device,
    save_on_main,
    set_rng_state,
    shard_batch,
    teardown,
    with_global_value,
    world_size,
    wrap,
)
from helpers.course.distributed import rng_state as rank_rng_state
from helpers.course.trainer import Hooks, Trainer
from helpers.models import GPT, GPTConfig
from helpers.modern import ModernGPT, ModernGPTConfig
from helpers.tokenizers import CharTokenizer
from helpers.training import TrainConfig, lm_loss

ROOT = Path(__file__).resolve().parent
DEFAULT_STATE = ROOT / "artifacts" / "checkpoints" / "train_gpt_train_state.pt"  # *_train_state.pt is git-ignored
# --model NAME -> (model class, config class). A model takes its config, maps (idx, targets) to (logits, loss) like
# GPT.forward, and has checkpoint(tokenizer, meta) for --export; the config accepts the MODEL_OPTIONS below.
MODELS = {
    "gpt": (GPT, GPTConfig),  # notebook 06's GPT
    "modern": (ModernGPT, ModernGPTConfig.modern),  # RMSNorm, SwiGLU, RoPE, QK-norm, no biases (helpers/modern.py)
}
MODEL_OPTIONS = ("n_layers", "d_model", "n_heads", "block_size", "dropout")  # options named as the config's fields
TRAIN_OPTIONS = (
    "batch_size",
    "lr",
    "warmup_steps",
    "max_steps",
    "time_limit",
    "seed",
    "eval_interval",
    "eval_windows",
    "amp",
)


def _checked(convert, ok, what: str):
    """An argparse type: convert(text), accepted when ok(value), else "must be <what>"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


POSITIVE = _checked(int, lambda v: v >= 1, "an integer >= 1")
COUNT = _checked(int, lambda v: v >= 0, "an integer >= 0")
SECONDS = _checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options; model and training options default to None (the config classes' defaults)."""
    p = argparse.ArgumentParser(description="Train the course's character-level GPT on one or several processes.")
    m = p.add_argument_group("model (default: GPTConfig's values)")
    m.add_argument("--model", choices=sorted(MODELS), default=None, help="model class (default gpt)")
    m.add_argument("--n-layers", type=POSITIVE, default=None, help="transformer blocks")
    m.add_argument("--d-model", type=POSITIVE, default=None, help="width of every token vector")
    m.add_argument("--n-heads", type=POSITIVE, default=None, help="attention heads (must divide --d-model)")
    m.add_argument("--block-size", type=POSITIVE, default=None, help="context length in characters")
    m.add_argument(
        "--dropout", type=_checked(float, lambda v: 0 <= v < 1, "in [0, 1)"), default=None, help="dropout rate"
    )
    t = p.add_argument_group("training (default: TrainConfig's values)")
    t.add_argument("--batch-size", type=POSITIVE, default=None, help="GLOBAL batch: a multiple of the process count")
    t.add_argument("--lr", type=_checked(float, lambda v: math.isfinite(v) and v > 0, "a number > 0"), default=None)
    t.add_argument(
        "--warmup-steps",
        type=COUNT,
        default=None,
        help=f"linear warm-up (default: min({TrainConfig.warmup_steps}, max steps))",
    )
    t.add_argument("--max-steps", type=POSITIVE, default=None, help="optimiser steps; the cosine schedule ends here")
    t.add_argument("--time-limit", type=SECONDS, default=None, help="stop after this many seconds of training")
    t.add_argument("--seed", type=int, default=None, help="seeds the weights, the batches and dropout")
    t.add_argument("--eval-interval", type=POSITIVE, default=None, help="validate and save every this many steps")
    t.add_argument("--eval-windows", type=POSITIVE, default=None, help="validation windows (default: the whole split)")
    t.add_argument("--amp", action="store_true", default=None, help="bfloat16 autocast (CPU and recent GPUs)")
    r = p.add_argument_group("run")
    r.add_argument("--data", type=Path, default=None, help="a UTF-8 text file (default: Tiny Shakespeare)")
    r.add_argument("--checkpoint", type=Path, default=DEFAULT_STATE, help="training state to write (and --resume)")
    r.add_argument("--resume", action="store_true", help="continue the run saved in --checkpoint, with its settings")
    r.add_argument("--overwrite", action="store_true", help="start afresh even if --checkpoint exists")
    r.add_argument("--steps", type=POSITIVE, default=None, help="train at most this many steps now, then save")
    r.add_argument("--export", type=Path, default=None, help="also write the final model here for sample.py")
    r.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N (one process), mps (one process) or auto (default: $COURSE_DEVICE, else the best)",
    )
    r.add_argument("--backend", choices=BACKENDS, default=None, help="default: nccl on CUDA, else gloo")
    return p


class UsageError(ValueError):
    """Bad options or data: printed as one "error: ..." line, exit status 2."""


def read_text(path: Path | None) -> str:
    """The training text: the UTF-8 file at path, or Tiny Shakespeare (data/ or a verified download)."""
    if path is None:
        try:
            return load_text()
        except (DataUnavailableError, ValueError) as err:
            raise UsageError(str(err)) from None
    if not path.is_file():
        raise UsageError(f"--data {path}: {'a directory, not a file' if path.is_dir() else 'no such file'}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--data {path} is not UTF-8 text") from None
    except OSError as err:
        raise UsageError(f"--data {path} cannot be read: {err.strerror or err}") from None


def load_saved(path: Path) -> dict:
    """A training state that train_gpt.py wrote (a CheckpointError or UsageError for anything else)."""
    state = load_checkpoint(path, kind="training-state")
    if state["meta"].get("extra", {}).get("model") not in MODELS:
        raise UsageError(f"{path} is a training state, but not one that train_gpt.py wrote (it names no --model)")
    return state


def settings(args: argparse.Namespace, saved: dict | None, vocab_size: int) -> tuple[str, object, TrainConfig]:
    """(model name, model config, TrainConfig): from the options, or from the saved state when resuming."""
    given = [name for name in ("model", *MODEL_OPTIONS, *TRAIN_OPTIONS) if getattr(args, name) is not None]
    if saved is not None:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise UsageError(f"--resume continues with the settings saved in {args.checkpoint}; leave out {flags}")
        extra = saved["meta"]["extra"]
        config_cls = MODELS[extra["model"]][1]
        return extra["model"], config_cls(**extra["model_config"]), TrainConfig(**saved["config"])
    name = args.model or "gpt"
    model_options = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None}
    train_options = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    max_steps = train_options.get("max_steps", TrainConfig.max_steps)
    train_options.setdefault("warmup_steps", min(TrainConfig.warmup_steps, max_steps))
    try:
        return name, MODELS[name][1](vocab_size=vocab_size, **model_options), TrainConfig(**train_options)
    except ValueError as err:
        raise UsageError(str(err)) from None


@dataclass
class Job:
    """Everything a run needs, checked before any process group starts."""

    model_name: str
    model_cfg: object  # the model's config (GPTConfig for "gpt")
    cfg: TrainConfig  # batch_size is the global batch
    tokenizer: CharTokenizer
    train: torch.Tensor  # (N_train,) character ids
    val: torch.Tensor  # (N_val,)
    data: str | None  # the --data path, None for Tiny Shakespeare
    data_sha256: str
    saved: dict | None  # the training state to resume


def prepare(args: argparse.Namespace) -> Job:
    """Check options, checkpoint, data and batch split; a ValueError (UsageError, CheckpointError) names the problem."""
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other")
    if args.checkpoint.is_dir():
        raise UsageError(f"--checkpoint {args.checkpoint} is a directory; name a file")
    if args.export is not None and (args.export.is_dir() or not args.export.parent.is_dir()):
        problem = (
            "a directory; name a file"
            if args.export.is_dir()
            else f"in a folder that does not exist ({args.export.parent})"
        )
        raise UsageError(f"--export {args.export} is {problem}")  # checked now, not after the training
    saved = load_saved(args.checkpoint) if args.resume else None
    if saved is None and args.checkpoint.exists() and not args.overwrite:
        raise UsageError(f"{args.checkpoint} exists: pass --resume to continue that run or --overwrite to replace it")
    extra = saved["meta"]["extra"] if saved else {}
    data = args.data if args.data is not None or not extra.get("data") else Path(extra["data"])
    text = read_text(data)
    sha = sha256_of(text.encode("utf-8"))
    source = str(data or "Tiny Shakespeare")
    if not text:
        raise UsageError(f"{source} is empty")
    if saved and sha != extra["data_sha256"]:
        raise UsageError(f"{source} is not the text that the saved run trained on (pass its --data)")
    tokenizer = CharTokenizer.from_text(text)
    name, model_cfg, cfg = settings(args, saved, tokenizer.vocab_size)
    train, val = split_data(torch.tensor(tokenizer.encode(text), dtype=torch.long))
    for split, ids in (("training", train), ("validation", val)):
        if len(ids) <= model_cfg.block_size:
            raise UsageError(
                f"{source}: the {split} split has {len(ids)} characters, too few for block size "
                f"{model_cfg.block_size}; use a longer text or a smaller --block-size"
            )
    local_batch_size(cfg.batch_size)  # the global batch must split evenly over the processes
    return Job(name, model_cfg, cfg, tokenizer, train, val, None if data is None else str(data), sha, saved)


class StateFile:
    """The training-state checkpoint: every rank calls save() together, rank 0 writes; it remembers the step saved."""

    def __init__(self, path: Path, step: int | None = None):
        self.path, self.step = path, step

    def save(self, trainer: Trainer) -> None:
        """Collect every rank's random-number state, then write the Trainer's state on rank 0 (atomically)."""
        trainer.extra["rng_per_rank"] = gather_objects(rank_rng_state(trainer.device))
        trainer.extra["world_size"] = world_size()
        save_on_main(trainer.state_dict(), self.path)
        self.step = trainer.step

    def kept(self) -> str:
        """What the file holds now, for the message of a run that stops early."""
        return (
            f"{self.path} keeps step {self.step} (--resume continues it)"
            if self.step is not None
            else "this run saved nothing"
        )


def _loss_of_global_batch(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """lm_loss of this rank's slice, carrying the value of the whole global batch (helpers.course.distributed)."""
    return with_global_value(lm_loss(model, batch))


def fit(trainer: Trainer, step_model: nn.Module, state: StateFile, steps: int | None) -> None:
    """Train to max_steps (or `steps` more, or the time limit) with Trainer.run; validate on rank 0, save on schedule.

    step_model is the Trainer's model, inside DDP when there are several processes. Every rank runs the same steps
    and takes the same decisions (the loss comes from all ranks, the time limit from rank 0), so the collectives of
    a step, the saves and the stop line up.
    """
    hooks = Hooks(
        step_model=step_model,
        loss_fn=_loss_of_global_batch,
        batch=shard_batch,  # the same global batch (B, T) on every rank -> (B/N, T)
        decide=main_decides,
        validates=is_main(),
        save=state.save,
    )
    trainer.run(steps, hooks=hooks)


def start_trainer(job: Job, device: torch.device) -> Trainer:
    """Build the model and a Trainer around it (the course's AdamW, schedule and batches), fresh or resumed."""
    model_cls, cfg = MODELS[job.model_name][0], job.cfg
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = model_cls(job.model_cfg).to(device)
    extra = {
        "model": job.model_name,
        "model_config": asdict(job.model_cfg),
        "tokenizer": job.tokenizer.to_dict(),
        "data": job.data,
        "data_sha256": job.data_sha256,
    }
    trainer = Trainer(model, job.train, job.val, cfg, job.model_cfg.block_size, extra)
    torch.manual_seed(cfg.seed + rank())  # dropout: its own stream on each rank (rank 0's is the Trainer's)
    if job.saved is not None:
        trainer.load_state_dict(job.saved)
        states = trainer.extra.get("rng_per_rank", [])
        if rank() < len(states):
            set_rng_state(states[rank()], device)
    return trainer


def describe(job: Job, trainer: Trainer, device: torch.device, backend: str, path: Path) -> str:
    """The run's first lines: what is resumed, the model, the processes and how the global batch is split."""
    n, cfg = world_size(), job.cfg
    n_params = sum(p.numel() for p in trainer.model.parameters())  # a tied weight once
    lines = []
    if job.saved is not None:
        before = job.saved["meta"]["extra"].get("world_size", 1)
        masks = ", other dropout masks" if getattr(job.model_cfg, "dropout", 0) > 0 else ""
        changed = f" (written by {before} process(es): the same batches and gradients{masks})"
        lines.append(f"resuming {path} at step {trainer.step}{changed if before != n else ''}")
    lines.append(
        f"{job.model_name}: {n_params / 1e6:.2f}M parameters | {n} process(es) on {device.type}"
        f"{f', {backend}' if dist.is_initialized() else ''} | global batch {cfg.batch_size} = {n} x "
        f"{cfg.batch_size // n} | steps {trainer.step}..{cfg.max_steps}"
    )
    return "\n".join(lines)


def error(message: str, every_rank: bool = False) -> int:
    """Print a one-line error on stderr (on rank 0 only, unless it is rank-specific) and return exit status 2."""
    if is_main() or every_rank:
        print(f"error: {message}", file=sys.stderr)
    return 2


_signal: str | None = None  # the signal that stopped the run


def _interrupt(signum, frame):
    """Ctrl-C (SIGINT) and SIGTERM (what torchrun and job schedulers send): stop with a KeyboardInterrupt."""
    global _signal
    _signal = signal.Signals(signum).name
    raise KeyboardInterrupt(_signal)


def main(argv=None) -> int:
    """Parse the options, then train (see run_training); Ctrl-C and SIGTERM end as "interrupted" (exit 130, 143)."""
    global _signal
    _signal = None
    silent = rank() != 0  # every rank parses the same options: only rank 0 reports
    with (
        contextlib.redirect_stdout(io.StringIO()) if silent else contextlib.nullcontext(),
        contextlib.redirect_stderr(io.StringIO()) if silent else contextlib.nullcontext(),
    ):
        args = build_parser().parse_args(argv)  # bad values exit with status 2
    state = StateFile(args.checkpoint)
    handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_training(args, state)
    except (KeyboardInterrupt, RuntimeError) as err:
        if isinstance(err, RuntimeError) and _signal is None:
            if not (dist.is_initialized() and world_size() > 1):
                raise  # a real failure, not a collective that an interruption or another process broke
            # another rank died (its own error is above): a collective failed here; say so in one line
            print(
                f"error: another process of this run stopped ({first_line(err)[:160]}); {state.kept()}", file=sys.stderr
            )
            return 1
        if is_main():
            print(f"interrupted ({_signal or 'SIGINT'}): {state.kept()}", file=sys.stderr)
        return 143 if _signal == "SIGTERM" else 130
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        teardown()


def run_training(args: argparse.Namespace, state: StateFile) -> int:
    """Check everything, join the process group, train, save (and export); return the exit status."""
    try:
        job = prepare(args)
    except ValueError as err:  # UsageError, CheckpointError, an uneven batch split
        return error(str(err))
    try:
        device = rank_device(args.device)
        backend = check_backend(device, args.backend)
    except ValueError as err:  # may differ between ranks (a missing GPU): each rank reports its own
        return error(str(err), every_rank=True)
    say = print if is_main() else (lambda *a, **k: None)
    state.step = job.saved["meta"]["step"] if job.saved else None
    init(device, backend)
    trainer = start_trainer(job, device)
    say(describe(job, trainer, device, backend, args.checkpoint))
    try:
        fit(trainer, wrap(trainer.model), state, args.steps)
    except FloatingPointError as err:
        say(f"error: {err}; {state.kept()}", file=sys.stderr)
        return 1
    say(f"{args.checkpoint} holds step {state.step} of {job.cfg.max_steps} ({trainer.train_seconds:.1f} s of training)")
    if args.export is not None and is_main():
        meta = {"train_config": asdict(job.cfg), "log": trainer.log, "processes": world_size()}
        save_checkpoint(model_checkpoint(trainer.model, job.tokenizer, meta), args.export)
        say(f"wrote the model to {args.export} (python sample.py --checkpoint {args.export})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One checkpoint layout for every model: atomic save, safe load, 16-bit weights (introduced in 06_char_gpt).

A checkpoint is a dict with five keys, whatever the model:
    {"kind": "char-gpt" | "translation" | "training-state",
     "model": the weights (a state_dict), "config": the model's (or the run's) settings as a plain dict,
     "tokenizer": what turns text into ids and back (a plain dict), "meta": everything else (logs, samples, scores)}
It holds tensors and plain Python values only, so torch.load(..., weights_only=True) reads it. Finished models keep
their weights in float16 (half the bytes; loading turns them back into float32); a training state keeps float32.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from helpers.course.utils import atomic_write_bytes
from helpers.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from helpers.modern import ModernGPT, ModernGPTConfig
from helpers.tokenizers import CharTokenizer

LAYOUT = ("kind", "model", "config", "tokenizer", "meta")
CHECKPOINT_KINDS = {
    "char-gpt": "a char-GPT checkpoint (from notebook 06 or 11, or train_gpt.py --export)",
    "translation": "a translation checkpoint (from notebook 08)",
    "training-state": "a training-state checkpoint (Trainer.save, for resuming training)",
}
_CHECKPOINT_USE = {
    "char-gpt": "sample.py reads it",
    "translation": "translate.py reads it",
    "training-state": "resume_trainer reads it",
}
_CHECKPOINT_SOURCE = {
    "char-gpt": "run notebooks/06_char_gpt.ipynb in full mode to create it (python run_all.py --only 06)",
    "translation": "run notebooks/08_translation.ipynb in full mode to create it (python run_all.py --only 08)",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path (also a FileNotFoundError)."""


def make_checkpoint(
    kind: str, model: dict, config: dict, tokenizer: dict | None = None, meta: dict | None = None
) -> dict:
    """Put the five parts of a checkpoint together (see the module docstring)."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {tuple(CHECKPOINT_KINDS)}, got {kind!r}")
    return {
        "kind": kind,
        "model": model,
        "config": dict(config),
        "tokenizer": dict(tokenizer or {}),
        "meta": dict(meta or {}),
    }


def compact_state(model: nn.Module, skip: tuple[str, ...] = ()) -> dict:
    """The model's weights on the CPU, floating-point ones in float16, without the names in `skip` (tied copies)."""
    state = {}
    for name, value in model.state_dict().items():
        if name in skip:
            continue
        value = value.detach().to("cpu")
        if value.is_floating_point():
            half = value.to(torch.float16)
            if not torch.isfinite(half).all() and torch.isfinite(value).all():
                raise ValueError(f"{name} has values beyond float16's range (65504); it cannot be stored compactly")
            value = half
        state[name] = value
    return state


def full_precision(state: dict) -> dict:
    """Compact weights back as float32 (integer buffers are left as they are)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _serialize(obj: dict) -> bytes:
    """The bytes torch.save writes for obj (the same object always gives the same bytes)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(obj: dict, path: Path | str) -> Path:
    """torch.save a dict atomically (the old file survives until the new one is complete).

    A file that already holds exactly these bytes is left alone, so saving an unchanged model changes nothing.
    """
    path, data = Path(path), _serialize(obj)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    return atomic_write_bytes(path, data)


def checkpoint_kind(ckpt) -> str | None:
    """Which course checkpoint a loaded object is: "char-gpt", "translation", "training-state", or None."""
    if isinstance(ckpt, dict) and set(LAYOUT) <= set(ckpt) and ckpt["kind"] in CHECKPOINT_KINDS:
        return ckpt["kind"]
    return None


def _torch_load(path: Path, map_location) -> object:
    """torch.load with weights_only=True; every failure becomes a CheckpointError naming the file."""
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
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, KeyError, ... on bad files
        # Never pass torch's own message on: it advises retrying with weights_only=False, which runs arbitrary code.
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"{path} was refused by the safe loader: it holds a Python object ({refused.group(1)}) "
                f"that is not a tensor or plain value, so the course did not write it; "
                f"it is not loaded"
            ) from None
        if isinstance(err, pickle.UnpicklingError) and head == b"PK\x03\x04":
            raise CheckpointError(
                f"{path} was refused by the safe loader: it is damaged or holds more than tensors "
                f"and plain values; it is not loaded"
            ) from None
        if head == b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(
                f"{path} is truncated or damaged: not a complete PyTorch checkpoint "
                f"({size} bytes; save or copy it again)"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (not a file written by torch.save)") from None


def load_checkpoint(path: Path | str, map_location="cpu", kind: str | None = None) -> dict:
    """Load a checkpoint safely: torch.load with weights_only=True (tensors and plain Python values only).

    Every problem is a CheckpointError (a ValueError) naming the file: missing (CheckpointNotFoundError, also a
    FileNotFoundError), a directory, unreadable, empty, truncated or damaged, not a PyTorch checkpoint, refused by
    the safe loader, not a dictionary, or - when `kind` ("char-gpt", "translation", "training-state") is given -
    not a course checkpoint of that kind, which the message names.
    """
    if kind is not None and kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {tuple(CHECKPOINT_KINDS)} or None, got {kind!r}")
    path = Path(path)
    if not path.exists():
        hint = f"; {_CHECKPOINT_SOURCE[kind]}" if kind in _CHECKPOINT_SOURCE else ""
        raise CheckpointNotFoundError(f"no checkpoint at {path}: the file does not exist{hint}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dictionary")
    found = checkpoint_kind(ckpt)
    if kind is not None and found != kind:
        if found is not None:
            raise CheckpointError(
                f"{path} is {CHECKPOINT_KINDS[found]}, not {CHECKPOINT_KINDS[kind]}; {_CHECKPOINT_USE[found]}"
            )
        keys = ", ".join(repr(k) for k in list(ckpt)[:8]) or "none"
        raise CheckpointError(
            f"{path} is not {CHECKPOINT_KINDS[kind]}: it is a dictionary with keys {keys} "
            f"(a course checkpoint has the keys {', '.join(LAYOUT)})"
        )
    return ckpt


def first_line(err: Exception) -> str:
    """A short form of an exception for a one-line message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def average_states(states: list[dict]) -> dict:
    """Element-wise mean of several state_dicts of the same model (checkpoint averaging)."""
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(states[0][name].dtype) for name in states[0]
    }


def state_snapshot(model: nn.Module) -> dict:
    """A detached copy of a model's parameters and buffers."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- models in and out of checkpoints

# Which model a checkpoint holds: its kind, its class and config class, the embedding a tied LM head shares, and what
# it is called in errors. A "char-gpt" checkpoint holds notebook 06's GPT or notebook 11's ModernGPT: the first row
# whose config class has every field of the saved config is the one (GPT's config has no "norm" switch).
MODELS = (
    ("char-gpt", GPT, GPTConfig, "tok_emb", "a usable char-GPT"),
    ("char-gpt", ModernGPT, ModernGPTConfig, "tok_emb", "a usable modern char-GPT"),
    ("translation", Seq2Seq, Seq2SeqConfig, "tgt_embed", "a usable translation model"),
)


def _row_of_class(model_cls: type) -> tuple:
    """The MODELS row of a model class (exactly that class)."""
    for row in MODELS:
        if row[1] is model_cls:
            return row
    raise ValueError(f"{model_cls.__name__} is not a model the course checkpoints ({[r[1].__name__ for r in MODELS]})")


def _row_of_checkpoint(ckpt: dict) -> tuple:
    """The MODELS row whose kind is the checkpoint's and whose config class takes every saved setting."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    rows = [r for r in MODELS if r[0] == ckpt.get("kind")]
    for row in rows:
        if set(config) <= {f.name for f in dataclasses.fields(row[2])}:
            return row
    return rows[0] if rows else _row_of_class(GPT)


def model_checkpoint(model: nn.Module, tokenizer, meta: dict | None = None) -> dict:
    """A checkpoint of a finished model: float16 weights (a tied head stored once), config, tokenizer and `meta`.

    tokenizer: an object with to_dict() (the char-GPT's CharTokenizer) or the plain dict of the translator's two.
    """
    kind, _, _, tied_to, _ = _row_of_class(type(model))
    tied = model.lm_head.weight is getattr(model, tied_to).weight
    state = compact_state(model, skip=("lm_head.weight",) if tied else ())
    tok = tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else tokenizer
    return make_checkpoint(kind, state, dataclasses.asdict(model.cfg), tok, meta)


def model_from_checkpoint(ckpt: dict, source: Path | str | None = None, model_cls: type | None = None) -> nn.Module:
    """Rebuild a checkpoint's model in float32, of the class MODELS gives (or `model_cls`: ModernGPT reads GPT's).

    Content that does not make the model (missing keys, a bad config, weights of the wrong shape) raises a
    CheckpointError naming `source` (the file it came from) and what it should have held.
    """
    _, cls, config_cls, tied_to, what = _row_of_checkpoint(ckpt) if model_cls is None else _row_of_class(model_cls)
    try:
        model = cls(config_cls(**ckpt["config"]))
        state = full_precision(ckpt["model"])
        if model.lm_head.weight is getattr(model, tied_to).weight:
            state.setdefault("lm_head.weight", state[f"{tied_to}.weight"])
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{source or 'the checkpoint'} does not hold {what} ({first_line(err)})") from None
    return model


def load_char_gpt(path: Path | str, device: torch.device | str | None = None):
    """Load a char-GPT checkpoint (notebook 06's GPT or notebook 11's ModernGPT): (model in eval mode, tokenizer).

    Every problem with the file, including a checkpoint of another kind, is a CheckpointError naming it.
    """
    ckpt = load_checkpoint(path, kind="char-gpt")
    model = model_from_checkpoint(ckpt, source=path)
    try:
        tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} does not hold a usable character tokenizer ({first_line(err)})") from None
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise CheckpointError(
            f"{path} is inconsistent: its tokenizer has {tokenizer.vocab_size} characters, "
            f"its model {model.cfg.vocab_size}"
        )
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer

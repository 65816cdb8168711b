"""Tiny Shakespeare: loading, a character tokenizer, the train/validation split and batches (introduced in 06_char_gpt)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers.data import fetch


def load_text(data_dir: Path | str | None = None, timeout: float = 30.0) -> str:
    """Return the Tiny Shakespeare text: data/tinyshakespeare.txt when present, else a verified download."""
    path = fetch("tinyshakespeare", data_dir=Path(data_dir) if data_dir is not None else None, timeout=timeout)
    return path.read_text(encoding="utf-8")


class CharTokenizer:
    """Map each distinct character to an integer id and back; unknown characters are an error, never dropped."""

    def __init__(self, chars: list[str] | str):
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        if any(len(c) != 1 for c in chars):
            raise ValueError("every vocabulary entry must be a single character")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Build the vocabulary from the sorted distinct characters of a text."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Turn a string into a list of ids; raise ValueError naming any character outside the vocabulary."""
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {unknown!r} (the vocabulary has {self.vocab_size} "
                             f"characters, built from the training text)")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        """Turn a list (or 1-D tensor) of ids back into a string."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids outside 0..{self.vocab_size - 1}: {bad[:5]}")
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        """A plain dict for checkpoints (loadable with weights_only=True)."""
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        """Rebuild a tokenizer saved with to_dict."""
        return cls(list(d["chars"]))


def split_data(ids: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D id tensor into the first train_fraction (training) and the rest (validation)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = int(train_fraction * len(ids))
    return ids[:n], ids[n:]


@dataclass
class CharDataset:
    """The text, its tokenizer and the two id tensors of the 90/10 split."""

    text: str
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor


def load_dataset(data_dir: Path | str | None = None, train_fraction: float = 0.9) -> CharDataset:
    """Load Tiny Shakespeare, build the character vocabulary and split the ids 90/10 as nanoGPT does."""
    text = load_text(data_dir)
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train, val = split_data(ids, train_fraction)
    return CharDataset(text, tokenizer, train, val)


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample batch_size random windows: inputs x (B, T) and targets y (B, T) shifted by one character."""
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} ids, too few for block_size={block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, 1) + (T,) -> (B, T)
    y = data[starts[:, None] + offsets + 1]  # the next character at every position
    return x, y


def eval_windows(data: torch.Tensor, block_size: int, max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut data into non-overlapping windows (N, T) of inputs and targets; evenly spaced subset if max_windows."""
    n = (len(data) - 1) // block_size
    if n < 1:
        raise ValueError(f"data has {len(data)} ids, too few for block_size={block_size}")
    idx = torch.arange(n)
    if max_windows is not None and max_windows < n:
        idx = torch.linspace(0, n - 1, max_windows).round().long()
    starts = idx * block_size  # (N,)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]  # (N, T)
    y = data[starts[:, None] + offsets + 1]
    return x, y


def word_set(text: str) -> set[str]:
    """The distinct lower-case words (letters and apostrophes) of a text."""
    return set(re.findall(r"[a-z']+", text.lower()))


def known_word_share(text: str, known: set[str]) -> float:
    """Share of the words in text that appear in `known` (for example the training text's words)."""
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in known for w in words) / len(words) if words else 0.0

"""Positional encodings: sinusoidal and learned (introduced in 04_positional_encoding)."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """Return the (max_len, d_model) table PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal encoding needs an even d_model, got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table.float()


def _check_length(x: torch.Tensor, offset: int, max_len: int) -> int:
    """Return T from x (B, T, C) after checking that positions offset..offset+T-1 exist."""
    if x.dim() != 3:
        raise ValueError(f"expected x of shape (B, T, d_model), got {tuple(x.shape)}")
    t = x.shape[1]
    if offset + t > max_len:
        raise ValueError(f"positions {offset}..{offset + t - 1} exceed max_len={max_len}")
    return t


class SinusoidalPositionalEncoding(nn.Module):
    """Add fixed sinusoidal position vectors to token embeddings."""

    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, T, C) -> x + PE[offset : offset + T]."""
        t = _check_length(x, offset, self.max_len)
        return x + self.table[offset : offset + t].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Add a trained vector per position (as in GPT)."""

    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, T, C) -> x + E[offset : offset + T]."""
        t = _check_length(x, offset, self.max_len)
        return x + self.embedding(torch.arange(offset, offset + t, device=x.device))


POSITIONAL_ENCODINGS = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEmbedding}


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module:
    """Build a positional encoding by name: one of POSITIONAL_ENCODINGS."""
    if kind not in POSITIONAL_ENCODINGS:
        raise ValueError(f"unknown positional encoding {kind!r}; choose from {sorted(POSITIONAL_ENCODINGS)}")
    return POSITIONAL_ENCODINGS[kind](d_model, max_len)

"""Positional encodings: sinusoidal, learned and rotary (introduced in 04_positional_encoding).

Sinusoidal and learned encodings are added to the token embeddings (make_positional builds them by name).
Rotary embeddings (RoPE, Su et al. 2021) are not: they rotate the queries and keys inside attention
(MultiHeadAttention(..., rope=True), TransformerConfig(rope=True)).
"""

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
ATTENTION_POSITIONAL_ENCODINGS = ("rope",)  # applied inside attention, never added to the embeddings


def make_positional(kind: str, d_model: int, max_len: int) -> nn.Module:
    """Build a positional encoding by name: one of POSITIONAL_ENCODINGS."""
    if kind in ATTENTION_POSITIONAL_ENCODINGS:
        raise ValueError(
            f"{kind!r} is not added to the embeddings: rotary embeddings rotate queries and keys inside attention; "
            f"build the model with TransformerConfig(rope=True) instead"
        )
    if kind not in POSITIONAL_ENCODINGS:
        raise ValueError(f"unknown positional encoding {kind!r}; choose from {sorted(POSITIONAL_ENCODINGS)}")
    return POSITIONAL_ENCODINGS[kind](d_model, max_len)


# ---------------------------------------------------------------- rotary position embedding (RoPE)
#
# Convention: interleaved pairs, as in the RoFormer paper. Dimensions (2i, 2i+1) of a (..., T, D) vector at
# position p form the point (x[2i], x[2i+1]) of a plane, rotated by the angle p * theta_i, theta_i = base^(-2i/D):
#   out[2i]   = x[2i] cos(p theta_i) - x[2i+1] sin(p theta_i)
#   out[2i+1] = x[2i] sin(p theta_i) + x[2i+1] cos(p theta_i)
# Seen as complex numbers z_i = x[2i] + j x[2i+1], this is z_i * exp(j p theta_i), so the real part of the
# rotated q_m . conj(rotated k_n) sums z_i conj(w_i) exp(j (m - n) theta_i): a score that depends on m - n only.


def _check_head_dim(d_head: int) -> None:
    """Raise a ValueError naming d_head unless it is a positive even number (rotary rotates pairs of dimensions)."""
    if d_head < 2 or d_head % 2 != 0:
        raise ValueError(f"rotary embedding needs an even head dimension D >= 2 (it rotates pairs), got D={d_head}")


def rotary_frequencies(d_head: int, base: float = 10000.0) -> torch.Tensor:
    """Return the (D/2,) float64 angular frequencies theta_i = base^(-2i/D), i = 0..D/2-1."""
    _check_head_dim(d_head)
    return base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)  # (D/2,)


def rotary_table(
    length: int, d_head: int, base: float = 10000.0, offset: int = 0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float64 (cos, sin) tables of shape (length, D/2) for positions offset..offset+length-1."""
    if offset < 0 or length < 0:
        raise ValueError(f"rotary positions need offset >= 0 and length >= 0, got offset={offset}, length={length}")
    pos = torch.arange(offset, offset + length, dtype=torch.float64, device=device)  # (T,)
    angles = pos[:, None] * rotary_frequencies(d_head, base).to(pos.device)  # (T, 1) * (D/2,) -> (T, D/2)
    return torch.cos(angles), torch.sin(angles)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype (float32, float16, bfloat16) is rotated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) of x (..., T, D) by the angles whose cos, sin are (T, D/2)."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., T, D/2) each
    out = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)  # (..., T, D/2, 2)
    return out.flatten(-2)  # (..., T, D): pairs back in their interleaved places


def _check_rotary_input(x: torch.Tensor, offset: int) -> None:
    """Raise a ValueError unless x is (..., T, D) with an even D and offset is a non-negative position."""
    if x.dim() < 2:
        raise ValueError(f"rotary embedding expects x of shape (B, H, T, D), got {tuple(x.shape)}")
    _check_head_dim(x.shape[-1])
    if offset < 0:
        raise ValueError(f"rotary offset must be >= 0, got {offset}")


def apply_rotary(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate x (B, H, T, D) by positions offset..offset+T-1 (pairs (2i, 2i+1)); return x's dtype."""
    _check_rotary_input(x, offset)
    cos, sin = rotary_table(x.shape[-2], x.shape[-1], base, offset, device=x.device)  # (T, D/2) each
    dtype = _compute_dtype(x.dtype)
    return rotate_pairs(x.to(dtype), cos.to(dtype), sin.to(dtype)).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding with a cached (cos, sin) table that grows on demand.

    The table lives in non-persistent buffers: it follows the module across devices but never enters the
    state_dict, so a model's checkpoint keys are the same with and without rotary embeddings.
    """

    def __init__(self, d_head: int, base: float = 10000.0, max_len: int = 0):
        super().__init__()
        _check_head_dim(d_head)
        self.d_head, self.base = d_head, base
        self.register_buffer("cos", torch.empty(0, d_head // 2), persistent=False)  # (cached_len, D/2)
        self.register_buffer("sin", torch.empty(0, d_head // 2), persistent=False)
        # The dtype the table was computed in: model.double() casts the buffers without adding precision.
        self._computed_in = self.cos.dtype
        if max_len > 0:
            self._table(max_len, self.cos.device, torch.float32)

    def _table(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin) covering positions 0..length-1, recomputing (in float64) when too short or mismatched."""
        cached = self.cos.shape[0]
        stale = self.cos.device != device or self.cos.dtype != dtype or self._computed_in != dtype
        if cached < length or stale:
            # Grow at least twofold, so that decoding one token at a time recomputes only about log2(T) times.
            new_len = max(length, 2 * cached) if cached < length else cached
            cos, sin = rotary_table(new_len, self.d_head, self.base, device=device)
            self.cos, self.sin, self._computed_in = cos.to(dtype), sin.to(dtype), dtype
        return self.cos, self.sin

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, H, T, D) -> x rotated by positions offset..offset+T-1, in x's dtype."""
        _check_rotary_input(x, offset)
        if x.shape[-1] != self.d_head:
            raise ValueError(f"expected a head dimension D={self.d_head}, got x of shape {tuple(x.shape)}")
        t, dtype = x.shape[-2], _compute_dtype(x.dtype)
        cos, sin = self._table(offset + t, x.device, dtype)
        return rotate_pairs(x.to(dtype), cos[offset : offset + t], sin[offset : offset + t]).to(x.dtype)

    def extra_repr(self) -> str:
        """Show D and base when the module is printed."""
        return f"d_head={self.d_head}, base={self.base}"

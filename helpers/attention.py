"""Scaled dot-product attention, masks and multi-head attention (introduced in 02_scaled_dot_product_attention).

Mask convention used everywhere in the course: a boolean mask is True where a query MAY attend to a key
(the same convention as torch.nn.functional.scaled_dot_product_attention, and the opposite of
nn.MultiheadAttention's key_padding_mask). A floating-point mask is added to the scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.positional import RotaryEmbedding


def check_p(p: float) -> None:
    """Raise a ValueError naming p unless it is a probability (a dropout rate)."""
    if not 0.0 <= p <= 1.0:  # also false for NaN
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def _check_mask(mask: torch.Tensor, scores_shape: torch.Size) -> None:
    """Raise a ValueError naming the shapes when a mask cannot broadcast to the scores."""
    try:
        broadcast = torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores of shape "
            f"{tuple(scores_shape)} (batch..., T_q, T_k)"
        )
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise ValueError(f"mask must be bool (True = attend) or floating point (added to scores), got {mask.dtype}")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise a ValueError naming the shapes when q, k and v do not fit together."""
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(
            f"q, k, v must have the same number of dimensions (>= 2), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share their last dimension d_k, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if q.shape[-1] == 0:
        raise ValueError(
            f"q and k need a last dimension d_k >= 1 (scores are divided by sqrt(d_k)), got q {tuple(q.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of keys T_k, got k {tuple(k.shape)} and v {tuple(v.shape)}"
        )
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"q, k, v must share their batch dimensions, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute softmax(q k^T / sqrt(d_k) + mask) v and return (output, attention weights).

    q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v); mask broadcastable to (..., T_q, T_k).
    A query whose keys are all masked gets zero weights and a zero output instead of NaN.
    """
    _check_qkv(q, k, v)
    check_p(dropout_p)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, d_k) @ (..., d_k, T_k) -> (..., T_q, T_k)
    dead = None  # queries with nothing to attend to, found from the (small) mask rather than the scores
    if mask is not None:
        _check_mask(mask, scores.shape)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
            dead = ~mask.any(dim=-1, keepdim=True)
        else:
            scores = scores + mask
            dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
        if not dead.any():
            dead = None  # the common case (causal or padding masks with a real token): nothing to repair
    if dead is None:
        attn_weights = torch.softmax(scores, dim=-1)
    else:  # softmax over a row of -inf would give NaN: give those rows zero weights instead
        attn_weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    dropped = F.dropout(attn_weights, dropout_p) if dropout_p > 0 else attn_weights
    return dropped @ v, attn_weights  # (..., T_q, T_k) @ (..., T_k, d_v) -> (..., T_q, d_v)


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Return a (T_q, T_k) boolean mask letting query i see keys up to its own position.

    When T_k > T_q (decoding with cached keys), the queries are the last T_q positions.
    """
    t_k = t_q if t_k is None else t_k
    if t_q < 1 or t_k < t_q:
        raise ValueError(f"causal_mask needs 1 <= T_q <= T_k, got T_q={t_q}, T_k={t_k}")
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def add_causal(mask: torch.Tensor | None, t_q: int, t_k: int, device=None) -> torch.Tensor:
    """Combine a bool or additive mask with a causal mask of shape (T_q, T_k)."""
    cm = causal_mask(t_q, t_k, device=device)
    if mask is None:
        return cm
    return mask & cm if mask.dtype == torch.bool else mask.masked_fill(~cm, float("-inf"))


def padding_mask(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Return a (B, 1, 1, T) boolean key mask, True for real tokens and False for padding."""
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
    return (tokens != pad_id)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention for self- and cross-attention, written from scratch.

    `use_sdpa=True` selects PyTorch's fused F.scaled_dot_product_attention for the inner product; the tests
    prove it equal to the from-scratch path. Attention weights always come from the from-scratch path.
    `rope=True` rotates queries and keys by their absolute positions (helpers.positional.RotaryEmbedding) after
    the heads are split, in self-attention only; its table is a non-persistent buffer, so the state_dict keys
    are the same with and without it.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        use_sdpa: bool = False,
        rope: bool = False,
    ):
        super().__init__()
        if d_model < 1 or n_heads < 1:
            raise ValueError(f"d_model and n_heads must be positive, got d_model={d_model}, n_heads={n_heads}")
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        check_p(dropout)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout, self.use_sdpa = dropout, use_sdpa
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.rope = rope
        self.rotary = RotaryEmbedding(self.d_head) if rope else None  # raises unless d_head is even

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, D) with C = H * D."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.d_head).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) -> (B, T, C)."""
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.d_model)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from x (B, T_q, C) to context (B, T_k, C), or to x itself when context is None.

        mask: bool or additive, broadcastable to (B, H, T_q, T_k); a (B, T_q, T_k) mask is applied to every head.
        causal: add a causal mask (aligned to the last positions when a cache holds earlier keys).
        cache: a dict that keeps keys and values between calls (see project).
        Returns the output (B, T_q, C) and, if need_weights, the per-head weights (B, H, T_q, T_k).
        """
        self._check_inputs(x, context)
        q, k, v = self.project(x, context, cache)  # (B, H, T_q, D), (B, H, T_k, D), (B, H, T_k, D)
        out, weights = self.attend(q, k, v, mask, causal, need_weights)  # (B, H, T_q, D)
        return self.out_proj(self.merge_heads(out)), weights  # (B, H, T_q, D) -> (B, T_q, C)

    def _check_inputs(self, x: torch.Tensor, context: torch.Tensor | None) -> None:
        """Raise a ValueError naming the shapes when x or context do not fit this module."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, d_model={self.d_model}), got {tuple(x.shape)}")
        if context is not None and (
            context.dim() != 3 or context.shape[-1] != self.d_model or context.shape[0] != x.shape[0]
        ):
            raise ValueError(
                f"context must have shape (B={x.shape[0]}, T_k, d_model={self.d_model}), got {tuple(context.shape)}"
            )
        if self.rope and context is not None:
            raise ValueError(
                "rope=True is for self-attention only: in cross-attention queries and keys come from different "
                "sequences, so their positions cannot be compared"
            )

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None, cache: dict | None = None):
        """Queries from x, keys and values from context (or x), split into heads: (B, H, T, D) each.

        With rope, the new queries and keys are rotated to positions offset.., offset = the number of keys already
        cached; cached keys are stored rotated, so cached decoding equals recomputing the whole sequence.
        """
        q = self.split_heads(self.q_proj(x))  # (B, T_q, C) -> (B, H, T_q, D)
        if context is not None and cache is not None and "k" in cache:
            return q, cache["k"], cache["v"]  # cross-attention: the encoder output does not change while decoding
        source = x if context is None else context
        k = self.split_heads(self.k_proj(source))  # (B, T_k, C) -> (B, H, T_k, D)
        v = self.split_heads(self.v_proj(source))
        if self.rotary is not None:  # rotate q and k (never v) by their absolute positions
            offset = cache["k"].shape[2] if cache is not None and "k" in cache else 0  # positions already cached
            q, k = self.rotary(q, offset), self.rotary(k, offset)
        if cache is not None:
            k, v = self.update_cache(cache, k, v, append=context is None)
        return q, k, v

    @staticmethod
    def update_cache(cache: dict, k: torch.Tensor, v: torch.Tensor, append: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep keys and values (B, H, T, D) in cache: self-attention appends new ones, cross-attention sets them."""
        if append and "k" in cache:
            k = torch.cat([cache["k"], k], dim=2)  # (B, H, T_cached + T_new, D)
            v = torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        return k, v

    def attend(self, q, k, v, mask=None, causal: bool = False, need_weights: bool = False):
        """softmax(q k^T / sqrt(D) + mask) v for every head: (B, H, T_q, D) and the weights (or None).

        The from-scratch scaled_dot_product_attention, or PyTorch's fused kernel when use_sdpa is set and no weights
        are asked for (tests/test_attention.py proves the two equal).
        """
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, T_q, T_k) -> (B, 1, T_q, T_k)
        dropout_p = self.dropout if self.training else 0.0
        if self.use_sdpa and not need_weights:
            return self._attend_fused(q, k, v, mask, causal, dropout_p), None
        if causal:
            mask = add_causal(mask, q.shape[2], k.shape[2], q.device)
        out, weights = scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p)
        return out, (weights if need_weights else None)

    def _attend_fused(self, q, k, v, mask, causal: bool, dropout_p: float) -> torch.Tensor:
        """F.scaled_dot_product_attention with the course's mask rules (fully masked queries output zeros)."""
        t_q, t_k = q.shape[2], k.shape[2]
        if mask is not None:
            _check_mask(mask, torch.Size((q.shape[0], self.n_heads, t_q, t_k)))
        fused_causal = causal and mask is None and t_q == t_k  # the kernel's own causal mask
        if causal and not fused_causal:
            mask = add_causal(mask, t_q, t_k, q.device)
        if mask is not None and mask.dtype == torch.bool:
            dead = ~mask.any(dim=-1, keepdim=True)
            if dead.any():
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | dead, dropout_p=dropout_p)
                return out.masked_fill(dead, 0.0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=fused_causal)

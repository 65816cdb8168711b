"""Training diagnostics: per-layer gradient norms and token similarity (introduced in 05_transformer_block)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def layer_grad_norms(layers: Iterable[nn.Module]) -> list[float]:
    """Return, for each module, the L2 norm of all its parameters' gradients taken together (0.0 if none)."""
    norms = []
    for layer in layers:
        squares = [p.grad.detach().double().pow(2).sum() for p in layer.parameters() if p.grad is not None]
        norms.append(float(torch.stack(squares).sum().sqrt()) if squares else 0.0)
    return norms


def mean_token_cosine(h: torch.Tensor) -> float:
    """Mean cosine similarity between the token vectors of each sequence in h (B, T, C); 1.0: all tokens equal."""
    if h.dim() != 3:
        raise ValueError(f"expected h of shape (B, T, C), got {tuple(h.shape)}")
    unit = nn.functional.normalize(h.detach().double(), dim=-1)
    return float((unit @ unit.transpose(1, 2)).mean())  # (B, T, C) @ (B, C, T) -> (B, T, T)

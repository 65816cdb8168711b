"""Dropout with a mask that is cheap to draw on a CPU (used by every block from 05_transformer_block on).

PyTorch's dropout draws one random number per element. On a CPU that costs more than the multiplication it
guards: for a (16, 128, 192) activation, drawing the mask takes several times as long as applying it. Here one
64-bit draw from PyTorch's global generator gives four 16-bit random integers, so the mask needs a quarter of the
draws. The price is that p is rounded to a multiple of 1/65536 (0.1 becomes 0.0999908...), and the outputs are
scaled by 1 / (1 - rounded p) so that their expected value is still the input. Other devices keep PyTorch's own
dropout, whose random numbers are drawn in parallel on the device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # a 16-bit random integer takes this many equally likely values


def check_p(p: float) -> None:
    """Raise a ValueError naming p unless it is a probability."""
    if not 0.0 <= p <= 1.0:  # also false for NaN
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def rounded_p(p: float) -> float:
    """The drop probability the CPU mask really uses: p rounded to the nearest multiple of 1/65536."""
    return round(p * _LEVELS) / _LEVELS


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean tensor of the given shape, each element True (kept) with probability 1 - rounded_p(p), independently."""
    check_p(p)
    n = math.prod(shape)
    # randint's range covers every int64 but one, so each of the four 16-bit lanes of a draw is uniform.
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:n].view(shape)  # signed, uniform over -32768..32767
    return lanes >= -(_LEVELS // 2) + round(p * _LEVELS)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p); the identity when not training."""
    check_p(p)
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    q = rounded_p(p)
    if q == 1.0:
        return x * 0.0
    return x * keep_mask(x.shape, p, x.device) * (1.0 / (1.0 - q))


class Dropout(nn.Module):
    """Module form of `dropout`: active in train() mode, the identity in eval() mode."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        check_p(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply dropout with this module's p when training."""
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

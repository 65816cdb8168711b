"""Opt-in speed-ups: bf16 autocast, flushing denormals, a cheaper CPU dropout mask (introduced in 06, 09_profiling).

The course's models are written plainly (nn.Dropout, float32). A training run switches these on by configuration
(TrainConfig.amp, .flush_denormal, .fast_dropout); the full char-GPT run of notebook 06 uses all three, and notebook 09
measures what each one buys.

- amp: matrix products in bfloat16 on CPU and CUDA (no loss scaling needed; helpers.training.autocast acts inside
  train_step); nothing on Apple MPS.
- flush_denormal: tiny floats (below about 1e-38) are treated as zero. x86 CPUs process them very slowly, and late
  in training optimiser statistics are full of them.
- fast dropout: PyTorch's dropout draws one random number per element, which on a CPU costs more than applying the
  mask. `fast_dropout` draws one 64-bit number for every four elements and gives each 16 of its bits, so p is rounded
  to a multiple of 1/65536 (0.1 becomes 0.0999908...) and the kept outputs are scaled by 1 / (1 - rounded p).
  Other devices keep PyTorch's dropout, whose random numbers are drawn in parallel on the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import check_p

# ---------------------------------------------------------------- denormal floats


def flush_denormal(enabled: bool = True) -> bool:
    """Switch flushing of denormal floats to zero on or off for the whole process; True if the CPU supports it."""
    return torch.set_flush_denormal(enabled)


# ---------------------------------------------------------------- a cheaper dropout mask on CPU


_LEVELS = 1 << 16  # a 16-bit random integer takes this many equally likely values


def rounded_p(p: float) -> float:
    """The drop probability the CPU mask really uses: p rounded to the nearest multiple of 1/65536."""
    return round(p * _LEVELS) / _LEVELS


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean tensor of the given shape, each element True (kept) with probability 1 - rounded_p(p), independently."""
    check_p(p)
    n = math.prod(shape)
    # randint's range covers every int64 but one, so each of the four 16-bit lanes of a draw is uniform.
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    lanes = words.view(torch.int16)[:n].view(shape)  # signed, uniform over -32768..32767
    return lanes >= -(_LEVELS // 2) + round(p * _LEVELS)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
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


class FastDropout(nn.Module):
    """Module form of `fast_dropout`: active in train() mode, the identity in eval() mode."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        check_p(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply dropout with this module's p when training."""
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout module inside `model` by a FastDropout with the same p; return how many.

    Dropout has no weights, so the model's state_dict (and its checkpoints) do not change. Dropout on attention
    weights is a function call inside the attention, not a module, and keeps PyTorch's dropout.
    """
    replaced = 0
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Dropout):
                setattr(module, name, FastDropout(child.p))
                replaced += 1
    return replaced


# ---------------------------------------------------------------- switching them on from a TrainConfig


def use_speedups(model: nn.Module, cfg) -> None:
    """Switch on the speed-ups a helpers.training.TrainConfig asks for that act on the model or the process."""
    if cfg.flush_denormal:
        flush_denormal(True)  # a process-wide switch; it stays on after training
    if cfg.fast_dropout:
        use_fast_dropout(model)

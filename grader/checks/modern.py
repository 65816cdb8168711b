"""Checks of the exercises of notebook 11 (exercises): RMSNorm and the Newton-Schulz orthogonalisation of Muon.

RMSNorm is compared with PyTorch's F.rms_norm in float64, Newton-Schulz with the five steps written out here in float64;
each comparison names the likely mistake when the learner's output equals what that mistake would give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grader.core import exercise

# ---------------------------------------------------------------- 11 RMSNorm


def _mean_square(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(-1, keepdim=True)


@exercise("11.rmsnorm", "RMSNorm: rescale by the root mean square", "rms_norm")
def _rms_norm(fn, case):
    cases = [
        ("a batch of 4 vectors of size 16", (4, 16), 1.0, 1e-6),
        ("a (2, 3, 8) tensor: normalise the last dimension only", (2, 3, 8), 1.0, 1e-6),
        ("small values (1e-3) with eps = 1e-4: eps must sit inside the square root", (3, 8), 1e-3, 1e-4),
    ]
    for i, (name, shape, scale, eps) in enumerate(cases):
        with case(name) as c:
            g = torch.Generator().manual_seed(i)
            x = scale * torch.randn(*shape, generator=g, dtype=torch.float64)
            weight = torch.rand(shape[-1], generator=g, dtype=torch.float64) + 0.5
            out = c.call(fn, x.clone(), weight.clone(), eps)
            want = F.rms_norm(x, (shape[-1],), weight, eps)
            mistakes = {
                "subtracting the mean first: that is LayerNorm, RMSNorm does not centre": F.layer_norm(
                    x, (shape[-1],), weight, None, eps
                ),
                "dividing by the length of the vector, not by the root of its mean square": x
                * weight
                / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps),
                "forgetting the square root": x * weight / (_mean_square(x) + eps),
                "adding eps after the square root instead of inside it": x
                * weight
                / (torch.sqrt(_mean_square(x)) + eps),
                "forgetting the gain (weight)": x * torch.rsqrt(_mean_square(x) + eps),
                "normalising over the first dimension instead of the last": x
                * weight
                * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + eps),
            }
            c.expect_close("the output", out, want, atol=1e-10, rtol=1e-8, mistakes=mistakes)


# ---------------------------------------------------------------- 11 Newton-Schulz


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of Muon's quintic p(s) = a s + b s^3 + c s^5 (Jordan 2024)


def _ns_variant(G: torch.Tensor, steps: int = 5, coefficients=NS_COEFFICIENTS, normalise: bool = True) -> torch.Tensor:
    """Newton-Schulz in float64 (the reference), or with a planted change: other coefficients, steps, no normalising."""
    a, b, c = coefficients
    X = G / G.norm() if normalise else G.clone()
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X


@exercise("11.newton_schulz", "Newton–Schulz: orthogonalise a matrix with five polynomial steps", "orthogonalize")
def _newton_schulz(fn, case):
    shapes = [("a wide 6 x 10 matrix", (6, 10)), ("a tall 12 x 5 matrix", (12, 5)), ("a square 8 x 8 matrix", (8, 8))]
    for i, (name, shape) in enumerate(shapes):
        with case(name) as c:
            G = torch.randn(*shape, generator=torch.Generator().manual_seed(10 + i), dtype=torch.float64)
            out = c.call(fn, G.clone())
            want = _ns_variant(G)  # the five steps written out in float64
            mistakes = {
                "leaving out the division by the Frobenius norm (the singular values must start at or below 1)": (
                    _ns_variant(G, normalise=False)
                ),
                "the coefficients in reverse order: p(s) = a s + b s^3 + c s^5 with (a, b, c) = (3.4445, -4.7750, "
                "2.0315)": _ns_variant(G, coefficients=tuple(reversed(NS_COEFFICIENTS))),
                "4 steps instead of 5": _ns_variant(G, steps=4),
                "6 steps instead of 5": _ns_variant(G, steps=6),
            }
            c.expect_close("the orthogonalised matrix", out, want, atol=1e-8, rtol=1e-6, mistakes=mistakes)
    with case("the result depends on the direction of G, not its size") as c:
        G = torch.randn(7, 9, generator=torch.Generator().manual_seed(20), dtype=torch.float64)
        small, large = c.call(fn, 1e-3 * G), c.call(fn, 1e3 * G)
        c.expect_close("orthogonalize(1000 G) against orthogonalize(0.001 G)", large, small, atol=1e-8, rtol=1e-6)
    with case("every singular value of the result lies between 0.6 and 1.2") as c:
        G = torch.randn(20, 40, generator=torch.Generator().manual_seed(21), dtype=torch.float64)
        s = torch.linalg.svdvals(c.call(fn, G))
        c.expect(
            bool(((s > 0.6) & (s < 1.2)).all()),
            f"singular values from {float(s.min()):.3f} to {float(s.max()):.3f}",
            "five steps of the quintic on G / ||G||_F leave every singular value in a band around 1",
        )

"""The 11 checks (RMSNorm, Newton-Schulz) pass right answers and name planted mistakes (solutions: test_workspace)."""

import torch
import torch.nn.functional as F

from grader.core import grade
from helpers.optim import NS_COEFFICIENTS


def _right_rms(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def test_11_rmsnorm_passes_the_right_answer_and_names_planted_mistakes():
    assert grade("11.rmsnorm", _right_rms).passed
    plants = {
        "that is LayerNorm": lambda x, w, eps=1e-6: F.layer_norm(x, (x.shape[-1],), w, None, eps),
        "adding eps after the square root": lambda x, w, eps=1e-6: (
            x * w / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)
        ),
        "forgetting the gain": lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps),
        "forgetting the square root": lambda x, w, eps=1e-6: x * w / (x.pow(2).mean(-1, keepdim=True) + eps),
    }
    for named, plant in plants.items():
        report = grade("11.rmsnorm", plant)
        assert not report.passed and named in report.text(), named


def _ns(G, steps=5, coefficients=NS_COEFFICIENTS, normalise=True):
    a, b, c = coefficients
    X = G / G.norm() if normalise else G
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X


def test_11_newton_schulz_passes_the_right_answer_and_names_planted_mistakes():
    assert grade("11.newton_schulz", _ns).passed
    assert "4 steps instead of 5" in grade("11.newton_schulz", lambda G: _ns(G, steps=4)).text()
    reversed_report = grade("11.newton_schulz", lambda G: _ns(G, coefficients=NS_COEFFICIENTS[::-1])).text()
    assert "coefficients in reverse order" in reversed_report
    unscaled = grade("11.newton_schulz", lambda G: _ns(G, normalise=False)).text()
    assert "leaving out the division by the Frobenius norm" in unscaled
    exact = grade("11.newton_schulz", lambda G: (lambda u, s, vh: u @ vh)(*torch.linalg.svd(G, full_matrices=False)))
    assert not exact.passed  # the exact polar factor U Vᵀ is not what five steps give (a band around 1, not 1)

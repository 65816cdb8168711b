"""helpers.course.diagnostics: gradient norms per layer and token similarity."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from helpers.course.diagnostics import layer_grad_norms, mean_token_cosine

D64 = dict(dtype=torch.float64)


def test_layer_grad_norms_match_a_direct_computation():
    layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)])
    x = torch.randn(4, 3)
    layers[1](layers[0](x)).sum().backward()  # the third layer gets no gradient
    norms = layer_grad_norms(layers)
    expected = torch.cat([layers[0].weight.grad.flatten(), layers[0].bias.grad]).norm().item()
    assert norms[0] == pytest.approx(expected, rel=1e-6)
    assert norms[1] > 0 and norms[2] == 0.0


def test_mean_token_cosine_is_one_for_identical_tokens_and_checks_shape():
    same = torch.randn(1, 1, 8).expand(2, 5, 8)
    assert mean_token_cosine(same) == pytest.approx(1.0)
    orthogonal = torch.eye(4)[None]  # four orthogonal tokens: only the diagonal counts
    assert mean_token_cosine(orthogonal) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        mean_token_cosine(torch.randn(4, 8))

"""The course's dropout: drop rate, expected value, gradients, independence, seeding and bad input."""

import math

import pytest
import torch

from helpers.course.speedups import FastDropout, fast_dropout, keep_mask, rounded_p

N = 1 << 20  # elements per statistical check: the drop rate's standard error is under 0.0005


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_drop_rate_matches_p(p):
    torch.manual_seed(0)
    dropped = 1.0 - keep_mask((N,), p).double().mean().item()
    se = math.sqrt(p * (1 - p) / N)
    assert abs(dropped - rounded_p(p)) < 5 * se
    assert abs(rounded_p(p) - p) <= 0.5 / 65536


def test_neighbouring_elements_are_independent():
    # Four neighbouring elements share one 64-bit draw: each pair must still be dropped together with rate p^2.
    torch.manual_seed(1)
    p = 0.5
    mask = ~keep_mask((N // 4, 4), p)
    for a, b in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        both = (mask[:, a] & mask[:, b]).double().mean().item()
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / (N // 4))


def test_expected_value_and_gradient():
    torch.manual_seed(2)
    x = torch.full((N,), 3.0, requires_grad=True)
    y = fast_dropout(x, 0.1)
    assert abs(y.double().mean().item() - 3.0) < 0.01  # scaled by 1 / (1 - p): the mean is kept
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(3.0 / (1 - rounded_p(0.1))))
    y.sum().backward()
    assert torch.allclose(
        x.grad, kept.float() / (1 - rounded_p(0.1)), rtol=1e-6, atol=0
    )  # gradient flows through kept elements only


def test_keeps_dtype_and_shape_under_bfloat16():
    x = torch.randn(4, 8, 16, dtype=torch.bfloat16)
    y = fast_dropout(x, 0.25)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape


def test_seeded_masks_repeat_and_successive_masks_differ():
    torch.manual_seed(3)
    a, b = keep_mask((1000,), 0.3), keep_mask((1000,), 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((1000,), 0.3), a) and not torch.equal(a, b)


def test_identity_cases_and_extremes():
    x = torch.randn(5, 7)
    assert fast_dropout(x, 0.0) is x and fast_dropout(x, 0.5, training=False) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    module = FastDropout(0.3)
    assert repr(module) == "FastDropout(p=0.3)"
    module.eval()
    assert module(x) is x
    module.train()
    assert (module(x) == 0).any()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_is_a_clear_error(p):
    with pytest.raises(ValueError, match="dropout probability"):
        FastDropout(p)
    with pytest.raises(ValueError, match="dropout probability"):
        fast_dropout(torch.ones(3), p)

"""scripts/flops.py: the FLOPs formula of a training step agrees with PyTorch's own counter."""

import importlib.util

import pytest
import torch

from helpers.course.runs import build_char_gpt
from helpers.course.utils import PROJECT_ROOT


def _flops_module():
    spec = importlib.util.spec_from_file_location("flops", PROJECT_ROOT / "scripts" / "flops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("d", "layers", "t", "batch"), [(32, 2, 16, 4), (64, 1, 48, 2)])
def test_the_formula_counts_what_flop_counter_mode_counts(d, layers, t, batch):
    flops = _flops_module()
    sizes = dict(block_size=t, d_model=d, n_heads=4, n_layers=layers, dropout=0.0)
    model = build_char_gpt(sizes, 65, None, seed=0)
    x = torch.randint(65, (batch, t))
    formula = sum(flops.formula_flops(65, d, layers, t, batch).values())
    counted = flops.counted_flops(model, x, x)
    assert counted == pytest.approx(formula, rel=0.02), (counted, formula)
    planted = sum(flops.formula_flops(65, d, layers + 1, t, batch).values())  # one block too many
    assert counted != pytest.approx(planted, rel=0.02)

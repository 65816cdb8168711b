"""Helpers added for notebooks 03–05: timing, weight copying from PyTorch, gradient diagnostics, block diagrams."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from helpers.course.diagrams import draw_decoder_block, draw_encoder_block

D64 = dict(dtype=torch.float64)


def _labels_bottom_to_top(ax, names):
    texts = sorted((t.get_position()[1], t.get_text()) for t in ax.texts if t.get_text() in names)
    return [label for _, label in texts]


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_diagram_orders_its_boxes_like_the_code(norm_first):
    fig, ax = plt.subplots()
    draw_encoder_block(norm_first, ax=ax)
    order = _labels_bottom_to_top(ax, {"LayerNorm", "Multi-head self-attention", "Feed-forward (GELU)"})
    if norm_first:
        assert order == ["LayerNorm", "Multi-head self-attention", "LayerNorm", "Feed-forward (GELU)"]
    else:
        assert order == ["Multi-head self-attention", "LayerNorm", "Feed-forward (GELU)", "LayerNorm"]
    assert sum(t.get_text() == "residual" for t in ax.texts) == 2
    assert "Pre-LN" in ax.get_title() if norm_first else "Post-LN" in ax.get_title()
    plt.close(fig)


def test_decoder_diagram_has_three_sublayers_and_the_memory_input():
    fig, ax = plt.subplots()
    draw_decoder_block(True, ax=ax)
    texts = [t.get_text() for t in ax.texts]
    assert sum(t == "residual" for t in texts) == 3 and sum(t == "LayerNorm" for t in texts) == 3
    assert any("cross-attention" in t for t in texts) and any("encoder output" in t for t in texts)
    assert any("Masked" in t for t in texts)
    plt.close(fig)

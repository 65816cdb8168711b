"""Helpers added for notebooks 03–05: timing, weight copying from PyTorch, gradient diagnostics, block diagrams."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from helpers.attention import MultiHeadAttention
from helpers.diagnostics import layer_grad_norms, mean_token_cosine
from helpers.diagrams import draw_decoder_block, draw_encoder_block
from helpers.layers import DecoderBlock, EncoderBlock, TransformerConfig
from helpers.reference import copy_block_from_torch, copy_mha_from_torch
from helpers.timing import median_time, one_thread

D64 = dict(dtype=torch.float64)


def test_median_time_warms_up_then_takes_the_median():
    calls = []
    seconds = median_time(lambda: calls.append(1), repeats=5, warmup=3)
    assert len(calls) == 8 and 0.0 <= seconds < 0.1
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)


def test_one_thread_restores_the_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_copy_mha_from_torch_makes_outputs_equal():
    ref = nn.MultiheadAttention(16, 4, batch_first=True, **D64).eval()
    ours = MultiHeadAttention(16, 4).double().eval()
    copy_mha_from_torch(ours, ref)
    x = torch.randn(2, 5, 16, **D64)
    torch.testing.assert_close(ours(x)[0], ref(x, x, x, need_weights=False)[0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="num_heads=4"):
        copy_mha_from_torch(MultiHeadAttention(16, 2), ref)


@pytest.mark.parametrize("norm_first", [True, False])
def test_copy_block_from_torch_makes_encoder_and_decoder_blocks_equal(norm_first):
    cfg = TransformerConfig(d_model=16, n_heads=4, d_ff=32, dropout=0.0, norm_first=norm_first)
    kw = dict(dim_feedforward=32, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first, **D64)
    enc_ref, dec_ref = nn.TransformerEncoderLayer(16, 4, **kw).eval(), nn.TransformerDecoderLayer(16, 4, **kw).eval()
    enc, dec = EncoderBlock(cfg).double().eval(), DecoderBlock(cfg).double().eval()
    copy_block_from_torch(enc, enc_ref)
    copy_block_from_torch(dec, dec_ref)
    x, memory = torch.randn(2, 5, 16, **D64), torch.randn(2, 7, 16, **D64)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc_ref(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(dec(x, memory), dec_ref(x, memory, tgt_mask=causal), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="LayerNorms"):
        copy_block_from_torch(enc, dec_ref)


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

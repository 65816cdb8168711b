"""Encoder and decoder blocks against nn.TransformerEncoderLayer / nn.TransformerDecoderLayer; gradients; positions."""

import math

import pytest
import torch
from torch import nn

from helpers.attention import causal_mask, padding_mask
from helpers.course.reference import copy_block_from_torch as copy_block
from helpers.layers import Decoder, DecoderBlock, Encoder, EncoderBlock, FeedForward, TransformerConfig
from helpers.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    make_positional,
    sinusoidal_table,
)

D64 = dict(dtype=torch.float64)


def cfg(**kw):
    base = dict(d_model=16, n_heads=4, n_layers=2, dropout=0.0)
    base.update(kw)
    return TransformerConfig(**base)


def test_ffn_defaults_to_four_times_width_and_gelu():
    ff = FeedForward(16)
    assert ff.linear1.out_features == 64 and isinstance(ff.activation, nn.GELU)
    assert TransformerConfig(d_model=32, n_heads=4).d_ff == 128


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_block_equals_pytorch(norm_first):
    ref = nn.TransformerEncoderLayer(
        16,
        4,
        dim_feedforward=64,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    ).eval()
    ours = EncoderBlock(cfg(norm_first=norm_first, d_ff=64)).double().eval()
    copy_block(ours, ref)
    x = torch.randn(3, 7, 16, **D64)
    tokens = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)
        ours_out = ours(x, mask=padding_mask(tokens, 0))
        ref_out = ref(x, src_key_padding_mask=tokens == 0)
    real = (tokens != 0)[..., None].expand_as(ours_out)  # PyTorch's fast path zeroes padded rows
    torch.testing.assert_close(ours_out[real], ref_out[real], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_block_equals_pytorch(norm_first):
    ref = nn.TransformerDecoderLayer(
        16,
        4,
        dim_feedforward=64,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    ).eval()
    ours = DecoderBlock(cfg(norm_first=norm_first, d_ff=64)).double().eval()
    copy_block(ours, ref)
    x, memory = torch.randn(2, 5, 16, **D64), torch.randn(2, 6, 16, **D64)
    src = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    tgt = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with torch.no_grad():
        ours_out = ours(x, memory, tgt_mask=padding_mask(tgt, 0), memory_mask=padding_mask(src, 0))
        ref_out = ref(
            x, memory, tgt_mask=~causal_mask(5), tgt_key_padding_mask=tgt == 0, memory_key_padding_mask=src == 0
        )
    torch.testing.assert_close(ours_out, ref_out, rtol=1e-10, atol=1e-10)


def test_encoder_stack_equals_pytorch_stack():
    ref = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 4, 64, 0.0, "gelu", batch_first=True, norm_first=True, dtype=torch.float64),
        num_layers=2,
        norm=nn.LayerNorm(16, dtype=torch.float64),
        enable_nested_tensor=False,
    ).eval()
    ours = Encoder(cfg(d_ff=64)).double().eval()
    for mine, theirs in zip(ours.layers, ref.layers):
        copy_block(mine, theirs)
    ours.norm.load_state_dict(ref.norm.state_dict())
    x = torch.randn(2, 5, 16, **D64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm_first", [True, False])
def test_every_parameter_gets_a_finite_nonzero_gradient(norm_first):
    c = cfg(norm_first=norm_first)
    enc, dec = Encoder(c), Decoder(c)
    src, tgt = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    mask = padding_mask(torch.tensor([[1] * 6, [1] * 4 + [0] * 2]), 0)
    out = dec(tgt, enc(src, mask=mask), memory_mask=mask)
    (out**2).mean().backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_decoder_is_causal_a_future_target_never_changes_the_past():
    dec = Decoder(cfg()).eval()
    memory, tgt = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    out1 = dec(tgt, memory)
    tgt2 = tgt.clone()
    tgt2[:, 4:] = torch.randn(1, 2, 16)
    out2 = dec(tgt2, memory)
    torch.testing.assert_close(out1[:, :4], out2[:, :4])
    assert not torch.allclose(out1[:, 4:], out2[:, 4:])


def test_decoder_cache_matches_full_pass():
    dec = Decoder(cfg()).double().eval()
    memory, tgt = torch.randn(2, 4, 16, **D64), torch.randn(2, 6, 16, **D64)
    full = dec(tgt, memory)
    caches = [{} for _ in dec.layers]
    steps = [dec(tgt[:, t : t + 1], memory, caches=caches) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-12)


def test_need_weights_stores_per_head_weights():
    dec = Decoder(cfg()).eval()
    dec(torch.randn(2, 5, 16), torch.randn(2, 7, 16), need_weights=True)
    assert dec.layers[0].attn_weights["self"].shape == (2, 4, 5, 5)
    assert dec.layers[1].attn_weights["cross"].shape == (2, 4, 5, 7)


def test_without_residuals_the_block_output_is_not_x_plus_something():
    c = cfg(residual=False, norm_first=True)
    block = EncoderBlock(c).eval()
    x = torch.randn(1, 3, 16)
    with torch.no_grad():
        out = block(x)
        expected = block.ff(block.norms[1](block.self_attn(block.norms[0](x))[0]))
    torch.testing.assert_close(out, expected)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="activation"):
        TransformerConfig(activation="swish")


# ---- positional encodings ----


def test_sinusoidal_table_values():
    table = sinusoidal_table(50, 8)
    assert table.shape == (50, 8)
    assert table[0, 0::2].abs().max() == 0 and torch.all(table[0, 1::2] == 1)
    pos, i = 7, 1
    assert math.isclose(table[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 8)), rel_tol=1e-6)
    assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 8)), rel_tol=1e-6)


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_positional_modules_add_position_vectors_and_check_length(kind):
    pe = make_positional(kind, 8, max_len=10)
    x = torch.zeros(2, 4, 8)
    out = pe(x)
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(pe(x[:, :1], offset=3)[:, 0], out[:, 3])
    with pytest.raises(ValueError, match="max_len=10"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match="unknown positional"):
        make_positional("rotary-ish", 8, 10)
    assert isinstance(make_positional("learned", 8, 10), LearnedPositionalEmbedding)
    assert isinstance(make_positional("sinusoidal", 8, 10), SinusoidalPositionalEncoding)


def test_dropout_can_be_limited_to_the_residual_branches():
    block = EncoderBlock(TransformerConfig(d_model=16, n_heads=2, dropout=0.2, attn_dropout=0.0, ffn_dropout=0.0))
    assert block.self_attn.dropout == 0.0 and block.ff.dropout.p == 0.0
    assert [d.p for d in block.drops] == [0.2, 0.2]
    default = EncoderBlock(TransformerConfig(d_model=16, n_heads=2, dropout=0.2))  # None: the same rate everywhere
    assert default.self_attn.dropout == 0.2 and default.ff.dropout.p == 0.2
    x = torch.randn(2, 5, 16)
    block.eval()
    assert torch.equal(block(x), block(x))  # no dropout at evaluation

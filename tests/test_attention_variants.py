"""helpers.attention_variants: linear attention and its multi-head form."""

import pytest
import torch

from helpers.attention_variants import (
    LinearMultiHeadAttention,
    linear_attention,
    linear_attention_quadratic,
    use_linear_attention,
)
from helpers.layers import EncoderBlock, TransformerConfig

D64 = dict(dtype=torch.float64)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t", [1, 5, 64, 130])
def test_linear_attention_equals_its_quadratic_form(causal, t):
    q, k, v = (torch.randn(2, 3, t, 8, **D64) for _ in range(3))
    v = torch.randn(2, 3, t, 5, **D64)  # D_v may differ from D
    fast = linear_attention(q, k, v, causal=causal, chunk_size=16)
    torch.testing.assert_close(fast, linear_attention_quadratic(q, k, v, causal=causal), rtol=1e-9, atol=1e-9)
    assert fast.shape == (2, 3, t, 5)


def test_causal_linear_attention_ignores_the_future():
    q, k, v = (torch.randn(1, 2, 40, 8, **D64) for _ in range(3))
    out = linear_attention(q, k, v, causal=True, chunk_size=8)
    k2, v2 = k.clone(), v.clone()
    k2[..., 25:, :] += 3.0
    v2[..., 25:, :] -= 7.0
    out2 = linear_attention(q, k2, v2, causal=True, chunk_size=8)
    torch.testing.assert_close(out[..., :25, :], out2[..., :25, :])
    assert not torch.allclose(out[..., 25:, :], out2[..., 25:, :])


def test_linear_attention_gradients_flow_and_rows_average_values():
    q, k, v = (torch.randn(1, 1, 12, 4, **D64, requires_grad=True) for _ in range(3))
    linear_attention(q, k, v, causal=True, chunk_size=5).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
    ones = torch.ones(1, 1, 12, 4, **D64)  # weights are positive and normalised: a constant value comes back
    torch.testing.assert_close(linear_attention(q.detach(), k.detach(), ones, causal=True), ones, atol=1e-5, rtol=0)


def test_linear_multi_head_attention_swaps_in_with_the_same_weights():
    block = EncoderBlock(TransformerConfig(d_model=16, n_heads=4, dropout=0.0)).double()
    x = torch.randn(2, 9, 16, **D64)
    before = block(x, causal=True)
    use_linear_attention(block)
    assert isinstance(block.self_attn, LinearMultiHeadAttention)
    after = block(x, causal=True)
    assert after.shape == before.shape and not torch.allclose(after, before)
    mha = block.self_attn
    q, k, v = (mha.split_heads(p(x)) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    expected = mha.out_proj(mha.merge_heads(linear_attention_quadratic(q, k, v, causal=True)))
    torch.testing.assert_close(mha(x, causal=True)[0], expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(NotImplementedError):
        mha(x, mask=torch.ones(9, 9, dtype=torch.bool))

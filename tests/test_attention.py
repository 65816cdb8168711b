"""Scaled dot-product attention, masks and multi-head attention against PyTorch's references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import MultiHeadAttention, add_causal, causal_mask, padding_mask, scaled_dot_product_attention
from helpers.course.reference import copy_mha_from_torch as copy_mha

D64 = dict(dtype=torch.float64)


def qkv(b=2, h=3, tq=5, tk=7, d=8):
    return torch.randn(b, h, tq, d, **D64), torch.randn(b, h, tk, d, **D64), torch.randn(b, h, tk, d, **D64)


def test_output_and_weight_shapes():
    q, k, v = qkv()
    out, w = scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5, 8) and w.shape == (2, 3, 5, 7)


def test_weights_sum_to_one_and_are_non_negative():
    q, k, v = qkv()
    _, w = scaled_dot_product_attention(q, k, v)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, **D64))


def test_hand_computed_example():
    q = torch.tensor([[1.0, 0.0]], **D64)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]], **D64)
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]], **D64)
    out, w = scaled_dot_product_attention(q, k, v)
    s = torch.tensor([1.0, 0.0], **D64) / 2**0.5
    expected_w = torch.exp(s) / torch.exp(s).sum()
    torch.testing.assert_close(w[0], expected_w)
    torch.testing.assert_close(out[0], expected_w @ v)


@pytest.mark.parametrize("kind", ["none", "bool", "additive", "causal"])
def test_matches_torch_sdpa(kind):
    q, k, v = qkv(tq=6, tk=6)
    mask = {
        "none": None,
        "bool": torch.rand(2, 1, 6, 6) > 0.3,
        "additive": torch.randn(2, 3, 6, 6, **D64),
        "causal": causal_mask(6),
    }[kind]
    if kind == "bool":
        mask[..., 0] = True  # keep at least one key per query: PyTorch gives NaN for fully masked rows
    ours, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_causal_mask_puts_no_weight_above_the_diagonal():
    q, k, v = qkv(tq=6, tk=6)
    _, w = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    upper = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert torch.all(w[..., upper] == 0)
    assert torch.all(w[..., ~upper] > 0)


def test_causal_mask_with_cached_keys_aligns_to_last_positions():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    with pytest.raises(ValueError, match="T_q=3, T_k=2"):
        causal_mask(3, 2)


def test_padding_mask_gives_zero_weight_to_padded_keys():
    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 0]])
    mask = padding_mask(tokens, pad_id=0)
    assert mask.shape == (2, 1, 1, 5)
    q, k, v = qkv(tq=4, tk=5)
    _, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.all(w[0, ..., 3:] == 0) and torch.all(w[1, ..., 4:] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4, **D64))


def test_padded_keys_never_change_the_output():
    q, k, v = qkv(tq=4, tk=5)
    mask = padding_mask(torch.tensor([[1, 1, 1, 0, 0]] * 2), pad_id=0)
    out1, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[..., 3:, :] = 1e3 * torch.randn_like(k2[..., 3:, :])
    v2[..., 3:, :] = 1e3 * torch.randn_like(v2[..., 3:, :])
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask=mask)
    torch.testing.assert_close(out1, out2)


@pytest.mark.parametrize("additive", [False, True])
def test_fully_masked_row_gives_zeros_not_nan(additive):
    q, k, v = qkv(tq=3, tk=4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    if additive:
        mask = torch.zeros(3, 4, **D64).masked_fill(~mask, float("-inf"))
    q.requires_grad_(True)
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert torch.all(out[..., 1, :] == 0) and torch.all(w[..., 1, :] == 0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((2, 5, 8), (2, 7, 6), (2, 7, 8)), "last dimension"),
        (((2, 5, 8), (2, 7, 8), (2, 6, 8)), "same number of keys"),
        (((2, 5, 8), (3, 7, 8), (3, 7, 8)), "batch dimensions"),
        (((5, 8), (2, 7, 8), (2, 7, 8)), "same number of dimensions"),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(shapes, message):
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=message) as info:
        scaled_dot_product_attention(q, k, v)
    assert str(tuple(shapes[1])) in str(info.value) or str(tuple(shapes[0])) in str(info.value)


def test_incompatible_mask_raises_value_error_naming_shapes():
    q, k, v = qkv(tq=5, tk=7)
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(2, 3, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
    with pytest.raises(ValueError, match="bool"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 7, dtype=torch.long))


def test_dropout_changes_output_only_when_positive():
    q, k, v = qkv()
    a, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    b, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    c, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


# ---- multi-head attention ----


def make_pair(d_model=16, n_heads=4):
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention(d_model, n_heads).double()
    copy_mha(ours, ref)
    return ours.eval(), ref.eval()


def test_mha_self_attention_equals_nn_multihead_attention():
    ours, ref = make_pair()
    x = torch.randn(2, 6, 16, **D64)
    out, w = ours(x, need_weights=True)
    ref_out, ref_w = ref(x, x, x, need_weights=True, average_attn_weights=False)
    assert w.shape == (2, 4, 6, 6)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-12)


def test_mha_cross_attention_with_padding_and_causal_masks_equals_reference():
    ours, ref = make_pair()
    x, ctx = torch.randn(2, 4, 16, **D64), torch.randn(2, 6, 16, **D64)
    tokens = torch.tensor([[3, 3, 3, 3, 0, 0], [3, 3, 3, 3, 3, 0]])
    out, _ = ours(x, context=ctx, mask=padding_mask(tokens, 0))
    ref_out, _ = ref(x, ctx, ctx, key_padding_mask=tokens == 0)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    out, _ = ours(ctx, causal=True)
    ref_out, _ = ref(ctx, ctx, ctx, attn_mask=~causal_mask(6))
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["none", "causal", "padding", "padding+causal", "fully_masked", "additive"])
def test_sdpa_fast_path_equals_from_scratch(case):
    slow = MultiHeadAttention(16, 4).double().eval()
    fast = MultiHeadAttention(16, 4, use_sdpa=True).double().eval()
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(2, 6, 16, **D64)
    tokens = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    pad = padding_mask(tokens, 0)
    kwargs = {
        "none": {},
        "causal": {"causal": True},
        "padding": {"mask": pad},
        "padding+causal": {"mask": pad, "causal": True},
        "fully_masked": {
            "mask": torch.zeros(2, 1, 6, 6, dtype=torch.bool)
            .index_fill(-1, torch.tensor([0]), True)
            .index_fill(-2, torch.tensor([2]), False)
        },
        "additive": {"mask": torch.randn(2, 4, 6, 6, **D64), "causal": True},
    }[case]
    torch.testing.assert_close(fast(x, **kwargs)[0], slow(x, **kwargs)[0], rtol=1e-10, atol=1e-12)


def test_kv_cache_gives_same_output_as_full_causal_pass():
    mha = MultiHeadAttention(16, 4).double().eval()
    x = torch.randn(2, 7, 16, **D64)
    full, _ = mha(x, causal=True)
    cache, steps = {}, []
    first, _ = mha(x[:, :3], causal=True, cache=cache)
    steps.append(first)
    for t in range(3, 7):
        out, _ = mha(x[:, t : t + 1], causal=True, cache=cache)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-12)
    assert cache["k"].shape == (2, 4, 7, 4)


def test_mha_rejects_bad_shapes():
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"\(2, 5, 12\)"):
        mha(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match=r"context"):
        mha(torch.randn(2, 5, 16), context=torch.randn(3, 5, 16))


def test_add_causal_combines_bool_and_additive_masks():
    pad = torch.tensor([True, True, False])
    assert add_causal(pad, 3, 3).tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    additive = add_causal(torch.zeros(3, 3), 3, 3)
    assert torch.isneginf(additive).sum() == 3


def test_one_head_from_projections_equals_multi_head_attention_with_one_head():
    """Notebook 02's single head (x W_Q, x W_K, x W_V, causal softmax) is MultiHeadAttention with H = 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)  # (B, T, C)
    w_q, w_k, w_v = (torch.randn(6, 6, generator=g, dtype=torch.float64) for _ in range(3))
    q, k, v = x @ w_q, x @ w_k, x @ w_v  # (B, T, C) @ (C, d_head) -> (B, T, d_head), d_head = C
    scores = (q @ k.transpose(-2, -1) / math.sqrt(6)).masked_fill(~causal_mask(5), float("-inf"))
    by_hand = torch.softmax(scores, dim=-1) @ v
    mha = MultiHeadAttention(6, 1, bias=False).double()
    with torch.no_grad():
        for proj, w in ((mha.q_proj, w_q), (mha.k_proj, w_k), (mha.v_proj, w_v)):
            proj.weight.copy_(w.T)  # nn.Linear computes x @ weight.T
        mha.out_proj.weight.copy_(torch.eye(6, dtype=torch.float64))
    out, _ = mha(x, causal=True)
    torch.testing.assert_close(out, by_hand, atol=1e-12, rtol=0)

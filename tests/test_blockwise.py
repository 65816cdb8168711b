"""helpers.attention_variants.blockwise_attention: softmax attention one tile at a time, equal to F.sdpa."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from helpers.attention import causal_mask
from helpers.attention_variants import blockwise_attention

D64 = dict(dtype=torch.float64)
EXACT = dict(atol=1e-10, rtol=0.0)


def _qkv(lead, t_q, t_k, d, d_v, seed=0):
    """Seeded float64 q (*lead, T_q, D), k (*lead, T_k, D), v (*lead, T_k, D_v)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, t_q, d, generator=g, **D64)
    k = torch.randn(*lead, t_k, d, generator=g, **D64)
    v = torch.randn(*lead, t_k, d_v, generator=g, **D64)
    return q, k, v


def _sdpa(q, k, v, causal=False, scale=None):
    """PyTorch's attention with the course's causal mask (the queries are the last T_q positions)."""
    mask = causal_mask(q.shape[-2], k.shape[-2]) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class Recorder(TorchFunctionMode):
    """Record (function name, shape) of every tensor that a torch function returns inside the block."""

    def __init__(self):
        super().__init__()
        self.records = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        """Run func, then note the shape of each tensor it returned."""
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.records.append((getattr(func, "__name__", str(func)), tuple(t.shape)))
        return out


# (batch dims, T_q, T_k, D, D_v, scale): square and not, T a multiple of some blocks and of none, D_v != D
CASES = [
    ((2, 3), 37, 37, 8, 8, None),
    ((1,), 16, 16, 4, 4, None),
    ((), 9, 9, 6, 6, None),
    ((2, 2, 2), 5, 23, 8, 5, None),
    ((3, 1), 23, 5, 8, 5, None),
    ((2, 3), 20, 20, 8, 3, 0.3),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block_size", [1, 4, 7, 64])  # one key at a time, divides 16 and 20, divides none, > T
@pytest.mark.parametrize(("lead", "t_q", "t_k", "d", "d_v", "scale"), CASES)
def test_equals_sdpa(lead, t_q, t_k, d, d_v, scale, block_size, causal):
    q, k, v = _qkv(lead, t_q, t_k, d, d_v)
    if causal and t_q > t_k:
        with pytest.raises(ValueError, match="T_q <= T_k"):
            blockwise_attention(q, k, v, block_size=block_size, causal=causal, scale=scale)
        return
    out = blockwise_attention(q, k, v, block_size=block_size, causal=causal, scale=scale)
    want = _sdpa(q, k, v, causal, scale)
    assert out.shape == (*lead, t_q, d_v)
    torch.testing.assert_close(out, want, **EXACT)


def test_causal_with_fewer_queries_is_bottom_right_aligned_like_the_course_mask():
    q, k, v = _qkv((2,), 3, 8, 4, 4)  # three new queries after five earlier positions, as with a KV cache
    out = blockwise_attention(q, k, v, block_size=2, causal=True)
    torch.testing.assert_close(out, _sdpa(q, k, v, causal=True), **EXACT)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # F.sdpa's own convention: query i sees j <= i
    assert not torch.allclose(out, top_left)
    last = blockwise_attention(q[:, -1:], k, v, block_size=2, causal=True)  # the last query sees every key
    torch.testing.assert_close(last, F.scaled_dot_product_attention(q[:, -1:], k, v), **EXACT)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("t_q", "t_k"), [(19, 19), (11, 19), (19, 11)])
def test_gradients_equal_those_of_sdpa(causal, t_q, t_k):
    if causal and t_q > t_k:
        return
    q, k, v = (t.requires_grad_() for t in _qkv((2, 2), t_q, t_k, 6, 4, seed=1))
    upstream = torch.randn(2, 2, t_q, 4, generator=torch.Generator().manual_seed(2), **D64)
    grads = torch.autograd.grad((blockwise_attention(q, k, v, 5, causal) * upstream).sum(), (q, k, v))
    want = torch.autograd.grad((_sdpa(q, k, v, causal) * upstream).sum(), (q, k, v))
    for name, got, ref in zip("qkv", grads, want):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, ref, **EXACT, msg=lambda m, name=name: f"grad of {name}: {m}")


def _forget_rescale(q, k, v, block_size):
    """Online softmax with a planted mistake: what was summed is not rescaled by exp(m_old - m_new)."""
    s_all_rows = q * (1.0 / math.sqrt(q.shape[-1]))  # (..., T_q, D)
    m = torch.full((*q.shape[:-1], 1), float("-inf"), **D64)  # (..., T_q, 1)
    denom = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], **D64)  # (..., T_q, D_v)
    for k0 in range(0, k.shape[-2], block_size):
        s = s_all_rows @ k[..., k0 : k0 + block_size, :].transpose(-2, -1)  # (..., T_q, b)
        m = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        p = torch.exp(s - m)  # measured against the new max...
        denom = denom + p.sum(dim=-1, keepdim=True)  # ...but added to sums measured against the old one
        acc = acc + p @ v[..., k0 : k0 + block_size, :]
    return acc / denom


def test_the_rescale_of_the_online_softmax_matters():
    t, block = 24, 4
    q, k, v = _qkv((2, 2), t, t, 8, 8, seed=3)
    q = q * 6.0  # large spread of scores: a mistake of exp(m_new - m_old) cannot hide
    k = k * torch.linspace(0.5, 2.0, t, **D64)[:, None]  # later keys score higher: the running max keeps rising
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)  # (2, 2, T, T), built here only to check the data
    first_block_max = scores[..., :block].amax(dim=-1)
    assert (first_block_max < scores.amax(dim=-1) - 1.0).float().mean() > 0.5  # the max rises for most rows

    want = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(blockwise_attention(q, k, v, block_size=block), want, **EXACT)
    assert (_forget_rescale(q, k, v, block) - want).abs().max() > 0.5  # the planted mistake is caught
    # With a single block there is nothing to rescale, so the mistaken version is right: the rescale is the difference.
    torch.testing.assert_close(_forget_rescale(q, k, v, block_size=t), want, **EXACT)


@pytest.mark.parametrize("causal", [False, True])
def test_no_tensor_of_size_t_q_by_t_k_is_built(causal):
    lead, t, block, d, d_v = (2, 3), 256, 32, 16, 8
    q, k, v = _qkv(lead, t, t, d, d_v)
    recorder = Recorder()
    with recorder:
        out = blockwise_attention(q, k, v, block_size=block, causal=causal)
    names, shapes = zip(*recorder.records)
    assert names[-1] == "cat" and shapes[-1] == out.shape  # the result itself, (B, H, T_q, D_v), is made last
    per_head = [math.prod(s) / math.prod(lead) for s in shapes[:-1]]  # elements per (batch, head)
    # Working set: a (block, block) tile of scores, a (block, D) query block, a (block, D_v) output block.
    bound = block * max(block, d, d_v)
    assert max(per_head) == bound == block * block  # the bound is reached: the tiles really are (block, block)
    assert bound * 64 == t * t  # 64 times smaller than one (T_q, T_k) score matrix
    assert all(s[-2:] != (t, t) for s in shapes)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), **EXACT)


def _tiles_processed(t_q, t_k, block, causal):
    """Number of (query block, key block) score tiles that blockwise_attention computes."""
    q, k, v = _qkv((1, 2), t_q, t_k, 4, 3)
    recorder = Recorder()
    with recorder:
        blockwise_attention(q, k, v, block_size=block, causal=causal)
    return sum(name in ("matmul", "__matmul__") and s[-2:] == (block, block) for name, s in recorder.records)


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_causal_skips_key_blocks_in_the_future(n):
    block = 8
    assert _tiles_processed(n * block, n * block, block, causal=False) == n * n
    assert _tiles_processed(n * block, n * block, block, causal=True) == n * (n + 1) // 2  # n = 4: 10 of 16


def test_causal_skipping_with_fewer_queries_than_keys():
    assert _tiles_processed(16, 32, 8, causal=False) == 2 * 4
    assert _tiles_processed(16, 32, 8, causal=True) == 3 + 4  # queries 16..23 see key blocks 0..2, 24..31 all four


def test_empty_inputs_give_zeros_not_nan():
    q, k, v = _qkv((2,), 4, 0, 3, 5)  # no key at all: every row is fully masked
    out = blockwise_attention(q, k, v, block_size=2)
    assert out.shape == (2, 4, 5) and torch.equal(out, torch.zeros(2, 4, 5, **D64))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(ValueError, match="T_q <= T_k"):  # causal: four queries cannot be the last of no positions
        blockwise_attention(q, k, v, block_size=2, causal=True)
    q, k, v = _qkv((2,), 0, 6, 3, 5)
    assert blockwise_attention(q, k, v, block_size=2).shape == (2, 0, 5)


def test_large_scores_stay_finite_in_float32():
    q, k, v = (t.float() for t in _qkv((1, 2), 40, 40, 8, 8, seed=4))
    q = q * 100.0  # exp of these scores would overflow float32 without subtracting the running max
    out = blockwise_attention(q, k, v, block_size=6, causal=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("shapes", "block_size", "message"),
    [
        (((1, 4, 3), (1, 4, 3), (1, 4, 2)), 0, "block_size"),
        (((1, 4, 3), (1, 4, 3), (1, 4, 2)), -2, "block_size"),
        (((1, 4, 3), (1, 4, 3), (1, 4, 2)), 2.5, "block_size"),
        (((1, 4, 3), (1, 4, 3), (1, 4, 2)), True, "block_size"),
        (((1, 4, 3), (1, 4, 5), (1, 4, 2)), 2, "d_k"),
        (((1, 4, 3), (1, 4, 3), (1, 5, 2)), 2, "T_k"),
        (((2, 4, 3), (1, 4, 3), (1, 4, 2)), 2, "batch"),
        (((4,), (4,), (4,)), 2, "dimensions"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_problem(shapes, block_size, message):
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        blockwise_attention(q, k, v, block_size=block_size)

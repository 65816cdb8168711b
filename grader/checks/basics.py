"""Checks of the exercises of notebooks 01-05: attention, masks, heads, positions, blocks (introduced in the exercises).

Every check compares the learner's function with an oracle in float64: PyTorch's own modules where one exists,
otherwise the course's helpers, which the test suite proves equal to PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.core import exercise, matching_mistake

# The three tokens of notebook 01 ("the", "cat", "sat").
QUERIES_01 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
KEYS_01 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
VALUES_01 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)


def _reference_attention(q, k, v, scale=None, dim=-1):
    """softmax(q kᵀ · scale) v in float64, with the softmax over `dim` (a wrong dim gives a known mistake)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    w = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim)
    return w @ v, w


def _random_qkv(t_q=4, t_k=5, d_k=3, d_v=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(t_q, d_k, generator=g, dtype=dtype),
        torch.randn(t_k, d_k, generator=g, dtype=dtype),
        torch.randn(t_k, d_v, generator=g, dtype=dtype),
    )


# ---------------------------------------------------------------- 01 attention by hand


@exercise("01.one_query", "one query, step by step", "attend_one")
def _one_query(fn, case):
    for name, q, k, v in [
        ('the query of "sat" over the three tokens', QUERIES_01[2], KEYS_01, VALUES_01),
        ("a random query over five keys (d_k = 3)", *(t[0] if i == 0 else t for i, t in enumerate(_random_qkv()))),
    ]:
        with case(name) as c:
            out = c.call(fn, q.clone(), k.clone(), v.clone())
            c.expect(isinstance(out, tuple) and len(out) == 2, "return a tuple (weights, output)")
            weights, output = out
            want_out, want_w = _reference_attention(q[None], k, v)
            no_scale_w = _reference_attention(q[None], k, v, scale=1.0)[1]
            c.expect_weights(weights, want_w[0], mistakes={"scores not divided by sqrt(d_k)": no_scale_w[0]})
            c.expect_close("the output", output, want_out[0], hint="mix the values with the weights: sum_j w_j v_j")


@exercise("01.all_queries", "every query at once", "attention_by_hand")
def _all_queries(fn, case):
    for name, (q, k, v) in [
        ("the three tokens of notebook 01", (QUERIES_01, KEYS_01, VALUES_01)),
        ("4 queries, 5 keys, d_k = 3, d_v = 2", _random_qkv()),
    ]:
        with case(name) as c:
            out = c.call(fn, q.clone(), k.clone(), v.clone())
            c.expect(isinstance(out, tuple) and len(out) == 2, "return a tuple (output, weights)")
            output, weights = out
            want_out, want_w = _reference_attention(q, k, v)
            mistakes = {
                "scores not divided by sqrt(d_k)": _reference_attention(q, k, v, scale=1.0)[1],
                "a softmax over the queries (dim=0) instead of the keys": _reference_attention(q, k, v, dim=0)[1],
            }
            c.expect_weights(weights, want_w, mistakes=mistakes)
            c.expect_close("the output", output, want_out)


# ---------------------------------------------------------------- shared by the checks of 02-05


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * std


def _pair(c, out, names: tuple[str, str], wants: tuple[torch.Tensor, torch.Tensor]):
    """Check that out is a pair of the two named results; say so when their order is swapped."""
    c.expect(
        isinstance(out, tuple | list) and len(out) == 2,
        f"return a tuple ({names[0]}, {names[1]}), got {type(out).__name__}",
    )
    a, b = out
    swapped = (
        isinstance(a, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and wants[0].shape != wants[1].shape
        and a.shape == wants[1].shape
        and b.shape == wants[0].shape
    )
    c.expect(
        not swapped,
        f"{names[0]} has shape {tuple(a.shape)}, expected {tuple(wants[0].shape)}",
        f"return ({names[0]}, {names[1]}) in that order",
    )
    return a, b


def _expect_bool_mask(c, got, want: torch.Tensor, what: str = "the mask") -> None:
    """Fail unless got is a boolean tensor of want's shape."""
    c.expect(isinstance(got, torch.Tensor), f"{what} should be a tensor, got {type(got).__name__}")
    c.expect(
        got.shape == want.shape,
        f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}",
        "one axis for the heads and one for the queries, then the keys: (B, 1, 1, T)" if want.dim() == 4 else "",
    )
    c.expect(
        got.dtype == torch.bool,
        f"{what} should be boolean (True = may attend), got {got.dtype}",
        "a float mask would be added to the scores, where 1 and 0 hide nothing: make the mask boolean",
    )


# ---------------------------------------------------------------- 02 scaled dot-product attention


def _attention(q, k, v, mask=None, scale=None, dim=-1, twice=False, dead_rows="zero", invert=False):
    """softmax(q kᵀ · scale + mask) v and the weights, in float64; the knobs give the classic mistakes.

    dead_rows, for a query whose keys are all masked: "zero" (the course's rule), "nan" (a plain softmax over a row of
    -inf), "uniform" (a large negative number instead of -inf). invert flips a boolean mask.
    """
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            keep = ~mask if invert else mask
            scores = scores.masked_fill(~keep, -1e9 if dead_rows == "uniform" else -math.inf)
        else:
            scores = scores + mask
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    if dead_rows == "zero" and dim == -1:
        w = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    else:
        w = torch.softmax(scores, dim=dim)
    if twice:
        w = torch.softmax(w, dim=dim)
    return w @ v, w


def _torch_attention(q, k, v, mask=None):
    """F.scaled_dot_product_attention in float64, with the course's rule (a zero output) for a query with no key."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    keep = mask if mask.dtype == torch.bool else ~torch.isneginf(mask)
    dead = ~keep.any(dim=-1, keepdim=True)  # (..., T_q, 1)
    safe = mask | dead if mask.dtype == torch.bool else mask.masked_fill(dead, 0.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=safe).masked_fill(dead, 0.0)


def _sdpa_mistakes(q, k, v, mask=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """label -> (output, weights) of the classic mistakes on these inputs."""
    mistakes = {
        "scores not divided by sqrt(d_k)": _attention(q, k, v, mask, scale=1.0),
        "a softmax over the queries (dim=-2) instead of the keys": _attention(q, k, v, mask, dim=-2),
        "a softmax applied twice (a second softmax flattens the weights)": _attention(q, k, v, mask, twice=True),
    }
    if mask is not None and mask.dtype == torch.bool:
        after = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1).masked_fill(~mask, 0.0)
        mistakes["the mask applied after the softmax (the kept weights no longer sum to 1)"] = (after @ v, after)
        mistakes["a mask of the wrong sign (True means a query may attend)"] = _attention(q, k, v, mask, invert=True)
        mistakes["a mask of the wrong sign (True means a query may attend), with NaN where it hides every key"] = (
            _attention(q, k, v, mask, invert=True, dead_rows="nan")
        )
    keep = None if mask is None else (mask if mask.dtype == torch.bool else ~torch.isneginf(mask))
    if keep is not None and not keep.any(dim=-1).all():
        mistakes["a plain softmax over a row whose keys are all masked (0/0 = NaN)"] = _attention(
            q, k, v, mask, dead_rows="nan"
        )
        if mask.dtype == torch.bool:
            mistakes["a large negative number instead of -inf (a fully masked row spreads its weight evenly)"] = (
                _attention(q, k, v, mask, dead_rows="uniform")
            )
    return mistakes


def _expect_no_padding_weight(c, weights, keep: torch.Tensor, want: torch.Tensor, mistakes) -> None:
    """Fail, naming the sentence, query and key, when a query gives weight to a padding key."""
    if not (isinstance(weights, torch.Tensor) and weights.shape == want.shape):
        return
    on_pad = weights.detach().double().cpu().masked_fill(keep, 0.0).abs() > 1e-6
    if on_pad.any():
        where = tuple(int(i) for i in on_pad.nonzero()[0])
        c.fail(
            f"weight on padding: in sentence {where[0]}, query {where[-2]} gives the padding key {where[-1]} "
            f"weight {float(weights[where]):.3g}",
            matching_mistake(weights, mistakes) or "the padding mask is True on real tokens: the others get -inf",
        )


@exercise("02.sdpa", "scaled dot-product attention with masks", "scaled_dot_product_attention")
def _sdpa(fn, case):
    g = _gen(2)
    q2, k2, v2 = _randn(g, 4, 3), _randn(g, 5, 3), _randn(g, 5, 2)  # (T_q, d_k), (T_k, d_k), (T_k, d_v)
    qb, kb, vb = (_randn(g, 2, 3, 5, 4) for _ in range(3))  # (B, H, T, D)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    window = causal & ~torch.ones(5, 5, dtype=torch.bool).tril(-2)  # itself and the key before
    additive = torch.zeros(5, 5, dtype=torch.float64).masked_fill(~window, -math.inf)
    keep = (torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]]) != 0)[:, None, None, :]  # (B, 1, 1, T), pad_id 0
    dead = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    dead_additive = torch.zeros(4, 5, dtype=torch.float64).masked_fill(~dead, -math.inf)
    cases = [
        ("no mask: 4 queries, 5 keys, d_k = 3, d_v = 2", (q2, k2, v2), [None]),
        ("batched (2, 3, 5, 4) inputs", (qb, kb, vb), [None]),
        ("a boolean causal mask: no query sees a later key", (qb, kb, vb), [causal]),
        ("an additive mask (0 or -inf): each query sees itself and the key before", (qb, kb, vb), [additive]),
        ("a key-padding mask (2, 1, 1, 5): no weight on the padding", (qb, kb, vb), [keep]),
        (
            "a query whose keys are all masked gets zeros, not NaN (boolean, then additive)",
            (q2, k2, v2),
            [dead, dead_additive],
        ),
    ]
    for name, (q, k, v), masks in cases:
        with case(name) as c:
            for mask in masks:
                args = (q.clone(), k.clone(), v.clone()) + (() if mask is None else (mask.clone(),))
                out = c.call(fn, *args)
                want_out, want_w = _torch_attention(q, k, v, mask), _attention(q, k, v, mask)[1]
                output, attn_weights = _pair(c, out, ("output", "attn_weights"), (want_out, want_w))
                mistakes = _sdpa_mistakes(q, k, v, mask)
                allowed = None if mask is None else (mask if mask.dtype == torch.bool else ~torch.isneginf(mask))
                weight_mistakes = {label: w for label, (_, w) in mistakes.items()}
                if mask is keep:
                    _expect_no_padding_weight(c, attn_weights, keep, want_w, weight_mistakes)
                c.expect_weights(attn_weights, want_w, allowed, weight_mistakes)
                c.expect_close("output", output, want_out, mistakes={label: o for label, (o, _) in mistakes.items()})


_CAUSAL_MISTAKES = {
    "a triangle without its diagonal (a query must see itself)": lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1),
    "a triangle one key too wide (each query also sees the next key)": lambda n: torch.ones(n, n).tril(1).bool(),
    "the upper triangle (True marks the keys to hide; the course's True means may attend)": lambda n: torch.ones(
        n, n, dtype=torch.bool
    ).triu(1),
}


@exercise("02.causal_mask", "the causal mask", "causal_mask")
def _causal_mask(fn, case):
    for name, n in [("seq_len = 5: query i sees keys 0..i, itself included", 5), ("seq_len = 1: one token", 1)]:
        with case(name) as c:
            got = c.call(fn, n)
            want = torch.ones(n, n, dtype=torch.bool).tril()
            _expect_bool_mask(c, got, want)
            if not torch.equal(got.cpu(), want):
                i, j = (int(t) for t in (got.cpu() != want).nonzero()[0])
                if got[i, j]:
                    detail = (
                        f"query {i} may see key {j}, a later token: weight above the diagonal, a look at the future"
                    )
                else:
                    detail = f"query {i} cannot see key {j}" + (" (itself)" if i == j else ", an earlier token")
                mistakes = {label: make(n) for label, make in _CAUSAL_MISTAKES.items()}
                c.fail(detail, matching_mistake(got, mistakes) or "the pattern of True values is not the causal one")
    with case("used as an attention mask (T = 6): no weight above the diagonal") as c:
        got = c.call(fn, 6)
        want = torch.ones(6, 6, dtype=torch.bool).tril()
        _expect_bool_mask(c, got, want)
        q, k, v = _random_qkv(6, 6, 4, 3)
        weights = _attention(q, k, v, got.cpu())[1]
        above = weights.triu(1) > 0
        if above.any():
            i, j = (int(t) for t in above.nonzero()[0])
            c.fail(f"weight above the diagonal: query {i} attends to the later key {j} ({float(weights[i, j]):.3g})")
        empty = weights.sum(-1) == 0
        if empty.any():
            c.fail(
                f"query {int(empty.nonzero()[0])} has no key to attend to (zero weights): it must at least see itself"
            )
        c.expect_close("the attention weights", weights, _attention(q, k, v, want)[1])


@exercise("02.padding_mask", "the padding mask", "padding_mask")
def _padding_mask(fn, case):
    cases = [
        ("two sentences, the second ends in 2 padding tokens (pad_id = 0)", [[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]], 0),
        (
            "pad_id = 3, and token 0 is a real word here",
            [[0, 4, 1, 3, 3, 3], [2, 0, 5, 1, 7, 9], [8, 3, 3, 3, 3, 3]],
            3,
        ),
    ]
    for name, ids, pad_id in cases:
        with case(name) as c:
            tokens = torch.tensor(ids)
            got = c.call(fn, tokens.clone(), pad_id)
            want = (tokens != pad_id)[:, None, None, :]  # (B, 1, 1, T): True for a real token
            _expect_bool_mask(c, got, want)
            if not torch.equal(got.cpu(), want):
                b, _, _, t = (int(i) for i in (got.cpu() != want).nonzero()[0])
                if want[b, 0, 0, t]:
                    detail = f"sentence {b}, token {t} is a real token ({ids[b][t]}) but the mask hides it"
                else:
                    detail = f"sentence {b}, token {t} is padding but the mask lets queries attend to it"
                mistakes = {
                    "the opposite convention (True on padding, as in nn.MultiheadAttention's key_padding_mask)": ~want,
                    "a padding id fixed at 0 (use pad_id)": (tokens != 0)[:, None, None, :],
                }
                c.fail(detail, matching_mistake(got, mistakes) or "True for real tokens, False for padding")


# ---------------------------------------------------------------- 03 multi-head attention


def _coded(b: int, t: int, c: int) -> torch.Tensor:
    """(b, t, c) tensor whose entry says where it comes from: 10000 * sentence + 100 * token + feature."""
    idx = torch.arange(b)[:, None, None] * 10000 + torch.arange(t)[None, :, None] * 100 + torch.arange(c)
    return idx.double()


def _decode(value: float) -> tuple[int, int, int] | None:
    """(sentence, token, feature) of an entry of _coded, or None when the value is not one."""
    if value != value or value < 0 or value != int(value):
        return None
    v = int(value)
    return v // 10000, v % 10000 // 100, v % 100


def _split_ref(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D): head h owns features h*D..(h+1)*D-1, as in nn.MultiheadAttention."""
    d_head = x.shape[-1] // n_heads
    return torch.stack([x[..., h * d_head : (h + 1) * d_head] for h in range(n_heads)], dim=1)


def _merge_ref(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H*D): the heads side by side, head 0 first."""
    return torch.cat(x.unbind(1), dim=-1)


_SPLIT_MISTAKES = {
    "a reshape to (B, H, T, D) without the transpose (a head then holds pieces of other tokens)": lambda x, h: (
        x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h)
    ),
    "a view as (B, T, D, H) (each head gets every H-th feature instead of a block of D)": lambda x, h: x.reshape(
        x.shape[0], x.shape[1], x.shape[2] // h, h
    ).permute(0, 3, 1, 2),
}
_MERGE_MISTAKES = {
    "a reshape to (B, T, C) without the transpose (tokens and heads mixed up)": lambda x: x.reshape(
        x.shape[0], x.shape[2], -1
    ),
    "a transpose to (B, T, D, H) before the reshape (the heads' features interleaved)": lambda x: x.permute(
        0, 2, 3, 1
    ).reshape(x.shape[0], x.shape[2], -1),
}


@exercise("03.split_heads", "split the features into heads", "split_heads")
def _split_heads(fn, case):
    for name, (b, t, c_model, h) in [
        ("(2, 3, 8) into 2 heads of 4", (2, 3, 8, 2)),
        ("(2, 5, 12) into 4 heads of 3", (2, 5, 12, 4)),
    ]:
        with case(name) as c:
            x = _coded(b, t, c_model)
            got = c.call(fn, x.clone(), h)
            want = _split_ref(x, h)
            d = c_model // h
            c.expect(isinstance(got, torch.Tensor), f"the result should be a tensor, got {type(got).__name__}")
            c.expect(
                got.shape == want.shape,
                f"the result has shape {tuple(got.shape)}, expected (B, H, T, D) = {tuple(want.shape)}",
                "move the heads next to the batch axis" if got.shape == (b, t, h, d) else "",
            )
            if not torch.equal(got.double(), want):
                where = tuple(int(i) for i in (got.double() != want).nonzero()[0])
                src = _decode(float(got[where]))
                bi, hi, ti, di = where
                held = f"feature {src[2]} of token {src[1]}" if src else f"{float(got[where]):.4g}"
                mistakes = {label: make(x, h) for label, make in _SPLIT_MISTAKES.items()}
                c.fail(
                    f"sentence {bi}, head {hi}, token {ti}, slot {di} holds {held}; expected feature "
                    f"{hi * d + di} of token {ti} (head {hi} owns features {hi * d}..{hi * d + d - 1})",
                    matching_mistake(got, mistakes),
                )


@exercise("03.merge_heads", "merge the heads back", "merge_heads")
def _merge_heads(fn, case):
    for name, (b, t, c_model, h) in [
        ("2 heads of 4: (2, 2, 3, 4) -> (2, 3, 8)", (2, 3, 8, 2)),
        ("4 heads of 3: (2, 4, 5, 3) -> (2, 5, 12)", (2, 5, 12, 4)),
    ]:
        with case(name) as c:
            want = _coded(b, t, c_model)
            x = _split_ref(want, h)  # (B, H, T, D)
            got = c.call(fn, x.clone())
            d = c_model // h
            c.expect(isinstance(got, torch.Tensor), f"the result should be a tensor, got {type(got).__name__}")
            c.expect(
                got.shape == want.shape,
                f"the result has shape {tuple(got.shape)}, expected (B, T, H*D) = {tuple(want.shape)}",
                "merge the last two axes into one of H*D" if got.shape == (b, t, h, d) else "",
            )
            if not torch.equal(got.double(), want):
                bi, ti, col = (int(i) for i in (got.double() != want).nonzero()[0])
                src = _decode(float(got[bi, ti, col]))
                held = (
                    f"head {src[2] // d}, slot {src[2] % d} of token {src[1]}"
                    if src
                    else f"{float(got[bi, ti, col]):.4g}"
                )
                mistakes = {label: make(x) for label, make in _MERGE_MISTAKES.items()}
                c.fail(
                    f"sentence {bi}, token {ti}, feature {col} holds {held}; expected head {col // d}, "
                    f"slot {col % d} of token {ti} (head h owns features h*D..(h+1)*D-1)",
                    matching_mistake(got, mistakes),
                )


def _mha_modules(seed: int, d_model: int, n_heads: int):
    """An nn.MultiheadAttention (float64, random weights and biases) and its four projections as nn.Linear."""
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True, dtype=torch.float64).eval()
    g = _gen(seed)
    projs = [nn.Linear(d_model, d_model, dtype=torch.float64) for _ in range(4)]
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(_randn(g, *p.shape, std=0.4))
        for i, proj in enumerate(projs[:3]):
            proj.weight.copy_(ref.in_proj_weight[i * d_model : (i + 1) * d_model])
            proj.bias.copy_(ref.in_proj_bias[i * d_model : (i + 1) * d_model])
        projs[3].load_state_dict(ref.out_proj.state_dict())
    return ref, projs


def _mha_variant(x_q, x_kv, projs, n_heads, mask=None, split=None, merge=None, **attention_kw):
    """Multi-head attention from the projections, with a known split, merge or attention mistake plugged in."""
    q_proj, k_proj, v_proj, out_proj = projs
    split = split or _split_ref
    q, k, v = split(q_proj(x_q), n_heads), split(k_proj(x_kv), n_heads), split(v_proj(x_kv), n_heads)
    out, w = _attention(q, k, v, mask, **attention_kw)
    return out_proj((merge or _merge_ref)(out)), w


@exercise("03.multi_head", "multi-head attention, equal to nn.MultiheadAttention", "multi_head_attention")
def _multi_head(fn, case):
    g = _gen(3)
    ids = torch.tensor([[4, 8, 15, 16, 23, 42], [4, 8, 15, 0, 0, 0]])  # the second memory ends in 3 padding tokens
    cases = [
        ("self-attention: (2, 5, 8), 2 heads", 8, 2, 5, 5, None),
        ("cross-attention: 4 queries over 6 keys, 4 heads (d_model = 8)", 8, 4, 4, 6, None),
        ("cross-attention with a padding mask (2, 1, 1, 6) on the keys", 12, 3, 4, 6, (ids != 0)[:, None, None, :]),
    ]
    for i, (name, d_model, n_heads, t_q, t_k, mask) in enumerate(cases):
        with case(name) as c:
            ref, projs = _mha_modules(10 + i, d_model, n_heads)
            x_q = _randn(g, 2, t_q, d_model)
            x_kv = x_q if t_q == t_k and i == 0 else _randn(g, 2, t_k, d_model)
            with torch.no_grad():
                padding = None if mask is None else ~mask[:, 0, 0]  # nn.MultiheadAttention: True = ignore
                want_out, want_w = ref(x_q, x_kv, x_kv, key_padding_mask=padding, average_attn_weights=False)
                mistakes = {
                    "scores not divided by sqrt(d_head)": _mha_variant(x_q, x_kv, projs, n_heads, mask, scale=1.0),
                    **{
                        f"splitting with {label}": _mha_variant(x_q, x_kv, projs, n_heads, mask, split=make)
                        for label, make in _SPLIT_MISTAKES.items()
                    },
                    **{
                        f"merging with {label}": _mha_variant(x_q, x_kv, projs, n_heads, mask, merge=make)
                        for label, make in _MERGE_MISTAKES.items()
                    },
                }
                if mask is not None:
                    mistakes["a mask of the wrong sign (True means a query may attend)"] = _mha_variant(
                        x_q, x_kv, projs, n_heads, mask, invert=True
                    )
                args = (x_q.clone(), x_q.clone() if x_kv is x_q else x_kv.clone(), *projs, n_heads)
                out = c.call(fn, *args) if mask is None else c.call(fn, *args, mask.clone())
            output, attn_weights = _pair(c, out, ("output", "attn_weights"), (want_out, want_w))
            weight_mistakes = {label: w for label, (_, w) in mistakes.items()}
            c.expect_weights(attn_weights, want_w, None if mask is None else mask, weight_mistakes)
            c.expect_close("output", output, want_out, mistakes={label: o for label, (o, _) in mistakes.items()})


# ---------------------------------------------------------------- 04 positional encoding


def _sinusoid_variant(seq_len, d_model, swap=False, concat=False, exponent=2, inverse=False, per_dim=False):
    """The sinusoidal table in float64, or one of its classic mistakes."""
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]  # (seq_len, 1)
    if per_dim:  # every dimension j its own frequency 10000^(-j/d), sin on even j, cos on odd j
        angle = pos * 10000.0 ** (-torch.arange(d_model, dtype=torch.float64) / d_model)
        pe = torch.cos(angle)
        pe[:, 0::2] = torch.sin(angle[:, 0::2])
        return pe
    i = torch.arange(d_model // 2, dtype=torch.float64)
    freq = 10000.0 ** ((1 if inverse else -1) * exponent * i / d_model)  # (d/2,)
    sin, cos = torch.sin(pos * freq), torch.cos(pos * freq)
    if swap:
        sin, cos = cos, sin
    if concat:
        return torch.cat([sin, cos], dim=-1)
    pe = torch.zeros(seq_len, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = sin, cos
    return pe


_SINUSOID_MISTAKES = {
    "sine and cosine swapped (the sines go on the even dimensions)": {"swap": True},
    "the sines in the first half and the cosines in the second (they should alternate)": {"concat": True},
    "a frequency of 10000^(-i/d_model) for pair i (the exponent is 2i/d_model)": {"exponent": 1},
    "positions multiplied by 10000^(2i/d_model) instead of divided": {"inverse": True},
    "a frequency per dimension (a sine and its cosine must share one frequency)": {"per_dim": True},
}


@exercise("04.sinusoidal", "the sinusoidal positional encoding", "sinusoidal_encoding")
def _sinusoidal(fn, case):
    for name, seq_len, d_model in [
        ("seq_len = 6, d_model = 8", 6, 8),
        ("seq_len = 50, d_model = 64 (the table drawn in notebook 04)", 50, 64),
    ]:
        with case(name) as c:
            got = c.call(fn, seq_len, d_model)
            want = _sinusoid_variant(seq_len, d_model)
            mistakes = {label: _sinusoid_variant(seq_len, d_model, **kw) for label, kw in _SINUSOID_MISTAKES.items()}
            # float32 arithmetic, as in the notebook, is off by about 2e-6 at position 50
            c.expect_close("the table", got, want, atol=2e-5, rtol=1e-5, mistakes=mistakes)
    with case("an odd d_model (7) raises ValueError") as c:
        c.expect_raises(ValueError, "a sine and a cosine per frequency need an even d_model", fn, 4, 7)


# ---------------------------------------------------------------- 05 transformer block


def _linears(seed: int, d_model: int, d_ff: int) -> tuple[nn.Linear, nn.Linear]:
    g = _gen(seed)
    linear1, linear2 = nn.Linear(d_model, d_ff, dtype=torch.float64), nn.Linear(d_ff, d_model, dtype=torch.float64)
    with torch.no_grad():
        for p in (*linear1.parameters(), *linear2.parameters()):
            p.copy_(_randn(g, *p.shape, std=0.5))
    return linear1, linear2


@exercise("05.feed_forward", "the position-wise feed-forward network", "feed_forward")
def _feed_forward(fn, case):
    g = _gen(5)
    for i, (name, shape, d_ff, single) in enumerate(
        [
            ("(2, 5, 8) tokens, d_ff = 32", (2, 5, 8), 32, False),
            ("position-wise: token 2 alone gives what it gives in its sentence", (2, 5, 8), 32, True),
        ]
    ):
        with case(name) as c:
            linear1, linear2 = _linears(50 + i, shape[-1], d_ff)
            x = _randn(g, *shape)
            if single:
                x = x[:, 2:3]
            with torch.no_grad():
                got = c.call(fn, x.clone(), linear1, linear2)
                want = linear2(F.gelu(linear1(x)))  # the exact GELU between the two layers
                hidden = linear1(x)
                mistakes = {
                    "ReLU instead of GELU (ReLU is nn.TransformerEncoderLayer's default; the course uses GELU)": (
                        linear2(F.relu(hidden))
                    ),
                    "GELU's tanh approximation instead of the exact GELU": linear2(F.gelu(hidden, approximate="tanh")),
                    "no activation between the two layers (they collapse into one linear map)": linear2(hidden),
                    "an activation after the second layer too": F.gelu(linear2(F.gelu(hidden))),
                }
            c.expect_close("the output", got, want, mistakes=mistakes)


@exercise("05.layer_norm", "layer normalisation", "layer_norm")
def _layer_norm(fn, case):
    g = _gen(6)
    for name, x, eps in [
        ("(2, 5, 8) tokens, random gamma and beta, the default eps", _randn(g, 2, 5, 8) * 3 + 1, None),
        (
            "tokens with a small spread (std 0.01) and eps = 1e-3: where eps goes matters",
            _randn(g, 2, 4, 6) * 0.01,
            1e-3,
        ),
    ]:
        with case(name) as c:
            c_model = x.shape[-1]
            gamma, beta = 1 + _randn(g, c_model, std=0.5), _randn(g, c_model, std=0.5)
            args = (x.clone(), gamma.clone(), beta.clone()) + (() if eps is None else (eps,))
            got = c.call(fn, *args)
            e = 1e-5 if eps is None else eps
            want = F.layer_norm(x, (c_model,), gamma, beta, e)
            centred = x - x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            mistakes = {
                "the unbiased variance (divided by C - 1; LayerNorm divides by C)": (
                    gamma * centred / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + e) + beta
                ),
                "eps added after the square root instead of under it": gamma * centred / (var.sqrt() + e) + beta,
                "no eps": gamma * centred / var.sqrt() + beta,
                "statistics over the tokens (dim=-2) instead of the features": F.layer_norm(
                    x.transpose(-2, -1), (x.shape[-2],), None, None, e
                ).transpose(-2, -1)
                * gamma
                + beta,
                "gamma and beta swapped": beta * centred / torch.sqrt(var + e) + gamma,
            }
            c.expect_close("the output", got, want, mistakes=mistakes)


def _encoder_layer(norm_first: bool, seed: int, d_model: int = 8, n_heads: int = 2, d_ff: int = 16):
    """An nn.TransformerEncoderLayer in float64 eval mode, GELU, no dropout, with random weights and LayerNorms."""
    layer = nn.TransformerEncoderLayer(
        d_model,
        n_heads,
        d_ff,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    ).eval()
    g = _gen(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(_randn(g, *p.shape, std=0.3))
        for norm in (layer.norm1, layer.norm2):  # LayerNorms start as the identity: make them tell apart
            norm.weight.copy_(1 + _randn(g, d_model, std=0.5))
            norm.bias.copy_(_randn(g, d_model, std=0.5))
    return layer


def _post_ln(x, attn, ff, n1, n2):
    h = n1(x + attn(x))
    return n2(h + ff(h))


def _pre_ln(x, attn, ff, n1, n2):
    h = x + attn(n1(x))
    return h + ff(n2(h))


def _ln_inside(x, attn, ff, n1, n2):  # x + LN(f(x))
    h = x + n1(attn(x))
    return h + n2(ff(h))


def _no_residual(norm_first):
    def block(x, attn, ff, n1, n2):
        if norm_first:
            return ff(n2(attn(n1(x))))
        return n2(ff(n1(attn(x))))

    return block


_BLOCK_MISTAKES = {
    False: {
        "a Pre-LN block (LayerNorm before each sublayer, none after the sums)": _pre_ln,
        "a LayerNorm on the sublayer's output before the sum, x + LN(f(x))": _ln_inside,
        "no LayerNorm after the second residual sum": lambda x, a, f, n1, n2: (lambda h: h + f(h))(n1(x + a(x))),
        "norm1 and norm2 swapped (norm1 goes with the attention)": lambda x, a, f, n1, n2: _post_ln(x, a, f, n2, n1),
        "no residual connections, LN(f(x)) instead of LN(x + f(x))": _no_residual(False),
        "the feed-forward network before the attention": lambda x, a, f, n1, n2: _post_ln(x, f, a, n1, n2),
    },
    True: {
        "a Post-LN block (LayerNorm after each residual sum)": _post_ln,
        "a normalised residual stream (x replaced by LN(x) before the sum)": lambda x, a, f, n1, n2: (
            lambda h: n2(h) + f(n2(h))
        )(n1(x) + a(n1(x))),
        "a LayerNorm after the sublayer instead of before, x + LN(f(x))": _ln_inside,
        "norm1 and norm2 swapped (norm1 goes with the attention)": lambda x, a, f, n1, n2: _pre_ln(x, a, f, n2, n1),
        "no residual connections, f(LN(x)) instead of x + f(LN(x))": _no_residual(True),
        "the feed-forward network before the attention": lambda x, a, f, n1, n2: _pre_ln(x, f, a, n1, n2),
    },
}


def _check_block(fn, case, norm_first: bool):
    """The checks of 05.post_ln_block and 05.pre_ln_block: equal to nn.TransformerEncoderLayer(norm_first=...)."""
    kind = "Pre-LN" if norm_first else "Post-LN"
    layer = _encoder_layer(norm_first, seed=7 if norm_first else 8)
    x = _randn(_gen(9), 2, 5, 8)

    def self_attn(h):
        return layer.self_attn(h, h, h, need_weights=False)[0]

    def ff(h):
        return layer.linear2(layer.activation(layer.linear1(h)))

    def zeros(h):
        return torch.zeros_like(h)

    norms = (layer.norm1, layer.norm2)
    zero_name = (
        "sublayers that return zeros: a Pre-LN block returns x unchanged (the residual stream is never normalised)"
        if norm_first
        else "sublayers that return zeros: a Post-LN block returns norm2(norm1(x)) (every path passes both norms)"
    )
    for name, attn, feed in [
        (zero_name, zeros, zeros),
        (f"(2, 5, 8), 2 heads, d_ff = 16, GELU: equal to nn.TransformerEncoderLayer ({kind})", self_attn, ff),
    ]:
        with case(name) as c:
            got = c.call(fn, x.clone(), attn, feed, *norms)
            want = layer(x) if attn is self_attn else (x if norm_first else norms[1](norms[0](x)))
            mistakes = {label: make(x, attn, feed, *norms) for label, make in _BLOCK_MISTAKES[norm_first].items()}
            if attn is zeros and norm_first:  # a Post-LN block and a normalised stream both give norm2(norm1(x)) here
                mistakes = {
                    "the residual stream passes through the LayerNorms (x comes out normalised)": norms[1](norms[0](x)),
                    **mistakes,
                }
            c.expect_close("the block's output", got, want, mistakes=mistakes)


@exercise("05.post_ln_block", "a Post-LN encoder block", "post_ln_block")
def _post_ln_block(fn, case):
    _check_block(fn, case, norm_first=False)


@exercise("05.pre_ln_block", "a Pre-LN encoder block", "pre_ln_block")
def _pre_ln_block(fn, case):
    _check_block(fn, case, norm_first=True)

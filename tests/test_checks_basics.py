"""The checks of notebooks 02-05: each planted mistake is caught with feedback that names its symptom.

That every solution passes and every stub says "not written yet" is tested for all notebooks in test_workspace.py."""

import math

import torch
import torch.nn.functional as F

from builders import failing

# ---------------------------------------------------------------- 02


def sdpa(q, k, v, mask=None, scale=True, invert=False, dim=-1, twice=False, dead_rows=True):
    """The solution of 02.sdpa with switches that plant one mistake each."""
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask if invert else ~mask, float("-inf"))
        else:
            scores = scores + mask
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    if dead_rows:
        weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=dim).masked_fill(dead, 0.0)
    else:
        weights = torch.softmax(scores, dim=dim)
    if twice:
        weights = torch.softmax(weights, dim=dim)
    return weights @ v, weights


def test_sdpa_without_sqrt_dk():
    failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask, scale=False), "not divided by sqrt(d_k)")


def test_sdpa_mask_of_the_wrong_sign():
    text = failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask, invert=True), "wrong sign")
    assert "above the diagonal" in text  # the causal case names where the weight went
    assert "weight on padding" in text  # the padding case too


def test_sdpa_mask_of_the_wrong_sign_without_dead_rows():
    fn = lambda q, k, v, mask=None: sdpa(q, k, v, mask, invert=True, dead_rows=False)  # noqa: E731
    failing("02.sdpa", fn, "NaN", "wrong sign")


def test_sdpa_softmax_over_the_wrong_axis():
    failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask, dim=-2), "not 1", "a softmax over the queries")


def test_sdpa_mask_applied_after_the_softmax_is_named_as_such():
    def after(q, k, v, mask=None):
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        if mask is not None and mask.dtype == torch.bool:
            weights = weights.masked_fill(~mask, 0.0)
        elif mask is not None:
            weights = weights.masked_fill(torch.isneginf(mask), 0.0)
        return weights @ v, weights

    text = failing("02.sdpa", after, "not 1", "the mask applied after the softmax")
    assert "wrong axis" not in text and "over the queries" not in text


def test_sdpa_double_softmax():
    failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask, twice=True), "softmax applied twice")


def test_sdpa_fully_masked_row_gives_nan():
    text = failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask, dead_rows=False), "NaN", "0/0")
    assert text.count("✗") == 1  # only the case with a fully masked row fails


def test_sdpa_large_negative_instead_of_inf():
    def fn(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return weights @ v, weights

    failing("02.sdpa", fn, "has every key masked: its weights should all be 0", "large negative number")


def test_sdpa_results_in_the_wrong_order():
    failing("02.sdpa", lambda q, k, v, mask=None: sdpa(q, k, v, mask)[::-1], "in that order")


def test_causal_mask_without_the_diagonal():
    fn = lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1)  # noqa: E731
    failing("02.causal_mask", fn, "query 0 cannot see key 0 (itself)", "without its diagonal")


def test_causal_mask_one_key_too_wide():
    fn = lambda n: torch.ones(n, n, dtype=torch.bool).tril(1)  # noqa: E731
    failing("02.causal_mask", fn, "above the diagonal", "one key too wide")


def test_causal_mask_as_floats():
    failing("02.causal_mask", lambda n: torch.ones(n, n).tril(), "should be boolean")


def test_padding_mask_of_the_wrong_sign():
    fn = lambda tokens, pad_id: (tokens == pad_id)[:, None, None, :]  # noqa: E731
    failing("02.padding_mask", fn, "is a real token (5) but the mask hides it", "key_padding_mask")


def test_padding_mask_of_the_wrong_shape():
    failing("02.padding_mask", lambda tokens, pad_id: tokens != pad_id, "has shape (2, 5)", "(B, 1, 1, T)")


def test_padding_mask_with_pad_id_zero():
    fn = lambda tokens, pad_id: (tokens != 0)[:, None, None, :]  # noqa: E731
    text = failing("02.padding_mask", fn, "fixed at 0")
    assert text.startswith("02.padding_mask · the padding mask: 1/2")


# ---------------------------------------------------------------- 03


def split_heads(x, n_heads):
    b, t, c = x.shape
    return x.view(b, t, n_heads, c // n_heads).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def merge_without_transpose(x):
    b, h, t, d = x.shape
    return x.reshape(b, t, h * d)


def merge_d_before_h(x):
    b, h, t, d = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, t, h * d)


def mha(x_q, x_kv, q_proj, k_proj, v_proj, out_proj, n_heads, mask=None, merge=merge_heads):
    q, k, v = (split_heads(p(x), n_heads) for p, x in [(q_proj, x_q), (k_proj, x_kv), (v_proj, x_kv)])
    heads, weights = sdpa(q, k, v, mask)
    return out_proj(merge(heads)), weights


def test_split_heads_without_transpose():
    def fn(x, n_heads):
        b, t, c = x.shape
        return x.reshape(b, n_heads, t, c // n_heads)

    failing("03.split_heads", fn, "holds feature", "without the transpose")


def test_split_heads_left_as_b_t_h_d():
    fn = lambda x, n_heads: x.view(x.shape[0], x.shape[1], n_heads, -1)  # noqa: E731
    failing("03.split_heads", fn, "expected (B, H, T, D)", "next to the batch axis")


def test_merge_heads_without_transpose():
    failing("03.merge_heads", merge_without_transpose, "holds head", "without the transpose")


def test_merge_heads_in_d_h_order():
    failing("03.merge_heads", merge_d_before_h, "holds head", "(B, T, D, H)")


def test_merge_heads_with_view_after_transpose():
    def fn(x):
        b, h, t, d = x.shape
        return x.transpose(1, 2).view(b, t, h * d)

    failing("03.merge_heads", fn, "RuntimeError", "not contiguous")


def test_multi_head_merged_in_the_wrong_order():
    def fn(x_q, x_kv, q_proj, k_proj, v_proj, out_proj, n_heads, mask=None):
        return mha(x_q, x_kv, q_proj, k_proj, v_proj, out_proj, n_heads, mask, merge=merge_d_before_h)

    text = failing("03.multi_head", fn, "output differs", "merging with a transpose to (B, T, D, H)")
    assert text.count("merging with a transpose to (B, T, D, H)") == 3  # every case, the masked one included
    assert "attn_weights" not in text  # the weights of each head are right: only the merge is wrong


def test_multi_head_without_out_proj():
    def fn(x_q, x_kv, q_proj, k_proj, v_proj, out_proj, n_heads, mask=None):
        return mha(x_q, x_kv, q_proj, k_proj, v_proj, lambda t: t, n_heads, mask)

    failing("03.multi_head", fn, "output differs from the reference")


# ---------------------------------------------------------------- 04


def sinusoidal(seq_len, d_model, swap=False, check=True):
    if check and d_model % 2:
        raise ValueError("odd d_model")
    pos = torch.arange(seq_len)[:, None]
    freq = 10000 ** (-torch.arange(0, d_model, 2) / d_model)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = (torch.cos if swap else torch.sin)(pos * freq)
    pe[:, 1::2] = (torch.sin if swap else torch.cos)(pos * freq)
    return pe


def test_sinusoidal_sin_and_cos_swapped():
    failing("04.sinusoidal", lambda n, d: sinusoidal(n, d, swap=True), "sine and cosine swapped")


def test_sinusoidal_odd_d_model_not_refused():
    text = failing("04.sinusoidal", lambda n, d: sinusoidal(n, d, check=False), "should raise ValueError")
    assert "RuntimeError" in text  # the odd width fails later, with an error that does not say why


def test_sinusoidal_halves_instead_of_pairs():
    def fn(seq_len, d_model):
        angle = torch.arange(seq_len)[:, None] * 10000 ** (-torch.arange(0, d_model, 2) / d_model)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)

    failing("04.sinusoidal", fn, "they should alternate")


# ---------------------------------------------------------------- 05


def test_feed_forward_with_relu():
    failing("05.feed_forward", lambda x, l1, l2: l2(F.relu(l1(x))), "ReLU instead of GELU")


def test_layer_norm_with_unbiased_variance():
    def fn(x, gamma, beta, eps=1e-5):
        return gamma * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + beta

    failing("05.layer_norm", fn, "unbiased variance")


def test_layer_norm_with_eps_outside_the_root():
    def fn(x, gamma, beta, eps=1e-5):
        return gamma * (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) + beta

    text = failing("05.layer_norm", fn, "eps added after the square root")
    assert "largest difference 1.6" in text  # small spreads make the mistake large


def post_ln(x, attn, ff, norm1, norm2):
    x = norm1(x + attn(x))
    return norm2(x + ff(x))


def pre_ln(x, attn, ff, norm1, norm2):
    x = x + attn(norm1(x))
    return x + ff(norm2(x))


def test_post_ln_written_as_pre_ln():
    failing("05.post_ln_block", pre_ln, "a Pre-LN block", "returns norm2(norm1(x))")


def test_pre_ln_written_as_post_ln():
    failing("05.pre_ln_block", post_ln, "a Post-LN block", "returns x unchanged")


def test_post_ln_missing_the_norm_after_the_last_sum():
    def fn(x, attn, ff, norm1, norm2):
        x = norm1(x + attn(x))
        return x + ff(x)

    failing("05.post_ln_block", fn, "no LayerNorm after the second residual sum")


def test_post_ln_norm_inside_the_branch():
    def fn(x, attn, ff, norm1, norm2):
        x = x + norm1(attn(x))
        return x + norm2(ff(x))

    failing("05.post_ln_block", fn, "x + LN(f(x))")


def test_pre_ln_normalising_the_residual_stream():
    def fn(x, attn, ff, norm1, norm2):
        x = norm1(x)
        x = x + attn(x)
        x = norm2(x)
        return x + ff(x)

    text = failing("05.pre_ln_block", fn, "a normalised residual stream", "the residual stream passes through")
    assert "Post-LN" not in text  # it is a Pre-LN block with a normalised stream, not a Post-LN block


def test_pre_ln_with_the_norms_swapped():
    failing("05.pre_ln_block", lambda x, a, f, n1, n2: pre_ln(x, a, f, n2, n1), "norm1 and norm2 swapped")

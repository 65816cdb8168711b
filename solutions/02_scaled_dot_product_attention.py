# %% [markdown]
# # 02 · Exercises: scaled dot-product attention
#
# Companion of `notebooks/02_scaled_dot_product_attention.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/02_scaled_dot_product_attention.py` (or `make solution EX=02.sdpa`).

# %%
import math

import torch

torch.manual_seed(0)
q, k, v = (torch.randn(2, 1, 5, 8) for _ in range(3))  # (B, H, T, D): two sentences, one head
pad_id = 0
token_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, pad_id, pad_id]])  # (B, T): the second sentence has 3 tokens

# %% [markdown]
# ## 1. Scaled dot-product attention, with masks
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V$$
#
# - `q` (..., T_q, d_k), `k` (..., T_k, d_k), `v` (..., T_k, d_v): any number of leading batch axes.
# - `mask`, broadcastable to the scores (..., T_q, T_k), is either boolean (`True` where a query **may** attend: the
#   other scores become $-\infty$) or a float tensor added to the scores (0 keeps a key, $-\infty$ removes it).
# - A query whose keys are all masked has nothing to attend to: a softmax over a row of $-\infty$ is 0/0 = NaN.
#   The course's rule: such a query gets zero weights and a zero output.
# - Return `(output (..., T_q, d_v), attn_weights (..., T_q, T_k))`.


# %% exercise 02.sdpa
def scaled_dot_product_attention(q, k, v, mask=None):
    """Return (output, attn_weights) of softmax(q kᵀ / sqrt(d_k) + mask) v; a bool mask is True where q may attend."""
    # SOLUTION hint: scaled scores; -inf where a bool mask is False, or add a float one; softmax on keys; dead rows 0.
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, d_k) @ (..., d_k, T_k) -> (..., T_q, T_k)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight on a forbidden key
        else:
            scores = scores + mask  # an additive mask: 0 keeps a key, -inf removes it
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T_q, 1): queries left with no key
    attn_weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
    output = attn_weights @ v  # (..., T_q, T_k) @ (..., T_k, d_v) -> (..., T_q, d_v)
    # END SOLUTION
    return output, attn_weights


# %%
out, attn_weights = scaled_dot_product_attention(q, k, v)
print("out", tuple(out.shape), " attn_weights", tuple(attn_weights.shape))
print("every row of weights sums to 1:", torch.allclose(attn_weights.sum(-1), torch.ones(2, 1, 5)))

# %% [markdown]
# ## 2. The causal mask
#
# A language model predicts token $i+1$ from tokens $0..i$, so query $i$ may attend to key $j$ only when $j \le i$.
# Return a (seq_len, seq_len) boolean tensor, `True` where query $i$ may see key $j$: itself and every earlier token.


# %% exercise 02.causal_mask
def causal_mask(seq_len):
    """Return the (seq_len, seq_len) boolean mask that lets query i see keys 0..i."""
    # SOLUTION hint: a square of True, keeping the lower triangle and its diagonal.
    mask = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()  # True where key j <= query i
    # END SOLUTION
    return mask


# %%
print(causal_mask(5).int())
_, w_causal = scaled_dot_product_attention(q, k, v, mask=causal_mask(5))
print("largest weight above the diagonal:", w_causal.triu(diagonal=1).max().item())

# %% [markdown]
# ## 3. The padding mask
#
# Short sentences are filled up with a padding token `pad_id`, which no query should attend to.
# From token ids (B, T), return a boolean key mask of shape (B, 1, 1, T), `True` for real tokens and `False` for
# padding: the two axes of size 1 let it broadcast over the heads and the queries of the scores (B, H, T_q, T_k).


# %% exercise 02.padding_mask
def padding_mask(tokens, pad_id):
    """Return the (B, 1, 1, T) boolean key mask of tokens (B, T): True for real tokens, False for padding."""
    # SOLUTION hint: compare with pad_id, then add one axis for the heads and one for the queries.
    mask = (tokens != pad_id)[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
    # END SOLUTION
    return mask


# %%
pm = padding_mask(token_ids, pad_id)
print("padding mask", tuple(pm.shape), pm[:, 0, 0].int().tolist())
_, w_both = scaled_dot_product_attention(q, k, v, mask=pm & causal_mask(5))
print("weight on the padding of sentence 2:", w_both[1, 0, :, 3:].sum().item())

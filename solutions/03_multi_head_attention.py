# %% [markdown]
# # 03 · Exercises: multi-head attention
#
# Companion of `notebooks/03_multi_head_attention.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/03_multi_head_attention.py` (or `make solution EX=03.split_heads`).

# %%
import torch
from torch import nn

from helpers.attention import padding_mask, scaled_dot_product_attention  # 02's functions, as the course wrote them

B, T, C, H = 2, 6, 16, 4  # batch, tokens, d_model, n_heads
torch.manual_seed(0)
x = torch.randn(B, T, C, dtype=torch.float64)

# %% [markdown]
# ## 1. Split the features into heads
#
# One `Linear(C, C)` computes the queries of all heads side by side; head $h$ owns the features
# $h \cdot D$ to $(h+1) \cdot D - 1$, with $D$ = `d_head` = C / H (the layout of `nn.MultiheadAttention`).
# Turn (B, T, C) into (B, H, T, D), so that the heads sit next to the batch axis and one matrix product serves them all.


# %% exercise 03.split_heads
def split_heads(x, n_heads):
    """Return x (B, T, C) as (B, n_heads, T, d_head), head h holding features h*d_head to (h+1)*d_head - 1."""
    # SOLUTION hint: cut the last axis into (n_heads, d_head), then swap the token and head axes.
    b, t, c = x.shape
    heads = x.view(b, t, n_heads, c // n_heads).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
    # END SOLUTION
    return heads


# %% [markdown]
# ## 2. Merge the heads back
#
# The inverse: (B, H, T, D) to (B, T, H·D), head 0's D features first, then head 1's, and so on.


# %% exercise 03.merge_heads
def merge_heads(x):
    """Return x (B, H, T, D) as (B, T, H*D), the heads side by side in order."""
    # SOLUTION hint: bring the tokens back next to the batch axis, then join the last two axes.
    b, h, t, d = x.shape
    merged = x.transpose(1, 2).reshape(b, t, h * d)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
    # END SOLUTION
    return merged


# %%
heads = split_heads(x, H)
print("x", tuple(x.shape), "-> heads", tuple(heads.shape), "-> merged back", tuple(merge_heads(heads).shape))
print("head 1 holds features 4..7:", torch.equal(heads[:, 1], x[..., 4:8]))
print("merge_heads(split_heads(x)) == x:", torch.equal(merge_heads(heads), x))

# %% [markdown]
# ## 3. Multi-head attention
#
# $$\text{MultiHead}(X_q, X_{kv}) = \text{Concat}(\text{head}_1, \dots, \text{head}_H)\,W^O, \qquad
# \text{head}_h = \text{Attention}(X_q W^Q_h, X_{kv} W^K_h, X_{kv} W^V_h)$$
#
# - `x_q` (B, T_q, C) gives the queries, `x_kv` (B, T_k, C) the keys and values (the same tensor for self-attention).
# - `q_proj`, `k_proj`, `v_proj`, `out_proj` are `nn.Linear(C, C)` layers; the check copies them from an
#   `nn.MultiheadAttention` and compares your result with it.
# - `mask` is the course's boolean mask (True = may attend), broadcastable to (B, H, T_q, T_k), such as a padding mask.
# - Use your `split_heads` and `merge_heads`, and the course's `scaled_dot_product_attention` (imported above).
# - Return `(output (B, T_q, C), attn_weights (B, H, T_q, T_k))`: the weights of every head.


# %% exercise 03.multi_head
def multi_head_attention(x_q, x_kv, q_proj, k_proj, v_proj, out_proj, n_heads, mask=None):
    """Return (output (B, T_q, C), attn_weights (B, H, T_q, T_k)) of multi-head attention from x_q to x_kv."""
    # SOLUTION hint: project, split into heads, attend (heads act as a batch axis), merge, project with out_proj.
    q = split_heads(q_proj(x_q), n_heads)  # (B, T_q, C) -> (B, H, T_q, D)
    k = split_heads(k_proj(x_kv), n_heads)  # (B, T_k, C) -> (B, H, T_k, D)
    v = split_heads(v_proj(x_kv), n_heads)
    heads, attn_weights = scaled_dot_product_attention(q, k, v, mask=mask)  # (B, H, T_q, D), (B, H, T_q, T_k)
    output = out_proj(merge_heads(heads))  # (B, H, T_q, D) -> (B, T_q, C) -> (B, T_q, C)
    # END SOLUTION
    return output, attn_weights


# %%
ref = nn.MultiheadAttention(C, H, batch_first=True, dtype=torch.float64).eval()
q_proj, k_proj, v_proj, out_proj = (nn.Linear(C, C, dtype=torch.float64) for _ in range(4))
with torch.no_grad():  # nn.MultiheadAttention packs W^Q, W^K, W^V into one (3C, C) matrix
    for proj, w, b in zip([q_proj, k_proj, v_proj], ref.in_proj_weight.chunk(3), ref.in_proj_bias.chunk(3)):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    out_proj.load_state_dict(ref.out_proj.state_dict())
    memory_ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 0, 0, 0]])  # the second memory ends in padding
    memory = torch.randn(B, 7, C, dtype=torch.float64)
    ours, w_ours = multi_head_attention(x, memory, q_proj, k_proj, v_proj, out_proj, H, padding_mask(memory_ids, 0))
    theirs, w_theirs = ref(x, memory, memory, key_padding_mask=memory_ids == 0, average_attn_weights=False)
print("output", tuple(ours.shape), "weights", tuple(w_ours.shape))
print("equal to nn.MultiheadAttention:", torch.allclose(ours, theirs) and torch.allclose(w_ours, w_theirs))

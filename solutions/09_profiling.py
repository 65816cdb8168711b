# %% [markdown]
# # 09 · Exercises: attention block by block (FlashAttention's idea)
#
# Companion of `notebooks/09_profiling.ipynb`.
# Write the function in its cell, run the cell, then run the check cell below it.
# The reference solution is in `solutions/09_profiling.py` (or `make solution EX=09.blockwise`): try first.
#
# Notebook 09 measured that the memory of plain attention grows with $T^2$: the whole score matrix is stored.
# PyTorch's fused kernels never store it.
# They walk through the keys one block at a time and keep, for every query, three running quantities:
# the largest score seen so far $m$, the sum of exponentials so far $\ell$ (measured against $m$),
# and the weighted sum of values so far $a$ (also measured against $m$).
# When a new block brings a larger maximum $m'$, everything kept so far is rescaled by $e^{m - m'}$.
# At the end, $a / \ell$ is exactly $\text{softmax}(QK^\top/\sqrt{d_k})\,V$: the "online softmax".

# %%
import math

import torch
import torch.nn.functional as F

g = torch.Generator().manual_seed(0)
q = torch.randn(2, 7, 4, generator=g, dtype=torch.float64)  # (B, T, d_k)
k = torch.randn(2, 7, 4, generator=g, dtype=torch.float64)
v = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)  # (B, T, d_v)

# %% [markdown]
# ## Attention one block of keys at a time
#
# For each block of keys $K_b$ (and its values $V_b$): compute the block's scores $S_b = Q K_b^\top / \sqrt{d_k}$
# (shape `(..., T_q, block_size)`, never `(..., T_q, T_k)`), the new running maximum
# $m' = \max(m, \max_j S_b)$, then
# $\ell \leftarrow \ell\, e^{m - m'} + \sum_j e^{S_b - m'}$ and $a \leftarrow a\, e^{m - m'} + e^{S_b - m'} V_b$.
# With `causal=True`, query $i$ may only see keys $j \le i$ (queries and keys are the same positions).
# Start with $m = -\infty$, $\ell = 0$, $a = 0$; the last block may be shorter than `block_size`.


# %% exercise 09.blockwise
def blockwise_attention(q, k, v, block_size, causal=False):
    """Return softmax(q kᵀ / sqrt(d_k)) v for q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v), one block of
    block_size keys at a time with an online softmax (never the whole (T_q, T_k) score matrix)."""
    # SOLUTION hint: running max, sum and output per query; when the max grows, rescale them by exp(old_max - new_max)
    t_q, t_k = q.shape[-2], k.shape[-2]
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype)  # (..., T_q, 1) running max
    denom = torch.zeros_like(m)  # (..., T_q, 1) running sum of exp(score - m): the softmax's denominator
    acc = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)  # (..., T_q, d_v) running weighted values
    rows = torch.arange(t_q)[:, None] + (t_k - t_q)  # the key position each query sits at
    for start in range(0, t_k, block_size):
        kb, vb = k[..., start : start + block_size, :], v[..., start : start + block_size, :]
        s = q @ kb.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, d_k) @ (..., d_k, b) -> (..., T_q, b)
        if causal:
            cols = torch.arange(start, start + kb.shape[-2])[None, :]
            s = s.masked_fill(cols > rows, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        m_safe = m_new.masked_fill(torch.isinf(m_new), 0.0)  # a row with nothing seen yet: avoid inf - inf
        rescale = torch.exp(m - m_safe)  # exp(-inf) = 0 on the first block
        p = torch.exp(s - m_safe)  # (..., T_q, b)
        denom = denom * rescale + p.sum(dim=-1, keepdim=True)
        acc = acc * rescale + p @ vb  # (..., T_q, b) @ (..., b, d_v) -> (..., T_q, d_v)
        m = m_new
    return acc / denom
    # END SOLUTION


# %%
out = blockwise_attention(q, k, v, block_size=3, causal=True)
print((out - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max())  # about 1e-16

# %% [markdown]
# # 01 · Exercises: attention by hand
#
# Companion of `notebooks/01_attention_by_hand.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/01_attention_by_hand.py` (or `make solution EX=01.one_query`): try first.

# %%
import math

import torch

# The three tokens of notebook 01, as rows: "the", "cat", "sat".
queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])  # (T, d_k) = (3, 2)
keys = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # (T, d_k)
values = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # (T, d_v)

# %% [markdown]
# ## 1. One query, step by step
#
# For one query $q$ and the keys $k_j$: the score is $q \cdot k_j$,
# the scaled score is $z_j = q \cdot k_j / \sqrt{d_k}$,
# the weights are $w_j = e^{z_j} / \sum_i e^{z_i}$, and the output is $\sum_j w_j v_j$.
# Use plain Python loops or tensor operations, as you like; `torch.softmax` is not needed.


# %% exercise 01.one_query
def attend_one(query, keys, values):
    """Return (weights (T,), output (d_v,)) of one query (d_k,) over keys (T, d_k) and values (T, d_v)."""
    # SOLUTION hint: dot products q·k_j divided by sqrt(d_k); exponentiate, divide by the sum, mix the values.
    d_k = query.shape[-1]
    scores = torch.stack([(query * k).sum() for k in keys]) / math.sqrt(d_k)  # (T,)
    exps = torch.exp(scores - scores.max())  # subtracting the max changes nothing but avoids overflow
    weights = exps / exps.sum()  # (T,)
    output = (weights[:, None] * values).sum(dim=0)  # (T, 1) * (T, d_v) -> (d_v,)
    # END SOLUTION
    return weights, output


# %%
print(attend_one(queries[2], keys, values))  # "sat": weights about (0.046, 0.768, 0.186)

# %% [markdown]
# ## 2. Every query at once
#
# The same computation for all queries is three matrix operations:
# $\text{softmax}(Q K^\top / \sqrt{d_k})\, V$, with the softmax taken over the keys (each row of weights sums to 1).


# %% exercise 01.all_queries
def attention_by_hand(queries, keys, values):
    """Return (output (T_q, d_v), weights (T_q, T_k)) of softmax(Q Kᵀ / sqrt(d_k)) V."""
    # SOLUTION hint: one matrix product for the scores (T_q, T_k), the scaling, a softmax along the keys, then V.
    d_k = queries.shape[-1]
    scores = queries @ keys.T / math.sqrt(d_k)  # (T_q, d_k) @ (d_k, T_k) -> (T_q, T_k)
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    output = weights @ values  # (T_q, T_k) @ (T_k, d_v) -> (T_q, d_v)
    # END SOLUTION
    return output, weights


# %%
output, weights = attention_by_hand(queries, keys, values)
print(weights)

# %% [markdown]
# # 07 · Exercises: sampling and a KV cache
#
# Companion of `notebooks/07_generation.ipynb`: the decoding strategies and the KV cache, written by you.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/07_generation.py` (or `make solution EX=07.top_p`): try first.

# %%
import inspect
import math

import torch

from helpers.models import TinyDecoder  # the one-head decoder of exercise 5 (its source is printed there)

# Next-token logits over a vocabulary of 5 tokens, as in notebook 07: probabilities 0.05, 0.5, 0.1, 0.3, 0.05.
logits = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05]).log()  # (vocab_size,)

# %% [markdown]
# ## 1. Greedy
#
# Greedy decoding always takes the most likely next token: the index of the largest logit of each row.
# Return the token ids, shape `(...)` for logits `(..., vocab_size)`, as integers (`torch.long`).


# %% exercise 07.greedy
def greedy_next(logits):
    """The id of the largest logit along the last axis: (..., vocab_size) -> (...)."""
    # SOLUTION hint: the position of the largest value along the vocabulary axis (not its value).
    ids = logits.argmax(dim=-1)
    # END SOLUTION
    return ids


# %%
print(greedy_next(logits))  # token 1, the one with probability 0.5

# %% [markdown]
# ## 2. Temperature
#
# Dividing the logits by a temperature τ before the softmax reshapes the distribution:
# τ < 1 sharpens it towards greedy, τ > 1 flattens it towards uniform, $p_i = \frac{e^{z_i / τ}}{\sum_j e^{z_j / τ}}$.
# Return the probabilities, same shape as the logits `(..., vocab_size)`, the softmax taken over the last axis.
# Mind large logits: `exp` of a few hundred overflows to infinity.


# %% exercise 07.temperature
def temperature_probs(logits, temperature):
    """Probabilities (..., vocab_size) of logits (..., vocab_size) divided by temperature (> 0)."""
    # SOLUTION hint: scale the logits first, then a softmax over the vocabulary (subtract the row maximum before exp).
    scaled = logits / temperature
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # the same softmax, without overflow
    exps = torch.exp(scaled)
    probs = exps / exps.sum(dim=-1, keepdim=True)
    # END SOLUTION
    return probs


# %%
for tau in (0.5, 1.0, 2.0):
    print(f"τ = {tau}:", [round(p, 3) for p in temperature_probs(logits, tau).tolist()])

# %% [markdown]
# ## 3. Top-k
#
# Top-k keeps the k most likely tokens and sets every other logit to −∞, so that the softmax gives them probability 0.
# Work on the last axis of `(..., vocab_size)`; a logit equal to the k-th largest is kept too (ties are kept).
# Return the filtered logits: the kept ones unchanged, the others `-inf`.


# %% exercise 07.top_k
def top_k_filter(logits, k):
    """Keep the k largest logits along the last axis (and any tied with the k-th); set the rest to -inf."""
    # SOLUTION hint: find the k-th largest value of each row; every logit below it becomes -inf.
    kth_largest = torch.sort(logits, dim=-1, descending=True).values[..., k - 1 : k]  # (..., 1)
    filtered = logits.masked_fill(logits < kth_largest, float("-inf"))
    # END SOLUTION
    return filtered


# %%
print(top_k_filter(logits, 2))

# %% [markdown]
# ## 4. Top-p (nucleus)
#
# Top-p keeps the smallest set of most likely tokens whose probabilities add up to at least p.
# Sort the tokens from the most likely down and keep them until the running total reaches p, *including* the token
# that makes it reach p; the most likely token is therefore always kept.
# The number kept adapts to how sure the model is.
# Work on the last axis of `(..., vocab_size)` and return the filtered logits in the original (vocabulary) order,
# the kept ones unchanged, the dropped ones `-inf`.


# %% exercise 07.top_p
def top_p_filter(logits, p):
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p; set the rest to -inf."""
    # SOLUTION hint: sort by probability; a token stays if the tokens more likely than it hold less than p; unsort.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of the strictly more likely tokens
    drop_sorted = mass_before >= p  # the token that crosses p has mass_before < p: it stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    filtered = logits.masked_fill(drop, float("-inf"))
    # END SOLUTION
    return filtered


# %%
for p in (0.3, 0.7, 0.9):
    print(f"p = {p}:", top_p_filter(logits, p))

# %% [markdown]
# ## 5. One step with a KV cache
#
# `TinyDecoder` (in `helpers/models.py`) is a one-block, one-head causal decoder: token embeddings plus
# *learned* position embeddings, one causal self-attention with a residual, and an output layer.
# Its `forward(idx)`, printed below, recomputes every position: read it first.
# With a cache, a step feeds only the new tokens `new_ids (B, T_new)`:
# their positions continue after the `T_cached` cached ones, their keys and values are appended to the cache,
# and their queries attend to all cached keys plus the new keys up to their own position.
# The cache is `None` before the first step, then a dict `{"k": (B, T_cached, d_model), "v": (B, T_cached, d_model)}`.
# Return `(logits (B, T_new, vocab_size), the new cache)`; the logits must equal `model(all ids so far)[:, -T_new:]`.

# %%
print(inspect.getsource(TinyDecoder))


# %% exercise 07.kv_cache
def step_with_cache(model, new_ids, cache):
    """Run new_ids (B, T_new) through model with the KV cache; return (logits (B, T_new, vocab_size), new cache)."""
    # SOLUTION hint: positions start at the cache length; append the new k, v; a new query sees all keys up to its own.
    offset = 0 if cache is None else cache["k"].shape[1]  # T_cached
    t_new = new_ids.shape[1]
    positions = torch.arange(offset, offset + t_new, device=new_ids.device)
    x = model.tok_emb(new_ids) + model.pos_emb(positions)  # (B, T_new, C)
    q, k, v = model.q_proj(x), model.k_proj(x), model.v_proj(x)  # (B, T_new, C) each
    if cache is not None:
        k = torch.cat([cache["k"], k], dim=1)  # (B, T_cached + T_new, C)
        v = torch.cat([cache["v"], v], dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T_new, C) @ (B, C, T_all) -> (B, T_new, T_all)
    allowed = torch.ones(t_new, offset + t_new, dtype=torch.bool, device=new_ids.device).tril(offset)
    attn_weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    logits = model.lm_head(x + attn_weights @ v)  # (B, T_new, vocab_size)
    cache = {"k": k, "v": v}
    # END SOLUTION
    return logits, cache


# %%
decoder = TinyDecoder()
ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])  # (B, T) = (1, 8)
with torch.no_grad():
    full = decoder(ids)  # (1, 8, vocab_size), no cache
    step_logits, cache = step_with_cache(decoder, ids[:, :5], None)  # the prompt fills the cache
    for t in range(5, 8):  # then one token at a time
        step_logits, cache = step_with_cache(decoder, ids[:, t : t + 1], cache)
        print(f"position {t}: same logits as recomputing:", torch.allclose(step_logits[:, -1], full[:, t], atol=1e-6))
print("cache:", tuple(cache["k"].shape))

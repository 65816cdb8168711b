# %% [markdown]
# # 06 · Exercises: training a character-level GPT
#
# Companion of `notebooks/06_char_gpt.ipynb`: the pieces of a training run, written by you.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/06_char_gpt.py` (or `make solution EX=06.lm_loss`): try first.

# %%
import math

import torch

from helpers.models import GPT, GPTConfig

# A toy "text" of 50 ids counting 0..12 over and over, and a tiny GPT to train on it (notebook 06's, much smaller).
data = torch.arange(50) % 13  # (N,) token ids: a repeating pattern a model can learn
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=13, block_size=8, d_model=32, n_heads=2, n_layers=1, dropout=0.0))

# %% [markdown]
# ## 1. Windows and their targets
#
# A training example is a window of `block_size` ids; its targets are the same window shifted by one,
# so that at every position the model predicts the next id: one window holds `block_size` examples.
# Given the start of each window, return `x` and `y`, both `(B, block_size)` with `B = len(starts)`:
# `x[i]` is `data[starts[i] : starts[i] + block_size]`, `y[i]` the ids one position further on.


# %% exercise 06.batch
def make_batch(data, starts, block_size):
    """Return (x, y), each (B, block_size): the windows of data (N,) at starts (B,) and their next-id targets."""
    # SOLUTION hint: add an arange of the positions to each start, index data with it; the targets are one id further.
    offsets = starts[:, None] + torch.arange(block_size)  # (B, 1) + (T,) -> (B, T)
    x = data[offsets]  # (B, T)
    y = data[offsets + 1]  # (B, T): the next id at every position
    # END SOLUTION
    return x, y


# %%
x, y = make_batch(data, torch.tensor([0, 20]), block_size=8)
print(x)
print(y)

# %% [markdown]
# ## 2. The language-model loss
#
# The model gives logits `(B, T, vocab_size)`: a score for every possible next id, at every position.
# The loss is the cross-entropy averaged over all `B · T` positions,
# $L = -\frac{1}{BT} \sum_{b,t} \log \text{softmax}(\text{logits}_{b,t})[y_{b,t}]$.
# Return it as a scalar tensor (so that `backward()` can run).
# Write it with `torch.log_softmax`; `torch.nn.functional.cross_entropy` computes the same, with the classes on axis 1.
# A model that knows nothing gives every id the same probability: a loss of ln(vocab_size).


# %% exercise 06.lm_loss
def lm_loss(logits, targets):
    """Mean cross-entropy of logits (B, T, vocab_size) against targets (B, T), as a scalar tensor."""
    # SOLUTION hint: a log-softmax over the vocabulary, pick the log-probability of each target, negate, average.
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    picked = log_probs.gather(-1, targets[..., None])[..., 0]  # (B, T, 1) -> (B, T): log p(target)
    loss = -picked.mean()  # over all B * T positions
    # END SOLUTION
    return loss


# %%
logits, _ = model(x)
print(f"loss at initialisation: {lm_loss(logits, y).item():.4f}, ln 13 = {math.log(13):.4f}")

# %% [markdown]
# ## 3. One training step
#
# A step is: clear the gradients of the previous step, forward, the loss, backward, the optimiser's update.
# `backward()` *adds* to each parameter's `.grad`, so a step that does not clear them mixes in the old gradients.
# `model(x, y)` returns `(logits, loss)` like the course's `GPT`.
# Return the loss of the batch (computed before the update) as a Python float.
# The course's `helpers.training.train_step` adds gradient clipping and a learning-rate schedule around the same steps.


# %% exercise 06.train_step
def train_step(model, optimizer, x, y):
    """One optimiser step on the batch (x, y), both (B, T); return the batch's loss as a float."""
    # SOLUTION hint: clear the old gradients, forward to get the loss, backward, step the optimiser.
    model.train()
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)  # logits (B, T, vocab_size) and the mean cross-entropy
    loss.backward()  # a .grad for every parameter
    optimizer.step()
    # END SOLUTION
    return loss.item()


# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
starts = torch.arange(0, 40, 5)  # 8 windows
x, y = make_batch(data, starts, block_size=8)
losses = [train_step(model, optimizer, x, y) for _ in range(30)]
print(f"loss: {losses[0]:.3f} at the first step, {losses[-1]:.3f} after 30 steps on the same batch")

# %% [markdown]
# ## 4. Warm-up, then cosine decay
#
# The learning rate rises linearly for `warmup_steps` steps, then follows half a cosine from `max_lr` down to `min_lr`
# at `total_steps`, and stays at `min_lr` after that. Steps count from 0, and step 0 is the first warm-up step:
# during the warm-up (`step < warmup_steps`) the rate is `max_lr · (step + 1) / warmup_steps`.
# After it, with `progress = (step - warmup_steps) / (total_steps - warmup_steps)`, capped at 1, the rate is
# $\text{min\_lr} + (\text{max\_lr} - \text{min\_lr}) \cdot \tfrac12 \big(1 + \cos(\pi \cdot \text{progress})\big)$.
# This is `helpers.training.warmup_cosine(step, warmup_steps, total_steps, min_lr / max_lr) * max_lr`.


# %% exercise 06.warmup_cosine
def lr_at(step, max_lr, warmup_steps, total_steps, min_lr):
    """The learning rate (a float) at optimiser step `step` of a linear warm-up, then a cosine decay.

    Steps count from 0. While step < warmup_steps: max_lr * (step + 1) / warmup_steps (max_lr at the last warm-up
    step). Then half a cosine from max_lr at step warmup_steps to min_lr at step total_steps, and min_lr after that.
    """
    # SOLUTION hint: a straight line that reaches max_lr at the last warm-up step; then half a cosine, held at its end.
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    lr = min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # END SOLUTION
    return lr


# %%
print([round(lr_at(s, 1e-3, 4, 12, 1e-4), 6) for s in range(14)])

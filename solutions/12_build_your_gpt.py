# %% [markdown]
# # 12 · Capstone: build your own GPT
#
# No new idea here: every piece was in notebooks 01-07. This time you write a whole character-level GPT, its
# optimiser and its training loop yourself, with nothing from the course's `helpers` but the batches.
# Write each part in its cell, run it, then run the check below it; the last checks grade your parts together.
# The reference solutions are in `solutions/12_build_your_gpt.py` (or `make solution EX=12.gpt`): try first.
# You may reuse your answers to the earlier exercises (05.layer_norm, 06.train_step, 07.temperature...).
#
# ## What to build
#
# ```
#   idx (B, T) token ids
#     │
#     ├─ tok_emb: token id → vector (B, T, C)
#     ├─ + pos_emb: position t → vector (T, C), added to every row
#     ├─ dropout
#     │
#     │   ┌──────────── Block × n_layers ────────────┐
#     │   │  x = x + drop(self_attn(norms[0](x)))    │   causal: position t sees positions 0..t
#     │   │  x = x + drop(ff(norms[1](x)))           │   ff: Linear(C, 4C) → GELU → Linear(4C, C)
#     │   └──────────────────────────────────────────┘
#     │
#     ├─ norm: the final LayerNorm
#     └─ lm_head: Linear(C, vocab_size), no bias, the SAME matrix as tok_emb (tied)
#          │
#   logits (B, T, vocab_size), and with targets (B, T) the mean cross-entropy
# ```
#
# Shapes: B windows of T ≤ block_size ids; C = d_model; H = n_heads heads of D = C / H features each.
# The targets come from the batch already shifted: `y[b, t]` is the id that follows `x[b, t]`.
#
# ## The parameter names
#
# Your `GPT` must hold exactly the parameters of the course's `helpers.models.GPT`, under the same names, so that
# `your_model.load_state_dict(course_model.state_dict())` works (the checks load the course's weights into yours):
#
# ```
# tok_emb.weight                (vocab_size, C)
# pos_emb.embedding.weight      (block_size, C)
# blocks.{i}.norms.0.weight     (C,)    blocks.{i}.norms.0.bias     (C,)      before attention
# blocks.{i}.norms.1.weight     (C,)    blocks.{i}.norms.1.bias     (C,)      before the feed-forward
# blocks.{i}.self_attn.{q,k,v,out}_proj.weight  (C, C)   and .bias  (C,)
# blocks.{i}.ff.linear1.weight  (4C, C)  blocks.{i}.ff.linear1.bias  (4C,)
# blocks.{i}.ff.linear2.weight  (C, 4C)  blocks.{i}.ff.linear2.bias  (C,)
# norm.weight                   (C,)    norm.bias                   (C,)
# lm_head.weight                (vocab_size, C), the same tensor as tok_emb.weight
# ```
#
# `nn.Linear`, `nn.Embedding`, `nn.Dropout`, `nn.ModuleList` and `nn.ModuleDict` hold the parameters; the computations
# are yours: no `torch.softmax`, `F.cross_entropy`, `nn.LayerNorm`, `F.gelu`, `F.scaled_dot_product_attention`,
# `torch.optim.AdamW` or `clip_grad_norm_` (the checks compare you with them).
#
# ## The order to work in
#
# 1. `softmax` and `cross_entropy`, stable for logits as large as 1e4;
# 2. `LayerNorm`, `CausalSelfAttention`, `FeedForward`, then `Block`, each checked against PyTorch on its own;
# 3. `GPT`: the check loads the course's weights into yours and compares logits, gradients and causality;
# 4. `decay_groups`, `AdamW`, `clip_grad_norm`, `lr_at`: the optimiser and its helpers, each against PyTorch;
# 5. `train`: your loop, first on the course's model against PyTorch's, then your model against the course's;
# 6. `generate`: sample new characters from your trained model;
# 7. `char_tokenizer`: then the last check trains your whole GPT on Tiny Shakespeare beside the course's.

# %%
import math

import torch
from torch import nn

from helpers.course.datasets import get_batch  # random windows x (B, T) and their next-id targets y (B, T)


class Config:
    """The sizes of a GPT (the course's helpers.models.GPTConfig has the same fields)."""

    def __init__(self, vocab_size=27, block_size=16, d_model=32, n_heads=4, n_layers=2, dropout=0.0):
        self.vocab_size, self.block_size, self.dropout = vocab_size, block_size, dropout
        self.d_model, self.n_heads, self.n_layers = d_model, n_heads, n_layers
        self.d_ff = 4 * d_model  # the feed-forward hidden width


# A small text to train on: its characters are the vocabulary.
text = "the cat sat on the mat and the dog sat on the log " * 40
chars = sorted(set(text))
data = torch.tensor([chars.index(ch) for ch in text])  # (N,) ids
cfg = Config(vocab_size=len(chars))

# %% [markdown]
# ## 1. Softmax without overflow
#
# $\text{softmax}(z)_i = e^{z_i} / \sum_j e^{z_j}$ over the last axis. `exp(1e4)` is infinite in any float type, and
# inf / inf is NaN; the softmax does not change when the same number is subtracted from every logit of a row.


# %% exercise 12.softmax
def softmax(x):
    """Softmax of x (..., n) over the last axis, finite for logits as large as 1e4."""
    # SOLUTION hint: subtract each row's maximum before the exponential; then divide by the row's sum.
    shifted = x - x.max(dim=-1, keepdim=True).values  # the largest logit of each row becomes 0: exp <= 1
    exps = torch.exp(shifted)
    probs = exps / exps.sum(dim=-1, keepdim=True)
    # END SOLUTION
    return probs


# %%
print(softmax(torch.tensor([[1.0, 2.0, 3.0], [1e4, 0.0, -1e4]])))

# %% [markdown]
# ## 2. Cross-entropy from logits
#
# For logits `(N, V)` and target ids `(N,)`, the mean over the rows of $-\log \text{softmax}(z)_{y}$.
# Compute the log-probabilities directly, $\log \text{softmax}(z)_i = z_i - m - \log \sum_j e^{z_j - m}$ with $m$ the
# row maximum: `log(softmax(z))` gives `log(0) = -inf` for a logit far below the largest. Return a scalar tensor.


# %% exercise 12.cross_entropy
def cross_entropy(logits, targets):
    """Mean cross-entropy of logits (N, V) against target ids (N,), as a scalar tensor; stable for logits of 1e4."""
    # SOLUTION hint: log-softmax as the logit minus the row maximum minus the log of the sum of shifted exponentials.
    m = logits.max(dim=-1, keepdim=True).values  # (N, 1)
    log_probs = logits - m - torch.log(torch.exp(logits - m).sum(dim=-1, keepdim=True))  # (N, V)
    loss = -log_probs.gather(-1, targets[:, None]).mean()  # (N, 1) -> a scalar
    # END SOLUTION
    return loss


# %%
print(cross_entropy(torch.tensor([[1e4, 0.0], [0.0, 1e4]]), torch.tensor([0, 0])))  # 0 and 1e4: a mean of 5000

# %% [markdown]
# ## 3. LayerNorm
#
# Normalise each vector of the last axis to mean 0 and variance 1 (the biased variance, dividing by C), with `eps`
# inside the square root, then scale by `weight` (ones at first) and shift by `bias` (zeros): both `(C,)` parameters.


# %% exercise 12.layer_norm
class LayerNorm(nn.Module):
    """LayerNorm over the last axis with parameters weight (C,) and bias (C,)."""

    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        """(..., C) -> (..., C)."""
        # SOLUTION hint: the mean and the biased variance of the last axis; eps under the square root; then the gain.
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # divided by C, not C - 1
        out = (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        # END SOLUTION
        return out


# %% [markdown]
# ## 4. Causal multi-head self-attention
#
# Project x `(B, T, C)` to queries, keys and values with `q_proj`, `k_proj`, `v_proj` (each `nn.Linear(C, C)`), split
# C into H heads of D features `(B, H, T, D)`, score every query against every key with $q k^T / \sqrt{D}$, give the
# keys after the query a score of $-\infty$, take your softmax over the keys, apply dropout to the weights, average
# the values, merge the heads back to `(B, T, C)` and project with `out_proj`.


# %% exercise 12.attention
class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention: (B, T, C) -> (B, T, C), with q_proj, k_proj, v_proj and out_proj."""

    def __init__(self, d_model, n_heads, dropout=0.0):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """(B, T, C) -> (B, T, C); position t attends to positions 0..t."""
        # SOLUTION hint: split the projections into heads, scale the scores, hide the later keys, softmax, merge.
        b, t, c = x.shape
        q, k, v = (
            proj(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # query i sees keys 0..i
        weights = self.drop(softmax(scores.masked_fill(~causal, float("-inf"))))
        out = (weights @ v).transpose(1, 2).reshape(b, t, c)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        out = self.out_proj(out)
        # END SOLUTION
        return out


# %% [markdown]
# ## 5. The feed-forward block
#
# `linear1` widens each position's vector from C to d_ff, GELU bends it, dropout, `linear2` brings it back to C.
# GELU is $x \cdot \Phi(x) = \tfrac12 x \big(1 + \text{erf}(x / \sqrt 2)\big)$ (`torch.erf`), PyTorch's exact GELU.


# %% exercise 12.feed_forward
class FeedForward(nn.Module):
    """Linear(C, d_ff) -> GELU -> dropout -> Linear(d_ff, C), position by position."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """(B, T, C) -> (B, T, d_ff) -> (B, T, C)."""
        # SOLUTION hint: widen, the exact GELU (with erf), dropout, narrow back.
        h = self.linear1(x)
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        out = self.linear2(self.drop(h))
        # END SOLUTION
        return out


# %% [markdown]
# ## 6. The Pre-LN block
#
# `norms` is an `nn.ModuleList` of two `LayerNorm`s; `self_attn` and `ff` are your modules of 4 and 5; a dropout on
# each residual branch. Pre-LN: each sublayer reads a normalised copy of x, and its output is added to x itself.


# %% exercise 12.block
class Block(nn.Module):
    """x + drop(self_attn(norms[0](x))), then x + drop(ff(norms[1](x))): (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg):
        super().__init__()
        self.norms = nn.ModuleList([LayerNorm(cfg.d_model), LayerNorm(cfg.d_model)])
        self.self_attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        """(B, T, C) -> (B, T, C)."""
        # SOLUTION hint: normalise what goes into each sublayer, and add the sublayer's output to the untouched input.
        x = x + self.drop(self.self_attn(self.norms[0](x)))
        x = x + self.drop(self.ff(self.norms[1](x)))
        # END SOLUTION
        return x


# %% [markdown]
# ## 7. The GPT
#
# Everything together, under the names of the handout: `tok_emb`, `pos_emb` (an `nn.ModuleDict` holding an
# `nn.Embedding` named `embedding`, so that its weight is `pos_emb.embedding.weight`), a dropout, `blocks`, `norm`, and
# `lm_head` whose weight *is* `tok_emb.weight` (one tensor, two uses). Initialise the matrices with Normal(0, 0.02).
# `forward(idx, targets=None)` returns `(logits, loss)`: logits `(B, T, vocab_size)`, and the mean cross-entropy of
# all B·T positions against `targets` (B, T), computed with your `cross_entropy`, or None without targets.


# %% exercise 12.gpt
class GPT(nn.Module):
    """Token + position embeddings, Pre-LN blocks, a final LayerNorm and a tied head: idx (B, T) -> (logits, loss)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)  # on the sum of the embeddings
        # SOLUTION hint: the modules under the handout's names; the head's weight is the token table itself.
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.ModuleDict({"embedding": nn.Embedding(cfg.block_size, cfg.d_model)})
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one tensor
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # END SOLUTION

    def forward(self, idx, targets=None):
        """idx (B, T) -> logits (B, T, vocab_size) and the mean cross-entropy against targets (B, T), or None."""
        # SOLUTION hint: embed tokens and positions, run the blocks, normalise, project; the loss over all positions.
        b, t = idx.shape
        if t > self.cfg.block_size:
            raise ValueError(f"{t} positions exceed block_size={self.cfg.block_size}")
        positions = torch.arange(t, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb["embedding"](positions))  # (B, T, C) + (T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.reshape(b * t, -1), targets.reshape(b * t))
        # END SOLUTION
        return logits, loss


# %%
torch.manual_seed(0)
model = GPT(cfg)
print(sum(p.numel() for p in model.parameters()), "parameters")

# %% [markdown]
# ## 8. Which parameters decay
#
# Weight decay pulls weights towards 0. It belongs on the matrices of the linear layers only: not on the LayerNorm
# gains and biases, nor on any bias, nor on the embeddings (the tied head's matrix *is* the token embedding, so it does
# not decay either). Return two groups, as `torch.optim` takes them:
# `[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]`, each parameter once.


# %% exercise 12.decay_groups
def decay_groups(model, weight_decay):
    """Two parameter groups: the Linear weights (decayed) and everything else (not decayed), each parameter once."""
    # SOLUTION hint: collect the embeddings' tables first; then a weight of a linear layer that is not one of them.
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    decay = [p for p in model.parameters() if id(p) in linear and id(p) not in embeddings]
    no_decay = [p for p in model.parameters() if id(p) not in linear or id(p) in embeddings]
    # END SOLUTION
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# %% [markdown]
# ## 9. AdamW
#
# For each parameter p with gradient g, at its step t = 1, 2, ..., with its group's lr, betas (β1, β2), eps and
# weight_decay (wd):
# $m \leftarrow β_1 m + (1 - β_1) g$, $v \leftarrow β_2 v + (1 - β_2) g^2$,
# $\hat m = m / (1 - β_1^t)$, $\hat v = v / (1 - β_2^t)$,
# $p \leftarrow p - \text{lr} \cdot \text{wd} \cdot p - \text{lr} \cdot \hat m / (\sqrt{\hat v} + \text{eps})$
# (the decay is decoupled: it shrinks p directly, never enters m or v).
# `torch.optim.Optimizer` keeps the groups, `self.state` and `zero_grad()`; you write `step()`. Read each group's
# `lr` at every step: a schedule changes it between steps.


# %% exercise 12.adamw
class AdamW(torch.optim.Optimizer):
    """AdamW: Adam's moments with bias correction, and weight decay applied to the weights directly."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient (closure: unused, for torch.optim's interface)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # SOLUTION hint: two running averages per parameter, each divided by (1 - beta^t); shrink p by lr * wd.
                state = self.state[p]
                if not state:
                    state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                state["t"] += 1
                t, m, v = state["t"], state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                p.mul_(1 - lr * wd)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
                # END SOLUTION


# %% [markdown]
# ## 10. Clipping by the global norm
#
# The global norm is the length of all the gradients seen as one vector, $\sqrt{\sum_p \lVert g_p \rVert^2}$.
# When it exceeds `max_norm`, scale every gradient by the same factor `max_norm / (norm + 1e-6)`; otherwise leave them.
# Return the norm measured before clipping, as a tensor (as `torch.nn.utils.clip_grad_norm_` does).


# %% exercise 12.clip
def clip_grad_norm(params, max_norm):
    """Scale the gradients of params together so their global norm is at most max_norm; return the norm before."""
    # SOLUTION hint: one norm over every gradient at once, then one common factor, capped at 1.
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads))
    factor = min(1.0, max_norm / (float(total) + 1e-6))
    for g in grads:
        g.mul_(factor)
    # END SOLUTION
    return total


# %% [markdown]
# ## 11. Warm-up, then cosine
#
# As in exercise 06.warmup_cosine: `max_lr * (step + 1) / warmup_steps` while `step < warmup_steps`, then half a
# cosine from `max_lr` to `min_lr` at `total_steps`, held at `min_lr` after it. Steps count from 0.


# %% exercise 12.schedule
def lr_at(step, max_lr, warmup_steps, total_steps, min_lr):
    """The learning rate of optimiser step `step` (from 0): a linear warm-up, then a cosine decay held at min_lr."""
    # SOLUTION hint: a line up to max_lr at the last warm-up step; then half a cosine over the rest, then flat.
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    lr = min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    # END SOLUTION
    return lr


# %% [markdown]
# ## 12. The training loop
#
# Train `model` for `steps` steps and return the list of the batches' losses (Python floats, before each update).
# Build `AdamW(decay_groups(model, weight_decay), lr=max_lr, betas=(0.9, 0.95))`; then at every step, in this order:
# set every group's `lr` to `lr_at(step, max_lr, warmup_steps, steps, min_lr)`; draw
# `x, y = get_batch(data, batch_size, model.cfg.block_size, generator)`; clear the gradients; forward with the targets;
# backward; `clip_grad_norm(model.parameters(), max_norm)`; the optimiser's step. The check runs it on the course's GPT
# against PyTorch's AdamW, clipping and the course's schedule, then on your GPT against the course's.


# %% exercise 12.train
def train(model, data, steps, batch_size, max_lr, warmup_steps, min_lr, weight_decay, max_norm, generator):
    """Train model on random windows of data (N,) for `steps` steps; return the losses (floats), one per step."""
    # SOLUTION hint: the learning rate of this step first, then the batch, clear, forward, backward, clip, step.
    optimizer = AdamW(decay_groups(model, weight_decay), lr=max_lr, betas=(0.9, 0.95))
    model.train()
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, max_lr, warmup_steps, steps, min_lr)
        x, y = get_batch(data, batch_size, model.cfg.block_size, generator)  # (B, T) each; y is x shifted by one
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        clip_grad_norm(model.parameters(), max_norm)
        optimizer.step()
        losses.append(loss.item())
    # END SOLUTION
    return losses


# %%
losses = train(model, data, 60, 8, 1e-2, 6, 1e-3, 0.1, 1.0, torch.Generator().manual_seed(0))
print(f"loss {losses[0]:.3f} at the first step, {losses[-1]:.3f} at the last (untrained: {math.log(len(chars)):.3f})")

# %% [markdown]
# ## 13. Sampling
#
# Extend `idx` (B, T) by `max_new_tokens` ids, one at a time: run the model on the last `block_size` ids at most, take
# the logits of the last position divided by `temperature`, your softmax, and draw the next id with
# `torch.multinomial(probs, 1, generator=generator)`; append it and go on. Evaluation mode, and no gradients.


# %% exercise 12.sample
@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature, generator):
    """idx (B, T) -> (B, T + max_new_tokens): the prompt followed by the sampled ids."""
    # SOLUTION hint: crop the context to the model's window, the last position's logits over the temperature, draw.
    model.eval()
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.cfg.block_size :])  # (B, T', vocab_size)
        probs = softmax(logits[:, -1, :] / temperature)  # (B, vocab_size)
        next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)
    # END SOLUTION
    return idx


# %%
prompt = torch.tensor([[chars.index(ch) for ch in "the "]])
out = generate(model, prompt, 40, 0.8, torch.Generator().manual_seed(0))
print("".join(chars[i] for i in out[0].tolist()))

# %% [markdown]
# ## 14. It trains: your GPT on Tiny Shakespeare
#
# The last piece turns text into ids and back: `char_tokenizer(text)` returns `(chars, encode, decode)`, where `chars`
# is the sorted list of the distinct characters of `text`, `encode(s)` the LongTensor of the places of the characters
# of `s` in `chars`, and `decode(ids)` the string of a list of ids.
#
# Its check then runs everything you wrote, together: your tokenizer encodes Tiny Shakespeare, the first 90% is the
# training text, your `GPT` (64 dimensions, 4 heads, 2 blocks, windows of 64 characters) starts from the course GPT's
# initial weights, and your `train` runs 2,000 steps of 32 windows (150 with `COURSE_MODE=quick`). The course runs its
# own GPT with `torch.optim.AdamW` and `clip_grad_norm_` on the same batches. Your validation loss must end within
# 0.05 nats of the course's. The check draws both training curves and prints a sample of your model, drawn with your
# `generate` and decoded with your `decode`. The full run takes about two minutes on a laptop CPU (`make check` allows
# it four times the time limit of the other checks).


# %% exercise 12.shakespeare
def char_tokenizer(text):
    """(chars, encode, decode): the sorted distinct characters, str -> LongTensor (N,) of ids, list of ids -> str."""
    # SOLUTION hint: one id per distinct character, in sorted order; encode and decode look each other up.
    chars = sorted(set(text))  # each distinct character once, in order
    index = {ch: i for i, ch in enumerate(chars)}

    def encode(s):
        return torch.tensor([index[ch] for ch in s], dtype=torch.long)

    def decode(ids):
        return "".join(chars[int(i)] for i in ids)

    # END SOLUTION
    return chars, encode, decode


# %%
chars_, encode, decode = char_tokenizer("to be, or not to be")
print(chars_, encode("be not").tolist(), repr(decode(encode("be not").tolist())))

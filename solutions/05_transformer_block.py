# %% [markdown]
# # 05 · Exercises: the transformer block
#
# Companion of `notebooks/05_transformer_block.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/05_transformer_block.py` (or `make solution EX=05.pre_ln_block`).

# %%
import torch
import torch.nn.functional as F
from torch import nn

B, T, C, H, d_ff = 2, 5, 16, 4, 64  # batch, tokens, d_model, n_heads, hidden width of the feed-forward network
torch.manual_seed(0)
x = torch.randn(B, T, C, dtype=torch.float64)
linear1, linear2 = nn.Linear(C, d_ff, dtype=torch.float64), nn.Linear(d_ff, C, dtype=torch.float64)

# %% [markdown]
# ## 1. The feed-forward network
#
# $$\text{FFN}(x) = W_2\,\text{GELU}(W_1 x + b_1) + b_2$$
#
# `linear1` is `nn.Linear(d_model, d_ff)` and `linear2` is `nn.Linear(d_ff, d_model)`; the activation is the exact
# GELU (`F.gelu`). Each token goes through on its own: (B, T, d_model) in, (B, T, d_model) out.


# %% exercise 05.feed_forward
def feed_forward(x, linear1, linear2):
    """Return linear2(GELU(linear1(x))): (B, T, d_model) -> (B, T, d_ff) -> (B, T, d_model)."""
    # SOLUTION hint: widen with the first layer, GELU, project back with the second.
    hidden = F.gelu(linear1(x))  # (B, T, C) -> (B, T, d_ff)
    out = linear2(hidden)  # (B, T, d_ff) -> (B, T, C)
    # END SOLUTION
    return out


# %%
y = feed_forward(x, linear1, linear2)
print("ffn", tuple(x.shape), "->", tuple(y.shape))
print(
    "position-wise: token 2 alone gives the same:",
    torch.allclose(feed_forward(x[:, 2:3], linear1, linear2)[:, 0], y[:, 2]),
)

# %% [markdown]
# ## 2. Layer normalisation
#
# $$\text{LN}(x) = \gamma \odot \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \beta$$
#
# The mean $\mu$ and the variance $\sigma^2$ are taken over the C features of each token (the last axis); the
# variance is the population one (divided by C), as in `nn.LayerNorm`. `gamma` and `beta` have shape (C,).


# %% exercise 05.layer_norm
def layer_norm(x, gamma, beta, eps=1e-5):
    """Normalise each token of x (..., C) to mean 0, variance 1 over its features; scale by gamma, shift by beta."""
    # SOLUTION hint: mean and population variance over the last axis (kept for broadcasting), eps under the square root.
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), divided by C
    out = gamma * (x - mean) / torch.sqrt(var + eps) + beta
    # END SOLUTION
    return out


# %%
ln = nn.LayerNorm(C, dtype=torch.float64)
print("layer_norm == nn.LayerNorm:", torch.allclose(layer_norm(3 * x + 1, ln.weight, ln.bias), ln(3 * x + 1)))

# %% [markdown]
# ## 3. Post-LN and Pre-LN blocks
#
# An encoder block wraps two sublayers, self-attention then the feed-forward network, each in a residual connection
# and a LayerNorm. Where the LayerNorm goes is the difference:
# - **Post-LN** (the 2017 paper): $x \leftarrow \text{LN}(x + f(x))$ after each sublayer;
# - **Pre-LN** (GPT-2 and most models since): $x \leftarrow x + f(\text{LN}(x))$, the residual stream is never
#   normalised.
#
# `self_attn` and `ff` are functions from (B, T, C) to (B, T, C); `norm1` belongs to the attention and `norm2` to the
# feed-forward network. The check passes the pieces of an `nn.TransformerEncoderLayer` and compares with its output.


# %% exercise 05.post_ln_block
def post_ln_block(x, self_attn, ff, norm1, norm2):
    """Return the output (B, T, C) of a Post-LN encoder block: a LayerNorm after each residual sum."""
    # SOLUTION hint: attention sublayer, add the input, normalise; then the same with the feed-forward network.
    x = norm1(x + self_attn(x))  # (B, T, C)
    x = norm2(x + ff(x))
    # END SOLUTION
    return x


# %% exercise 05.pre_ln_block
def pre_ln_block(x, self_attn, ff, norm1, norm2):
    """Return the output (B, T, C) of a Pre-LN encoder block: a LayerNorm before each sublayer, none on the sum."""
    # SOLUTION hint: normalise a copy for the sublayer and add its result to the untouched input; twice.
    x = x + self_attn(norm1(x))  # (B, T, C)
    x = x + ff(norm2(x))
    # END SOLUTION
    return x


# %%
def encoder_layer_pieces(layer):
    """The attention and feed-forward functions of an nn.TransformerEncoderLayer, and its two LayerNorms."""

    def self_attn(h):
        return layer.self_attn(h, h, h, need_weights=False)[0]

    def ff(h):
        return feed_forward(h, layer.linear1, layer.linear2)

    return self_attn, ff, layer.norm1, layer.norm2


for norm_first, block in [(False, post_ln_block), (True, pre_ln_block)]:
    layer = nn.TransformerEncoderLayer(
        C, H, d_ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first, dtype=torch.float64
    ).eval()
    ours = block(x, *encoder_layer_pieces(layer))
    print(f"{block.__name__} == nn.TransformerEncoderLayer(norm_first={norm_first}):", torch.allclose(ours, layer(x)))

# %% [markdown]
# # 11 · Exercises: RMSNorm and the Newton–Schulz step of Muon
#
# Companion of `notebooks/11_modern_gpt.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# The reference solutions are in `solutions/11_modern_gpt.py` (or `make solution EX=11.rmsnorm`): try first.

# %%
import torch

g = torch.Generator().manual_seed(0)
x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)  # (B, T, d)
gain = torch.ones(8, dtype=torch.float64)

# %% [markdown]
# ## RMSNorm
#
# RMSNorm rescales each vector over its last dimension by its root mean square and multiplies by a learned gain:
# $\mathrm{RMSNorm}(x) = g \odot x \,/\, \sqrt{\frac{1}{d}\sum_i x_i^2 + \epsilon}$.
# Unlike LayerNorm it subtracts no mean and adds no bias. `eps` goes inside the square root.


# %% exercise 11.rmsnorm
def rms_norm(x, weight, eps=1e-6):
    """Return x / sqrt(mean(x**2 over the last dimension) + eps) * weight, for x (..., d) and weight (d,)."""
    # SOLUTION hint: the mean of the squares over the last dimension (keepdim=True), then torch.rsqrt(... + eps)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight
    # END SOLUTION


# %%
y = rms_norm(x, gain)
print(y.pow(2).mean(-1)[0])  # each vector now has a mean square of (almost) 1

# %% [markdown]
# ## Newton–Schulz: the orthogonalisation inside Muon
#
# Muon replaces the momentum $M$ of a weight matrix's gradient by an approximation of $U V^\top$, where
# $M = U S V^\top$: the same singular vectors, every singular value pushed towards 1.
# Divide $G$ by its Frobenius norm (so that every singular value is at most 1), then repeat five times
# $X \leftarrow aX + b(XX^\top)X + c(XX^\top)^2X$ with $(a, b, c) = (3.4445, -4.7750, 2.0315)$.
# Each step maps every singular value $s$ to $as + bs^3 + cs^5$ and leaves the singular vectors alone.
# (The course's `helpers.modern.newton_schulz` also transposes a tall matrix first, so that $XX^\top$ is the smaller
# Gram matrix; the result is the same.)


# %% exercise 11.newton_schulz
def orthogonalize(G, steps=5):
    """Approximate the orthogonal factor U Vᵀ of G (m, n) with `steps` Newton–Schulz steps of the quintic above."""
    # SOLUTION hint: scale G so its singular values are at most 1, then apply the quintic of the coefficients five times
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G / G.norm()
    for _ in range(steps):
        A = X @ X.T  # (m, m)
        X = a * X + (b * A + c * A @ A) @ X
    return X
    # END SOLUTION


# %%
M = torch.randn(6, 10, generator=g, dtype=torch.float64)
print(torch.linalg.svdvals(orthogonalize(M)))  # all close to 1

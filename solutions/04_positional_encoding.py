# %% [markdown]
# # 04 · Exercises: positional encoding
#
# Companion of `notebooks/04_positional_encoding.ipynb`.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/04_positional_encoding.py` (or `make solution EX=04.sinusoidal`).

# %%
import torch

d_model = 64  # width of token and position vectors

# %% [markdown]
# ## The sinusoidal encoding
#
# Pairs of dimensions $(2i, 2i+1)$ hold a sine and a cosine of one frequency:
#
# $$PE_{pos,\,2i} = \sin\!\left(\frac{pos}{10000^{2i/d}}\right), \qquad
# PE_{pos,\,2i+1} = \cos\!\left(\frac{pos}{10000^{2i/d}}\right).$$
#
# Return the (seq_len, d_model) table for positions 0 to seq_len - 1.
# Each frequency needs a sine and a cosine, so an odd `d_model` has no table: raise a `ValueError` that says so.


# %% exercise 04.sinusoidal
def sinusoidal_encoding(seq_len, d_model):
    """Return the (seq_len, d_model) sinusoidal table; raise ValueError when d_model is odd."""
    # SOLUTION hint: refuse an odd d_model; one frequency per pair, sin(pos * freq) on even dimensions, cos on odd ones.
    if d_model % 2 != 0:
        raise ValueError(
            f"the sinusoidal encoding needs an even d_model (a sine and a cosine per frequency), got {d_model}"
        )
    pos = torch.arange(seq_len)[:, None]  # (seq_len, 1)
    freq = 10000 ** (-torch.arange(0, d_model, 2) / d_model)  # (d_model/2,): 1 / 10000^(2i/d)
    pe = torch.zeros(seq_len, d_model)
    pe[:, 0::2] = torch.sin(pos * freq)  # (seq_len, 1) * (d_model/2,) -> (seq_len, d_model/2)
    pe[:, 1::2] = torch.cos(pos * freq)
    # END SOLUTION
    return pe


# %%
pe = sinusoidal_encoding(50, d_model)
print("table", tuple(pe.shape), " values in [-1, 1]:", bool(pe.abs().max() <= 1))
print("PE_p . PE_p+3 is the same wherever p is:", [round((pe[p] @ pe[p + 3]).item(), 3) for p in (0, 10, 40)])

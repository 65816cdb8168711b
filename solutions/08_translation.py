# %% [markdown]
# # 08 · Exercises: the translation loss, decoding and BLEU
#
# Companion of `notebooks/08_translation.ipynb`: the loss that ignores padding, greedy and beam search, and BLEU.
# Write each function in its cell, run the cell, then run the check cell below it.
# A check prints ✓ or ✗ per case; a ✗ says what differed and, when it recognises the mistake, gives a hint.
# The reference solutions are in `solutions/08_translation.py` (or `make solution EX=08.corpus_bleu`): try first.

# %%
import math
from collections import Counter

import torch

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # the course's special ids (helpers.tokenizers)

# The notebook's BLEU example: one output and its two references, as token lists.
hyp = "the cat sat on the mat".split()
refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]

# %% [markdown]
# ## 1. A loss that ignores padding
#
# Targets of different lengths are padded to one length; a `<pad>` target is not French, so it must not count.
# Return the cross-entropy averaged over the positions whose target is not `pad_id`, as a scalar tensor
# (`logits (B, T, vocab_size)`, `targets (B, T)`). This is what `F.cross_entropy(..., ignore_index=pad_id)` computes.


# %% exercise 08.masked_loss
def masked_lm_loss(logits, targets, pad_id):
    """Mean cross-entropy of logits (B, T, vocab_size) over the positions where targets (B, T) is not pad_id."""
    # SOLUTION hint: a per-position loss from a log-softmax; keep the positions whose target is real; their mean.
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    per_position = -log_probs.gather(-1, targets[..., None])[..., 0]  # (B, T)
    real = targets != pad_id  # (B, T) True where the target is a real token
    loss = per_position[real].sum() / real.sum()
    # END SOLUTION
    return loss


# %%
logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
targets = torch.tensor([[4, 5, 3, EOS_ID], [3, EOS_ID, PAD_ID, PAD_ID]])
print(f"ignoring padding: {masked_lm_loss(logits, targets, PAD_ID).item():.4f}")

# %% [markdown]
# ## 2. Greedy decoding
#
# Start from `[bos_id]`, ask for the next-token logits of the prefix, append the most likely token, and repeat.
# `next_logits(prefix)` takes the whole prefix so far (a list of ids starting with `bos_id`) and returns 1-D logits
# over the vocabulary, so any model fits behind it (and the check can use a hand-made one).
# Stop right after `eos_id` is chosen, or after `max_len` new tokens, whichever comes first.
# Return the new tokens as a list of ints: without `bos_id`, with `eos_id` at the end when it was chosen.


# %% exercise 08.greedy_decode
def greedy_decode(next_logits, bos_id, eos_id, max_len):
    """The greedy continuation of [bos_id]: at most max_len ids, ending with eos_id if it was chosen."""
    # SOLUTION hint: a prefix that starts with bos; append the argmax of its logits until eos or max_len new tokens.
    prefix = [bos_id]
    while len(prefix) - 1 < max_len:
        token = int(torch.argmax(next_logits(prefix)))
        prefix.append(token)
        if token == eos_id:
            break
    out = prefix[1:]
    # END SOLUTION
    return out


# %%
def toy_logits(prefix):
    """A toy model over 6 tokens: count up from 3, then <eos> once the prefix holds 4 ids."""
    logits = torch.zeros(6)
    logits[EOS_ID if len(prefix) >= 4 else 3 + len(prefix) % 3] = 1.0
    return logits


print(greedy_decode(toy_logits, BOS_ID, EOS_ID, max_len=10), greedy_decode(toy_logits, BOS_ID, EOS_ID, max_len=2))

# %% [markdown]
# ## 3. One step of beam search
#
# Beam search keeps the `beam_size` best partial outputs. One step extends every beam by every token of the
# vocabulary, scores each candidate by its beam's score plus the new token's log-probability, and keeps the
# `beam_size` best candidates of the whole table, best first: a strong beam may supply several, a weak one none.
# `beams` is a list of `(tokens, score)`;
# `log_probs (n_beams, vocab_size)` holds the next-token log-probabilities of each beam.
# Return a list of `beam_size` pairs `(tokens + [new token], summed score)`, best first, without changing the input.
# (Every candidate of one step has the same length, so the notebook's length penalty would not change their order.)


# %% exercise 08.beam_step
def beam_step(beams, log_probs, beam_size):
    """The beam_size best one-token extensions of beams [(tokens, score)], scored by summed log-probabilities."""
    # SOLUTION hint: a (n_beams, vocab_size) table of beam score + token log-prob; the best entries of the whole table.
    scores = torch.tensor([score for _, score in beams], dtype=log_probs.dtype)  # (n_beams,)
    total = scores[:, None] + log_probs  # (n_beams, V): every extension of every beam
    best, index = total.flatten().topk(beam_size)  # (beam_size,) best first
    vocab_size = log_probs.shape[1]
    new_beams = [
        (beams[i // vocab_size][0] + [i % vocab_size], s) for i, s in zip(index.tolist(), best.tolist())
    ]  # index // V names the parent, index % V the new token
    # END SOLUTION
    return new_beams


# %%
beams = [([BOS_ID, 4], -0.4), ([BOS_ID, 5], -1.1)]
log_probs = torch.log_softmax(torch.tensor([[3.0, 2.9, 0.0, -1.0], [0.5, 0.0, 1.0, 0.2]]), dim=-1)
for tokens, score in beam_step(beams, log_probs, 3):
    print(tokens, round(score, 3))

# %% [markdown]
# ## 4. BLEU, piece by piece
#
# BLEU compares the n-grams (n = 1…4) of an output with those of its references.
# *Clipping*: an n-gram of the output is credited at most as often as it occurs in any single reference,
# the most generous one (else "the the the the" would score).
# Return `(matched, total)`: the clipped matches and the number of n-grams of the hypothesis.


# %% exercise 08.clipped_precision
def clipped_precision(hypothesis, references, n):
    """(matched, total) n-grams of hypothesis (tokens), each credited at most as often as in any one reference."""
    # SOLUTION hint: count the n-grams of output and references; cap each output count by its largest reference count.
    hyp_counts = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
    max_ref = Counter()
    for ref in references:
        for gram, count in Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)).items():
            max_ref[gram] = max(max_ref[gram], count)
    matched = sum(min(count, max_ref[gram]) for gram, count in hyp_counts.items())
    total = sum(hyp_counts.values())
    # END SOLUTION
    return matched, total


# %%
print(clipped_precision(["the"] * 7, refs, 1), clipped_precision(hyp, refs, 2))

# %% [markdown]
# ## 5. The brevity penalty
#
# Precision alone rewards short outputs, so BLEU multiplies by a brevity penalty: with `c` output tokens and `r`
# (effective) reference tokens, $\text{BP} = 1$ when $c \ge r$, else $e^{1 - r/c}$. An empty output gets 0.


# %% exercise 08.brevity_penalty
def brevity_penalty(hyp_len, ref_len):
    """1 when hyp_len >= ref_len, else exp(1 - ref_len / hyp_len); 0 for an empty output."""
    # SOLUTION hint: no penalty when the output is at least as long; otherwise e to the one minus reference over output.
    if hyp_len >= ref_len:
        bp = 1.0
    elif hyp_len == 0:
        bp = 0.0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    # END SOLUTION
    return bp


# %%
print(brevity_penalty(8, 10), brevity_penalty(12, 9))

# %% [markdown]
# ## 6. Corpus BLEU
#
# $\text{BLEU} = 100 \cdot \text{BP} \cdot \exp\big(\tfrac14 \sum_{n=1}^{4} \log p_n\big)$, over the whole corpus:
# - $p_n$ = the clipped matches of all sentences over their n-gram totals (sums first, then one division);
# - `c` = all output tokens, `r` = the sum over sentences of the reference length closest to each output's length
#   (the shorter one on a tie);
# - a zero precision is smoothed as sacreBLEU does by default: the k-th zero becomes $1 / (2^k \cdot \text{total})$;
#   the score is 0 when nothing matches at all.
#
# `references[i]` is the list of references (token lists) of sentence i. Return the score, a float from 0 to 100.
# Use your `clipped_precision` and `brevity_penalty`. The check compares with sacreBLEU (`tokenize="none"`).


# %% exercise 08.corpus_bleu
def corpus_bleu(hypotheses, references):
    """Corpus BLEU (0-100) of tokenized hypotheses against references[i], the tokenized references of sentence i."""
    # SOLUTION hint: sum matches, totals and lengths over the corpus first; smooth the zero precisions; combine.
    matched, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += min((len(r) for r in refs), key=lambda n: (abs(n - len(hyp)), n))  # closest, shorter on a tie
        for n in range(1, 5):
            m, t = clipped_precision(hyp, refs, n)
            matched[n - 1] += m
            total[n - 1] += t
    if not any(matched) or 0 in total:
        return 0.0
    log_sum, zeros = 0.0, 0
    for m, t in zip(matched, total):
        if m == 0:
            zeros += 1
            log_sum += math.log(1 / (2**zeros * t))  # smoothed zero precision
        else:
            log_sum += math.log(m / t)
    score = 100 * brevity_penalty(hyp_len, ref_len) * math.exp(log_sum / 4)
    # END SOLUTION
    return score


# %%
print(f"BLEU of the notebook's example: {corpus_bleu([hyp], [refs]):.2f} (sacreBLEU: 37.99)")

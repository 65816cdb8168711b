"""BLEU from scratch and sequence accuracy (introduced in 08_translation, 10_experiments).

BLEU = BP * exp(mean over n=1..4 of log p_n), where p_n is the clipped n-gram precision over the whole corpus and
BP = exp(1 - r / c) when the c hypothesis tokens are fewer than the r reference tokens (else 1).
corpus_bleu takes tokens, so it equals sacreBLEU with tokenize="none" on the same tokens
(helpers.course.scoring.sacrebleu_scores gives the standard, comparable score: 13a tokenizer, several references).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from helpers.decoding import strip_after_eos


def sequence_accuracy(pred: torch.Tensor, tgt: torch.Tensor) -> float:
    """Fraction of rows whose decoded ids (up to <eos>) equal the target's (tgt = <bos> ... <eos> <pad>...)."""
    want = strip_after_eos(tgt[:, 1:])
    got = strip_after_eos(pred)
    return sum(g == w for g, w in zip(got, want)) / len(want)


# ---------------------------------------------------------------- BLEU from scratch (08_translation)


def ngrams(tokens: list[str], n: int) -> Counter:
    """Count the n-grams (as tuples) of a token list."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def clipped_matches(hyp: list[str], refs: list[list[str]], n: int) -> tuple[int, int]:
    """(matched, total) n-grams of hyp, each n-gram credited at most as often as it occurs in any one reference."""
    hyp_counts = ngrams(hyp, n)
    max_ref = Counter()
    for ref in refs:
        for gram, c in ngrams(ref, n).items():
            max_ref[gram] = max(max_ref[gram], c)
    matched = sum(min(c, max_ref[gram]) for gram, c in hyp_counts.items())
    return matched, sum(hyp_counts.values())


def closest_ref_length(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length nearest to the hypothesis length (the shorter one on a tie)."""
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


@dataclass
class BleuResult:
    """A corpus BLEU score (0-100) with the pieces it is made of."""

    score: float
    precisions: list[float]  # p_1..p_4 in percent, after smoothing
    bp: float  # brevity penalty
    sys_len: int  # hypothesis tokens c
    ref_len: int  # effective reference tokens r


def corpus_bleu(hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4) -> BleuResult:
    """Corpus BLEU of tokenized hypotheses; references[i] is the list of tokenized references of sentence i.

    Precisions that are zero are smoothed as in mteval-v13a (sacreBLEU's default "exp"): the k-th zero becomes
    1 / (2^k * total).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matched, total = [0] * max_n, [0] * max_n
    sys_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        sys_len += len(hyp)
        ref_len += closest_ref_length(len(hyp), [len(r) for r in refs])
        for n in range(1, max_n + 1):
            m, t = clipped_matches(hyp, refs, n)
            matched[n - 1] += m
            total[n - 1] += t
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    if not any(matched):
        return BleuResult(0.0, [0.0] * max_n, bp, sys_len, ref_len)
    precisions, zeros = [], 0
    for m, t in zip(matched, total):
        if t == 0:  # no n-grams this long at all: the score is 0
            precisions.append(0.0)
        elif m == 0:
            zeros += 1
            precisions.append(100.0 / (2**zeros * t))
        else:
            precisions.append(100.0 * m / t)
    if min(precisions) == 0.0:
        return BleuResult(0.0, precisions, bp, sys_len, ref_len)
    score = bp * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return BleuResult(score, precisions, bp, sys_len, ref_len)

"""Scoring runs: the language-model loss on a split, sacreBLEU and the translation baselines (06_char_gpt, 08)."""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU, CHRF
from torch import nn

from helpers.course.datasets import Example, TranslationData, eval_windows, reference_streams, training_pairs
from helpers.decoding import model_device
from helpers.training import autocast

# ---------------------------------------------------------------- language-model loss (06_char_gpt)


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: torch.Tensor,
    block_size: int,
    batch_size: int = 64,
    max_windows: int | None = None,
    amp: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy (nats/token) over non-overlapping windows of data, and its standard error across windows."""
    was_training = model.training
    model.eval()
    x, y = eval_windows(data, block_size, max_windows)  # (N, T), (N, T)
    per_window = []
    device = model_device(model)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with autocast(device, enabled=amp):
            logits, _ = model(xb)
        loss = F.cross_entropy(logits.float().transpose(1, 2), yb, reduction="none")  # (B, V, T) -> (B, T)
        per_window.append(loss.mean(dim=1))
    model.train(was_training)
    losses = torch.cat(per_window).double()
    se = losses.std().item() / math.sqrt(len(losses)) if len(losses) > 1 else float("nan")
    return losses.mean().item(), se


# ---------------------------------------------------------------- sacreBLEU and baselines (08_translation)


def sacrebleu_scores(hypotheses: list[str], examples: list[Example]) -> dict:
    """Corpus BLEU (13a tokenizer, multi-reference) and chrF with sacreBLEU, and their signatures."""
    streams = reference_streams(examples)
    assert len(hypotheses) == len(examples) and all(len(s) == len(hypotheses) for s in streams)
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hypotheses, streams), chrf.corpus_score(hypotheses, streams)
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_result": b,
    }


def most_frequent_baseline(examples_train: list[Example], n: int) -> list[str]:
    """The trivial system: answer every sentence with the most frequent French sentence of the training split."""
    counts = Counter(fr for ex in examples_train for fr in ex.refs)
    return [counts.most_common(1)[0][0]] * n


def cooccurrence_dictionary(data: TranslationData) -> dict[str, str]:
    """English word -> the French word that co-occurs with it most in the training pairs (Dice coefficient)."""
    pairs = training_pairs(data.splits["train"])
    en_count, fr_count, both = Counter(), Counter(), Counter()
    for en, fr in pairs:
        e, f = set(data.src_tok(en)), set(data.tgt_tok(fr))
        en_count.update(e)
        fr_count.update(f)
        both.update((a, b) for a in e for b in f)
    best: dict[str, tuple[float, str]] = {}
    for (a, b), c in both.items():
        dice = 2 * c / (en_count[a] + fr_count[b])
        if dice > best.get(a, (0.0, ""))[0] or (dice == best[a][0] and b < best[a][1]):
            best[a] = (dice, b)
    return {a: b for a, (_, b) in sorted(best.items())}


def word_by_word_baseline(data: TranslationData, sentences: list[str]) -> list[str]:
    """A dictionary system: each English word becomes the French word that co-occurs with it most (Dice score)."""
    best = cooccurrence_dictionary(data)
    out = []
    for s in sentences:
        surface = data.src_tok.surface(s)
        words = [best.get(t, w) for t, w in zip(data.src_tok(s), surface)]
        out.append(data.tgt_tok.detokenize(words))
    return out

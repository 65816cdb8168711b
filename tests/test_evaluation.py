"""From-scratch corpus BLEU against sacreBLEU (tokenize="none"), with several references per sentence."""

import math
import random

import pytest
from sacrebleu.metrics import BLEU

from helpers.course.datasets import Example, Pair, prepare_data, reference_streams
from helpers.course.scoring import cooccurrence_dictionary, word_by_word_baseline
from helpers.evaluation import clipped_matches, closest_ref_length, corpus_bleu, ngrams


def sacre(hyps, refs):
    """sacreBLEU on pre-tokenized text: refs[i] is a list of token lists, padded into streams with None."""
    n_refs = max(len(r) for r in refs)
    streams = [[" ".join(r[j]) if j < len(r) else None for r in refs] for j in range(n_refs)]
    assert all(len(s) == len(hyps) for s in streams)
    return BLEU(tokenize="none", force=True).corpus_score([" ".join(h) for h in hyps], streams).score


def test_clipping_by_hand():
    # The classic example: "the" seven times is credited at most twice (its count in the first reference).
    hyp = ["the"] * 7
    refs = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert clipped_matches(hyp, refs, 1) == (2, 7)
    assert ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert closest_ref_length(5, [3, 7, 6]) == 6 and closest_ref_length(5, [4, 6]) == 4


def test_perfect_match_is_100_and_short_output_is_penalised():
    refs = [[["le", "chat", "dort", "sur", "le", "tapis", "."]]]
    assert corpus_bleu([refs[0][0]], refs).score == pytest.approx(100.0)
    short = corpus_bleu([["le", "chat", "dort", "sur", "le"]], refs)
    assert short.bp == pytest.approx(math.exp(1 - 7 / 5))
    assert short.score == pytest.approx(sacre([["le", "chat", "dort", "sur", "le"]], refs))


@pytest.mark.parametrize("seed", range(6))
def test_equals_sacrebleu_on_random_corpora(seed):
    rng = random.Random(seed)
    words = "a b c d e f g h".split()
    hyps, refs = [], []
    for _ in range(rng.randint(1, 30)):
        hyps.append([rng.choice(words) for _ in range(rng.randint(0 if seed else 1, 9))])
        refs.append([[rng.choice(words) for _ in range(rng.randint(1, 9))] for _ in range(rng.randint(1, 4))])
    ours = corpus_bleu(hyps, refs).score
    assert ours == pytest.approx(sacre(hyps, refs), abs=1e-9)


def test_equals_sacrebleu_when_some_precisions_are_zero():
    hyps = [["x", "y"], ["z", "a"]]
    refs = [[["x", "q", "y"]], [["a", "z", "w"], ["z"]]]
    assert corpus_bleu(hyps, refs).score == pytest.approx(sacre(hyps, refs), abs=1e-9)
    assert corpus_bleu([["u", "v"]], [[["x", "y"]]]).score == 0.0 == sacre([["u", "v"]], [[["x", "y"]]])


def test_reference_streams_transpose_and_pad_with_none():
    examples = [Example("Hi.", ["Salut.", "Salut !"], ["", ""]), Example("Go.", ["Va !"], [""])]
    streams = reference_streams(examples)
    assert streams == [["Salut.", "Va !"], ["Salut !", None]]


def test_empty_string_reference_would_change_the_brevity_penalty():
    # Why reference_streams pads with None: sacreBLEU keeps "" as a reference of length 0.
    hyps = ["a"]
    with_none = BLEU(tokenize="none", force=True).corpus_score(hyps, [["a b c"], [None]])
    with_empty = BLEU(tokenize="none", force=True).corpus_score(hyps, [["a b c"], [""]])
    assert with_none.ref_len == 3 and with_empty.ref_len == 0
    assert corpus_bleu([hyps[0].split()], [[["a", "b", "c"]]]).score == pytest.approx(with_none.score)


def test_word_by_word_baseline_uses_training_cooccurrences():
    pairs = [
        Pair(en, fr, "")
        for en, fr in [
            ("Where is Tom?", "Où est Tom ?"),
            ("Where are you?", "Où es-tu ?"),
            ("Tom runs.", "Tom court."),
            ("Are you cold?", "As-tu froid ?"),
        ]
    ]
    data = prepare_data(pairs, fractions=(1.0, 0.0, 0.0))
    assert cooccurrence_dictionary(data)["where"] == "où"
    assert word_by_word_baseline(data, ["Where is Tom?"]) == ["Où est Tom ?"]

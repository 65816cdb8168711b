"""Small models and data that several test files build."""

import itertools

import torch

from helpers.decoding import length_penalty
from helpers.models import Seq2Seq, Seq2SeqConfig
from helpers.tokenizers import BOS_ID, EOS_ID

# Five Tatoeba-format lines: English, French, attribution (one sentence with two translations, typographic quotes).
TSV_LINES = [
    "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)",
    "Go.\tMarche.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #3 (c)",
    "I'm cold.\tJ\u2019ai froid.\tCC-BY 2.0 (France) Attribution: tatoeba.org #4 (a) & #5 (b)",
    "Where is Tom?\tOù est Tom\u202f?\tCC-BY 2.0 (France) Attribution: tatoeba.org #6 (a) & #7 (b)",
    "Don't go.\tN'y va pas.\tCC-BY 2.0 (France) Attribution: tatoeba.org #8 (a) & #9 (b)",
]


def write_tsv(tmp_path):
    """Write TSV_LINES to a file and return its path."""
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(TSV_LINES) + "\n", encoding="utf-8")
    return path


def tiny_seq2seq(**kw):
    """A seeded float64 encoder-decoder with 13 source and 11 target ids, in eval mode."""
    base = dict(
        src_vocab_size=13,
        tgt_vocab_size=11,
        d_model=16,
        n_heads=2,
        n_enc_layers=2,
        n_dec_layers=2,
        d_ff=32,
        dropout=0.0,
        max_len=24,
    )
    base.update(kw)
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(**base)).double().eval()


def brute_force_best(model, src, max_len, alpha):
    """Score every sequence over a 2-word vocabulary (+ <eos>) up to max_len tokens; return the best."""
    best, best_score = None, -float("inf")
    with torch.no_grad():
        for n in range(max_len):
            for words in itertools.product([4, 5], repeat=n):
                seq = list(words) + [EOS_ID]
                logp = torch.log_softmax(model(src, torch.tensor([[BOS_ID] + seq[:-1]])), -1)[0]
                score = (
                    sum(logp[i, t].item() for i, t in enumerate(seq))
                    / length_penalty(torch.tensor(len(seq)), alpha).item()
                )
                if score > best_score:
                    best, best_score = seq[:-1], score
    return best, best_score


def failing(exercise_id, fn, *phrases):
    """Grade fn for one exercise, assert that it fails and that the report says every phrase; return the report."""
    from grader.core import grade

    report = grade(exercise_id, fn)
    text = report.text()
    assert not report.passed, text
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    return text

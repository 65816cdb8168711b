"""Notebook 08's bookkeeping: the BPE length table, figures, summaries, recorded metrics and saved checkpoints."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from helpers.bpe import BPETokenizer
from helpers.course import metrics, utils
from helpers.course import translation_report as report
from helpers.course.plotting import save_figure
from helpers.course.translator import SubwordTranslator, Translator
from helpers.models import Seq2Seq, Seq2SeqConfig
from helpers.tokenizers import SPECIALS, UNK_ID, Tokenizer, Vocab

TRAIN = ["i am cold .", "i am here .", "you are cold ."]
TEST = ["i am cold .", "we are here ."]  # "we" is not in the training vocabulary


def tiny_model(src_size: int, tgt_size: int) -> Seq2Seq:
    cfg = Seq2SeqConfig(
        src_size, tgt_size, d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, dropout=0.0, max_len=16
    )
    return Seq2Seq(cfg)


def word_translator() -> Translator:
    src, tgt = Vocab(list(SPECIALS) + ["i", "am", "cold", "."]), Vocab(list(SPECIALS) + ["j'", "ai", "froid", "."])
    tgt_tok = Tokenizer("fr").fit_truecase(["J'ai froid."])
    return Translator(tiny_model(len(src), len(tgt)), Tokenizer("en"), tgt_tok, src, tgt)


def subword_translator() -> SubwordTranslator:
    bpe = BPETokenizer.train(["i am cold.", "j'ai froid."], 270)
    return SubwordTranslator(tiny_model(len(bpe), len(bpe)), bpe, bpe)


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh artifacts folder for this test (COURSE_ARTIFACTS_DIR), so nothing lands in the real one."""
    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def recorded(artifacts_root, mode="quick", notebook="08_translation"):
    path = artifacts_root / ("quick" if mode == "quick" else "") / "metrics" / f"{notebook}.json"
    return json.loads(path.read_text())


def test_tokenization_rows_measure_characters_words_and_bpe_on_the_test_sentences():
    vocab = Vocab.build([s.split() for s in TRAIN])
    rows = report.tokenization_rows("English", TRAIN, TEST, str.split, vocab, (270, 280))
    assert [r["tokens"] for r in rows] == ["characters", "words", "BPE", "BPE"]
    assert all(r["language"] == "English" for r in rows)
    chars, words, bpe_small, bpe_large = rows
    assert chars["size"] is None and chars["tokens per sentence"] == (11 + 13) / 2
    assert chars["test sentences with <unk>"] == 0.0
    assert words["size"] == len(vocab) and words["tokens per sentence"] == 4.0
    assert words["test sentences with <unk>"] == 0.5  # "we are here ." has one word outside the vocabulary
    for row, size in ((bpe_small, 270), (bpe_large, 280)):
        bpe = BPETokenizer.train(TRAIN, size)
        assert row["size"] == len(bpe) and row["test sentences with <unk>"] == 0.0
        assert row["tokens per sentence"] == sum(len(bpe.encode(s)) for s in TEST) / 2
    assert bpe_large["tokens per sentence"] < bpe_small["tokens per sentence"] < chars["tokens per sentence"]


def test_bpe_length_figure_draws_one_panel_per_language_and_is_saved(artifacts):
    vocab = Vocab.build([s.split() for s in TRAIN])
    rows = []
    for lang in ("English", "French"):
        rows += report.tokenization_rows(lang, TRAIN, TEST, str.split, vocab, (270, 280))
    fig = report.plot_bpe_lengths(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["English test sentences", "French test sentences"]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "tokens per sentence (mean)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "BPE (vocabulary size reached)",
        "characters",
        f"words ({len(vocab)} types, 50% of test sentences with <unk>)",
    ]
    assert list(ax.lines[0].get_ydata()) == [r["tokens per sentence"] for r in rows[2:4]]
    path = save_figure(fig, "08_bpe_lengths", "quick")
    assert path == artifacts / "quick" / "figures" / "08_bpe_lengths.png" and path.stat().st_size > 0
    plt.close(fig)


def test_synthetic_accuracy_and_test_scores_are_recorded_with_their_units_and_descriptions(artifacts):
    rec = metrics.MetricRecorder("08_translation", "quick")
    report.record_synthetic_accuracy(rec, 0.75, 500)
    names = {"best": "beam", "baseline": "dictionary", "greedy": "greedy", "beam": "beam", "keep": "kept"}
    results = {
        "beam": {"bleu": 30.5, "chrf": 48.25},
        "greedy": {"bleu": 29.0, "chrf": 47.0},
        "dictionary": {"bleu": 3.5, "chrf": 20.0},
    }
    report.record_test_scores(rec, results, names, {"beam": 4, "alpha": 0.6, "unk": "copy"}, 123.0)
    got = {name: (m["value"], m["unit"], m["description"]) for name, m in recorded(artifacts).items()}
    assert got == {
        "translation.synthetic_sequence_accuracy": (
            0.75,
            "fraction",
            "reverse task: share of 500 random sequences reversed exactly (greedy)",
        ),
        "translation.bleu_greedy": (
            29.0,
            "BLEU",
            "test split, sacreBLEU 13a, multi-reference, greedy, <unk> rule copy",
        ),
        "translation.bleu_beam": (30.5, "BLEU", "test split, beam 4, alpha 0.6, <unk> rule copy"),
        "translation.bleu_test": (30.5, "BLEU", "test split, best decoding: beam"),
        "translation.chrf_test": (48.25, "chrF", "test split, beam"),
        "translation.bleu_baseline": (3.5, "BLEU", "test split, trivial baseline: dictionary"),
        "translation.train_seconds": (
            123.0,
            "s",
            "training time of the translation model (without validation decoding)",
        ),
    }
    assert all(m["notebook"] == "08_translation" and m["mode"] == "quick" for m in recorded(artifacts).values())


def side_table() -> pd.DataFrame:
    column = {
        "valid BLEU, chosen decoding": 38.0,
        "test BLEU, greedy": 31.5,
        "test BLEU, beam": 33.75,
        "test chrF, beam": 49.0,
        "beam outputs with <unk> before the rule": 0.5,
        "training seconds": 296.0,
    }
    sub = dict(column, **{"valid BLEU, chosen decoding": 36.0, "test BLEU, beam": 32.0, "training seconds": 425.0})
    sub["beam outputs with <unk> before the rule"] = 0.0
    return pd.DataFrame({"words": column, "subwords (BPE)": sub})


def test_the_subword_comparison_records_seven_metrics(artifacts):
    rec = metrics.MetricRecorder("08_translation", "full")
    report.record_subword_comparison(rec, side_table(), 2000, {"beam": 8, "alpha": 1.0})
    got = {name: (m["value"], m["unit"], m["description"]) for name, m in recorded(artifacts, "full").items()}
    assert got == {
        "translation.bpe_bleu_greedy": (31.5, "BLEU", "subword model (shared BPE, 2000 tokens), test split, greedy"),
        "translation.bpe_bleu_beam": (32.0, "BLEU", "subword model, test split, beam 8, alpha 1.0"),
        "translation.bpe_chrf_test": (49.0, "chrF", "subword model, test split, beam"),
        "translation.bpe_valid_bleu": (36.0, "BLEU", "subword model, validation split, chosen decoding"),
        "translation.word_valid_bleu": (
            38.0,
            "BLEU",
            "word-level model, validation split, chosen decoding and <unk> rule",
        ),
        "translation.bpe_train_seconds": (
            425.0,
            "s",
            "training time of the subword model (without validation decoding)",
        ),
        "translation.bpe_unk_outputs": (0.0, "fraction", "subword model: test beam outputs holding an <unk> id"),
    }


def test_training_summary_says_how_the_model_was_trained_or_that_it_was_reused():
    history = {
        "steps": 250,
        "train_seconds": 19.6,
        "wall_seconds": 31.2,
        "weight_choice": {"last": 12.3456, "average of last 3": 13.0},
        "weights": "average of last 3",
    }
    assert report.training_summary(history) == "trained 250 steps in 20 s (31 s with the validation decoding)"
    assert (
        report.training_summary(history, "word-level model") == "reusing the saved word-level model (trained in 20 s)"
    )
    lines = report.training_summary({k: v for k, v in history.items() if k != "wall_seconds"}, "subword model", True)
    assert lines.splitlines() == [
        "reusing the saved subword model (trained in 20 s)",
        "last                 12.35",
        "average of last 3    13.00",
        "kept: average of last 3",
    ]


def test_checkpoint_extra_keeps_the_decoding_the_data_and_only_the_history_worth_saving():
    history = {k: k for k in ("steps", "loss", "evals", "train_seconds", "weights", "weight_choice", "wall_seconds")}
    extra = report.checkpoint_extra({"beam": 4}, history, utils.PROJECT_ROOT / "data" / "x.tsv", 0)
    assert extra["decoding"] == {"beam": 4} and extra["split_seed"] == 0
    assert extra["data_source"] == str(utils.PROJECT_ROOT / "data" / "x.tsv")
    assert set(extra["history"]) == {"steps", "loss", "evals", "train_seconds", "weights", "weight_choice"}


def test_translators_are_saved_default_first_and_found_again_by_kind(tmp_path, capsys):
    word, subword = word_translator(), subword_translator()
    ckpt = tmp_path / "translation.pt"
    assert report.saved_translator(ckpt, "word", "cpu") is None  # nothing saved yet
    report.save_translators({"word": word, "subword": subword}, "subword", ckpt)
    assert "(subword, " in capsys.readouterr().out and ckpt.with_name("translation_word.pt").exists()
    found_word = report.saved_translator(ckpt, "word", "cpu")  # translation.pt holds the subword model
    found_subword = report.saved_translator(ckpt, "subword", "cpu")
    assert type(found_word) is Translator and isinstance(found_subword, SubwordTranslator)
    assert found_word.src_vocab.itos == word.src_vocab.itos
    ckpt.unlink()
    assert report.saved_translator(ckpt, "subword", "cpu") is None  # no translation_subword.pt beside it


def test_model_column_counts_unknown_source_tokens_and_reads_the_validation_grid():
    torch.manual_seed(0)
    word = word_translator()
    grid = pd.DataFrame([dict(beam=1, alpha=0.0, BLEU=10.0), dict(beam=2, alpha=0.6, BLEU=12.5)])
    assert report.grid_bleu(grid, {"beam": 2, "alpha": 0.6}, "BLEU") == 12.5
    scores = {"greedy": {"bleu": 1.0, "chrf": 2.0}, "beam": {"bleu": 3.0, "chrf": 4.0}}
    history = {"steps": 7, "train_seconds": 8.0}
    column = report.model_column(
        word, history, ["I am cold.", "I am Tom."], scores, grid, {"beam": 2, "alpha": 0.6}, "BLEU"
    )
    beam_ids = word.decode_ids(["I am cold.", "I am Tom."], beam=2, alpha=0.6)
    assert column == {
        "valid BLEU, chosen decoding": 12.5,
        "test BLEU, greedy": 1.0,
        "test BLEU, beam": 3.0,
        "test chrF, beam": 4.0,
        "test sentences with an unknown source token": 0.5,  # "Tom"
        "beam outputs with <unk> before the rule": sum(UNK_ID in ids for ids in beam_ids) / 2,
        "tokens per test sentence (English)": 4.0,
        "parameters": sum(p.numel() for p in word.model.parameters()),
        "training steps": 7,
        "training seconds": 8.0,
    }


def test_subword_model_summary_names_the_vocabulary_its_case_and_its_size():
    subword = subword_translator()
    first, second = report.subword_model_summary(subword).splitlines()
    assert first == f"{subword.src_bpe} | case kept"
    assert second == f"{sum(p.numel() for p in subword.model.parameters()):,} parameters"


def test_teacher_forcing_summary_counts_only_real_positions():
    top_p = torch.tensor([[0.95, 0.5, 0.99], [0.8, 0.92, 0.1]])
    real = torch.tensor([[True, True, False], [True, True, False]])
    correct = torch.tensor([[True, False, True], [True, True, False]]) & real
    text = report.teacher_forcing_summary(top_p, correct, real, 0.9)
    assert text.splitlines() == [
        "teacher-forced next-word accuracy on the test split: 75.0% of 4 positions",
        "positions where the model gives its top word more than the target's peak: 50.0%; median top probability 0.800",
    ]


def test_label_smoothing_figure_shows_the_target_and_the_histogram():
    vocab = Vocab(list(SPECIALS) + [f"w{i}" for i in range(12)])
    eps, n = 0.1, len(vocab)
    target = torch.full((n,), eps / n, dtype=torch.float64)
    target[6] += 1 - eps
    peak = 1 - eps + eps / n
    fig = report.plot_label_smoothing(target, 6, vocab, torch.tensor([0.5, 0.95, 0.99]), peak, eps)
    left, right = fig.axes
    assert left.get_title() == "Smoothed target for the reference word 'w2' (ε = 0.1)"
    assert [t.get_text() for t in left.get_xticklabels()][:4] == ["w2", "w0", "w1", "w3"]  # the reference word first
    assert len(left.patches) == 9 and left.patches[0].get_height() == pytest.approx(float(target[6]))
    assert right.get_legend().get_texts()[0].get_text() == f"target peak {peak:.3f}"
    assert sum(p.get_height() for p in right.patches) == 3
    plt.close(fig)


def test_mean_attention_maps_get_one_panel_each_and_a_shared_colour_bar():
    maps = [(torch.softmax(torch.randn(2, 3, 4), -1), ["a", "b", "<eos>"], ["x", "y", "z", "<eos>"]) for _ in range(2)]
    fig = report.plot_mean_attention(maps, ["first", "second"], "Cross-attention")
    panels = [ax for ax in fig.axes if ax.get_title() in ("first", "second")]
    assert len(panels) == 2 and fig.get_suptitle() == "Cross-attention"
    assert any(ax.get_ylabel() == "attention weight" for ax in fig.axes)  # the colour bar
    plt.close(fig)


def test_closing_figures_write_the_run_in_markdown():
    results = {
        "beam": {"bleu": 33.9, "chrf": 49.0},
        "greedy": {"bleu": 31.6, "chrf": 47.0},
        "kept": {"bleu": 20.0, "chrf": 40.0},
        "dictionary": {"bleu": 3.5, "chrf": 20.0},
    }
    names = {"best": "beam", "baseline": "dictionary", "greedy": "greedy", "beam": "beam", "keep": "kept"}
    history = {"steps": 2500, "train_seconds": 296.4, "weights": "last"}
    text = report.closing_figures(
        results,
        names,
        {"unk": "dictionary"},
        history,
        side_table(),
        "word",
        syn_acc=0.99,
        syn_steps=600,
        device=torch.device("cpu"),
        mode="full",
        n_streams=8,
        bpe_size=2000,
    )
    lines = text.splitlines()
    assert len(lines) == 7 and all(line.startswith("- ") for line in lines)
    assert lines[0] == "- Synthetic reverse task: 99.0% of new sequences reversed exactly after 600 steps."
    assert lines[1] == "- Training: 2500 steps in 296 s on the CPU (full mode), weights kept: last."
    assert "greedy 31.6, beam 33.9; best **33.9** (beam), chrF 49.0." in lines[2]
    assert lines[3] == "- Trivial baseline (dictionary): 3.5 BLEU; the model scores +30.4 BLEU against it."
    assert "by +11.6 compared with keeping `<unk>`" in lines[4]
    assert lines[5] == "- Beam search minus greedy on test: +2.3 BLEU."
    assert "(one BPE vocabulary of 2,000 tokens)" in lines[6] and "36.0 against 38.0 for words" in lines[6]
    assert lines[6].endswith("so `translation.pt` holds the word model.")

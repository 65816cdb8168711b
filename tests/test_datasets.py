"""Tiny Shakespeare loader, character tokenizer, split and batches."""

import urllib.error
import urllib.request

import pytest
import torch

from helpers.course.data import DataUnavailableError
from helpers.course.datasets import (
    Pair,
    eval_windows,
    get_batch,
    group_by_english,
    load_dataset,
    load_pairs,
    load_text,
    prepare_data,
    split_data,
    split_examples,
    synthetic_batch,
    training_pairs,
)
from helpers.decoding import strip_after_eos
from helpers.evaluation import sequence_accuracy
from helpers.tokenizers import CharTokenizer


def test_tokenizer_round_trip_and_vocabulary():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    ids = tok.encode("hold low")
    assert ids == [3, 5, 4, 1, 0, 4, 5, 7]
    assert tok.decode(ids) == "hold low"
    assert tok.decode(torch.tensor(ids)) == "hold low"
    assert CharTokenizer.from_dict(tok.to_dict()).chars == tok.chars


def test_tokenizer_rejects_unknown_characters():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="outside the vocabulary.*'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="ids outside"):
        tok.decode([0, 3])
    with pytest.raises(ValueError):
        CharTokenizer(["a", "a"])


def test_real_data_split_is_90_10():
    ds = load_dataset()
    assert len(ds.text) == 1_115_394
    assert ds.tokenizer.vocab_size == 65
    assert len(ds.train) == 1_003_854 and len(ds.train) + len(ds.val) == len(ds.text)
    assert ds.tokenizer.decode(ds.train[:14]) == "First Citizen:"
    assert ds.tokenizer.decode(ds.val[-len(ds.text) + len(ds.train) :][:5]) == ds.text[1_003_854:1_003_859]


def test_split_data_fraction():
    train, val = split_data(torch.arange(10), 0.9)
    assert train.tolist() == list(range(9)) and val.tolist() == [9]
    with pytest.raises(ValueError):
        split_data(torch.arange(10), 1.0)


def test_get_batch_targets_are_inputs_shifted_by_one():
    data = torch.arange(100)
    x, y = get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(y, x + 1)  # data[i] = i, so the next character is i + 1
    x2, _ = get_batch(data, 4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError):
        get_batch(torch.arange(8), 2, 8)


def test_eval_windows_cover_the_data_without_overlap():
    x, y = eval_windows(torch.arange(35), 8)
    assert x.shape == (4, 8)
    assert x.flatten().tolist() == list(range(32))
    assert torch.equal(y, x + 1)
    xs, _ = eval_windows(torch.arange(1001), 10, max_windows=3)
    assert xs[:, 0].tolist() == [0, 500, 990]


def test_offline_without_local_copy_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataUnavailableError, match="tinyshakespeare.txt"):
        load_text(data_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_corrupt_local_copy_is_rejected(tmp_path):
    (tmp_path / "tinyshakespeare.txt").write_text("not shakespeare")
    with pytest.raises(ValueError, match="SHA-256"):
        load_text(data_dir=tmp_path)


def test_synthetic_batches_and_sequence_accuracy():
    gen = torch.Generator().manual_seed(0)
    src, tgt = synthetic_batch("reverse", 4, n_symbols=5, min_len=2, max_len=5, generator=gen)
    for s, t in zip(strip_after_eos(src), strip_after_eos(tgt[:, 1:])):
        assert t == s[::-1] and all(4 <= x < 9 for x in s)
    assert sequence_accuracy(tgt[:, 1:], tgt) == 1.0
    wrong = tgt[:, 1:].clone()
    wrong[0, 0] = 4 if wrong[0, 0] != 4 else 5
    assert sequence_accuracy(wrong, tgt) == 0.75


def test_loader_keeps_all_three_columns(tsv):
    pairs = load_pairs(tsv)
    assert len(pairs) == 5
    assert pairs[0] == Pair("Go.", "Va !", "CC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)")
    assert all(p.attribution.startswith("CC-BY 2.0") for p in pairs)


def test_loader_rejects_lines_without_a_tab(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("just one column\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        load_pairs(bad)


def test_split_puts_each_english_sentence_in_one_split_with_all_its_translations():
    pairs = [Pair(f"Sentence {i % 40}.", f"Phrase {i}.", "") for i in range(200)]
    examples = group_by_english(pairs)
    assert len(examples) == 40 and all(len(ex.refs) == 5 for ex in examples)
    splits = split_examples(examples, (0.6, 0.2, 0.2), seed=1)
    english = {name: {ex.en for ex in exs} for name, exs in splits.items()}
    assert english["train"].isdisjoint(english["valid"]) and english["train"].isdisjoint(english["test"])
    assert english["valid"].isdisjoint(english["test"])
    assert sum(len(s) for s in english.values()) == 40
    for ex in splits["test"]:  # every French translation of a test sentence is one of its references
        assert sorted(ex.refs) == sorted(p.fr for p in pairs if p.en == ex.en)


def test_real_data_split_has_no_shared_english_sentence():
    from helpers.course.datasets import data_file

    data = prepare_data(load_pairs(data_file("small")), seed=0)
    english = {name: {ex.en for ex in exs} for name, exs in data.splits.items()}
    assert not (english["train"] & english["valid"]) and not (english["train"] & english["test"])
    assert not (english["valid"] & english["test"])
    assert len(data.train_src) == len(training_pairs(data.splits["train"]))

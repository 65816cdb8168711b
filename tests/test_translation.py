"""Loading, normalisation, tokenizer, vocabularies, splits by English sentence, baselines and the translate command."""
import subprocess
import sys

import pytest
import torch

from helpers.seq2seq import Seq2Seq, Seq2SeqConfig
from helpers.translation import (BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Example, Pair, Tokenizer, Translator,
                                 Vocab, cooccurrence_dictionary, detokenize_fr, group_by_english, load_pairs, normalize, prepare_data,
                                 split_examples, tokenize, training_pairs, word_by_word_baseline)
from helpers.utils import PROJECT_ROOT

LINES = [
    "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #2 (b)",
    "Go.\tMarche.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 (a) & #3 (c)",
    "I'm cold.\tJ\u2019ai froid.\tCC-BY 2.0 (France) Attribution: tatoeba.org #4 (a) & #5 (b)",
    "Where is Tom?\tOù est Tom\u202f?\tCC-BY 2.0 (France) Attribution: tatoeba.org #6 (a) & #7 (b)",
    "Don't go.\tN'y va pas.\tCC-BY 2.0 (France) Attribution: tatoeba.org #8 (a) & #9 (b)",
]


@pytest.fixture
def tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


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


def test_normalisation_and_tokenizers():
    assert normalize("J\u2019ai  froid\u202f!") == "J'ai froid !"
    assert tokenize("I'm cold, don't go!", "en") == ["I", "'m", "cold", ",", "do", "n't", "go", "!"]
    assert tokenize("Qu'as-tu vu\u202f? L'homme.", "fr") == ["Qu'", "as", "-tu", "vu", "?", "L'", "homme", "."]
    assert detokenize_fr(["qu'", "as", "-tu", "vu", "?"]) == "qu'as-tu vu ?"


def test_truecasing_restores_names_and_sentence_capitals():
    tok = Tokenizer("fr", lowercase=True).fit_truecase(["Tom est là.", "Je vois Tom.", "Où est Tom ?"])
    assert tok("Où est Tom ?") == ["où", "est", "tom", "?"]
    assert tok.detokenize(["je", "vois", "tom", "."]) == "Je vois Tom."


def test_vocab_specials_min_freq_and_unknown_words():
    vocab = Vocab.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=2)
    assert vocab.itos[:4] == list(SPECIALS) and (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert vocab.itos[4:] == ["a", "b"]  # "c" occurs once: below min_freq
    assert vocab.encode(["a", "c", "zebra"], bos=True, eos=True) == [BOS_ID, 4, UNK_ID, UNK_ID, EOS_ID]
    assert vocab.decode([BOS_ID, 4, 5, EOS_ID, 4]) == ["a", "b"]


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
    from helpers.translation import data_file

    data = prepare_data(load_pairs(data_file("small")), seed=0)
    english = {name: {ex.en for ex in exs} for name, exs in data.splits.items()}
    assert not (english["train"] & english["valid"]) and not (english["train"] & english["test"])
    assert not (english["valid"] & english["test"])
    assert len(data.train_src) == len(training_pairs(data.splits["train"]))


def test_word_by_word_baseline_uses_training_cooccurrences():
    pairs = [Pair(en, fr, "") for en, fr in [("Where is Tom?", "Où est Tom ?"), ("Where are you?", "Où es-tu ?"),
                                             ("Tom runs.", "Tom court."), ("Are you cold?", "As-tu froid ?")]]
    data = prepare_data(pairs, fractions=(1.0, 0.0, 0.0))
    assert cooccurrence_dictionary(data)["where"] == "où"
    assert word_by_word_baseline(data, ["Where is Tom?"]) == ["Où est Tom ?"]


def tiny_translator():
    src, tgt = Vocab(list(SPECIALS) + ["i", "am", "cold", "."]), Vocab(list(SPECIALS) + ["j'", "ai", "froid", "."])
    cfg = Seq2SeqConfig(len(src), len(tgt), d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32,
                        dropout=0.0, max_len=16)
    tgt_tok = Tokenizer("fr").fit_truecase(["J'ai froid."])
    return Translator(Seq2Seq(cfg), Tokenizer("en"), tgt_tok, src, tgt)


def test_empty_input_is_a_clear_error_and_unknown_words_map_to_unk():
    tr = tiny_translator()
    with pytest.raises(ValueError, match="empty"):
        tr.translate(["I am cold.", "   "])
    with pytest.raises(TypeError):
        tr.translate("I am cold.")
    assert tr.encode(["I am zzyzx."]).tolist() == [[4, 5, UNK_ID, 7, EOS_ID]]
    assert len(tr.translate(["Xylophones quietly zzyzx!"])) == 1


def test_unknown_generated_word_is_copied_from_the_most_attended_source_word():
    tr = tiny_translator()
    torch.manual_seed(0)
    outputs = [[UNK_ID, 5]]
    weights = tr.model.cross_attention(tr.encode(["I am Zorglub."]), torch.tensor([[BOS_ID, UNK_ID, 5]]))[-1].mean(1)
    expected = ["I", "am", "Zorglub", "."][int(weights[0, 0, :4].argmax())]
    assert tr.copy_unknowns(["I am Zorglub."], outputs)[0] == [expected, "ai"]


def test_saved_checkpoint_loads_and_translates_the_same(tmp_path):
    tr = tiny_translator()
    path = tr.save(tmp_path / "tiny.pt")
    loaded = Translator.load(path)
    sentences = ["I am cold.", "I am Tom."]
    # the checkpoint stores float16 weights: compare with the original rounded the same way
    tr.model.load_state_dict({k: v.half().float() for k, v in tr.model.state_dict().items()})
    assert loaded.translate(sentences, beam=1) == tr.translate(sentences, beam=1)
    assert loaded.translate(sentences, beam=3) == tr.translate(sentences, beam=3)
    assert loaded.src_vocab.itos == tr.src_vocab.itos and loaded.model.cfg == tr.model.cfg
    blob = torch.load(path, weights_only=True)  # only tensors and plain Python values inside
    assert set(blob) >= {"model", "config", "src_vocab", "tgt_vocab", "src_tok", "tgt_tok"}


def test_translate_command_reads_arguments_and_stdin(tmp_path):
    path = tiny_translator().save(tmp_path / "tiny.pt")
    cmd = [sys.executable, str(PROJECT_ROOT / "translate.py"), "--checkpoint", str(path)]
    out = subprocess.run(cmd + ["I am cold.", "Where is Tom?", "--beam", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
    out = subprocess.run(cmd, input="I am cold.\n\nI am.\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and lines[1] == ""  # a blank input line gives a blank output line
    out = subprocess.run(cmd + [""], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "sentence 1 is empty" in out.stderr and "Traceback" not in out.stderr


def test_translate_command_choices_match_the_helpers():
    import translate
    from helpers.translation import UNK_RULES

    assert translate.UNK_CHOICES == UNK_RULES


def test_load_names_the_file_and_the_kind_and_puts_the_model_on_the_device(tmp_path):
    from helpers.training import CheckpointError, save_checkpoint

    path = tiny_translator().save(tmp_path / "tiny.pt")
    loaded = Translator.load(path, device="cpu")
    assert loaded.device == torch.device("cpu")
    gpt_like = save_checkpoint({"model": {}, "model_config": {}, "tokenizer": {"chars": "ab"}}, tmp_path / "gpt.pt")
    with pytest.raises(CheckpointError, match=r"gpt\.pt is a char-GPT checkpoint \(from notebook 06\), not a translation"):
        Translator.load(gpt_like)
    blob = torch.load(path, weights_only=True)
    blob["config"]["d_model"] = 32  # weights no longer fit the config
    bad = save_checkpoint(blob, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt does not hold a usable translation model"):
        Translator.load(bad)


def test_unknown_generated_word_uses_the_dictionary_for_a_known_source_word():
    tr = tiny_translator()
    tr.dictionary = {"i": "je", "am": "suis", ".": "."}
    weights = tr.model.cross_attention(tr.encode(["I am Zorglub."]), torch.tensor([[BOS_ID, UNK_ID]]))[-1].mean(1)
    source_word = ["I", "am", "Zorglub", "."][int(weights[0, 0, :4].argmax())]
    expected = tr.dictionary.get(source_word.lower(), source_word)
    assert tr.copy_unknowns(["I am Zorglub."], [[UNK_ID]])[0] == [expected]
    assert tr.copy_unknowns(["I am Zorglub."], [[UNK_ID]], use_dictionary=False)[0] == [source_word]


def test_unk_rules():
    tr = tiny_translator()
    assert tr.postprocess(["I am Zorglub."], [[4, UNK_ID, 6]], "keep") == ["J'<unk> froid"]
    with pytest.raises(ValueError, match="unk must be one of"):
        tr.postprocess(["I am Zorglub."], [[UNK_ID]], "guess")

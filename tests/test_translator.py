"""Loading, normalisation, tokenizer, vocabularies, splits by English sentence, baselines and the translate command."""

import subprocess
import sys

import pytest
import torch

from helpers.course.translator import Translator
from helpers.course.utils import PROJECT_ROOT
from helpers.models import Seq2Seq, Seq2SeqConfig
from helpers.tokenizers import BOS_ID, EOS_ID, SPECIALS, UNK_ID, Tokenizer, Vocab


def tiny_translator():
    src, tgt = Vocab(list(SPECIALS) + ["i", "am", "cold", "."]), Vocab(list(SPECIALS) + ["j'", "ai", "froid", "."])
    cfg = Seq2SeqConfig(
        len(src), len(tgt), d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, dropout=0.0, max_len=16
    )
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
    assert set(blob) == {"kind", "model", "config", "tokenizer", "meta"} and blob["kind"] == "translation"
    assert set(blob["tokenizer"]) == {"src_vocab", "tgt_vocab", "src_tok", "tgt_tok"}
    assert all(v.dtype == torch.float16 for v in blob["model"].values() if v.is_floating_point())


def test_translate_command_reads_arguments_and_stdin(tmp_path):
    path = tiny_translator().save(tmp_path / "tiny.pt")
    cmd = [sys.executable, str(PROJECT_ROOT / "translate.py"), "--checkpoint", str(path)]
    out = subprocess.run(
        cmd + ["I am cold.", "Where is Tom?", "--beam", "2"], capture_output=True, text=True, timeout=120
    )
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
    from helpers.course.translator import UNK_RULES

    assert translate.UNK_CHOICES == UNK_RULES


def test_translate_command_knows_the_longest_training_sentence_and_notes_longer_input(tmp_path):
    import translate
    from helpers.course.datasets import data_file, load_pairs

    assert translate.TRAINED_MAX_WORDS == max(len(p.en.split()) for p in load_pairs(data_file()))
    path = tiny_translator().save(tmp_path / "tiny.pt")
    cmd = [sys.executable, str(PROJECT_ROOT / "translate.py"), "--checkpoint", str(path), "--greedy"]
    out = subprocess.run(cmd + ["I am cold.", "My sister lives in Paris with her husband."], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
    assert "note: sentence 2 has more than 5 words" in out.stderr and "sentence 1" not in out.stderr


def test_load_names_the_file_and_the_kind_and_puts_the_model_on_the_device(tmp_path):
    from helpers.course.checkpoints import CheckpointError, make_checkpoint, save_checkpoint

    path = tiny_translator().save(tmp_path / "tiny.pt")
    loaded = Translator.load(path, device="cpu")
    assert loaded.device == torch.device("cpu")
    gpt_like = save_checkpoint(make_checkpoint("char-gpt", {}, {}, {"chars": "ab"}), tmp_path / "gpt.pt")
    with pytest.raises(
        CheckpointError,
        match=r"gpt\.pt is a char-GPT checkpoint \(from notebook 06 or 11, or train_gpt\.py --export\), not a transl",
    ):
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


# ---------------------------------------------------------------- the translator on byte-pair-encoded tokens


def tiny_subword_translator(shared=True):
    from helpers.bpe import BPETokenizer
    from helpers.course.translator import SubwordTranslator

    en = BPETokenizer.train(["I am cold.", "Where is Tom?", "I am here."], 280)
    fr = en if shared else BPETokenizer.train(["J'ai froid.", "Où est Tom\u202f?"], 270)
    cfg = Seq2SeqConfig(
        len(en), len(fr), d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=32, dropout=0.0, max_len=48
    )
    torch.manual_seed(0)
    return SubwordTranslator(Seq2Seq(cfg), en, fr)


@pytest.mark.parametrize("shared", [True, False])
def test_subword_checkpoint_round_trip_keeps_merges_and_translations(tmp_path, shared):
    from helpers.course.translator import SubwordTranslator

    tr = tiny_subword_translator(shared)
    path = tr.save(tmp_path / "bpe.pt")
    loaded = Translator.load(path)
    assert type(loaded) is SubwordTranslator
    assert loaded.src_bpe.merges == tr.src_bpe.merges and loaded.tgt_bpe.merges == tr.tgt_bpe.merges
    assert (loaded.src_bpe is loaded.tgt_bpe) == shared
    tr.model.load_state_dict({k: v.half().float() for k, v in tr.model.state_dict().items()})
    sentences = ["I am cold.", "Zorglub est là\u202f!"]
    assert loaded.translate(sentences, beam=1) == tr.translate(sentences, beam=1)
    assert loaded.translate(sentences, beam=3) == tr.translate(sentences, beam=3)
    blob = torch.load(path, weights_only=True)
    assert blob["tokenizer"]["kind"] == "bpe-pair" and blob["tokenizer"]["shared"] == shared
    assert (blob["tokenizer"]["tgt"] is None) == shared  # a shared vocabulary is stored once


def test_subword_translator_encodes_any_text_and_never_outputs_unk():
    tr = tiny_subword_translator()
    text = "Zorglub mange des crêpes 🍓, n'est-ce pas\u202f?"
    ids = tr.encode([text])[0].tolist()
    assert UNK_ID not in ids and ids[-1] == EOS_ID
    assert tr.src_bpe.decode(ids) == "Zorglub mange des crêpes 🍓, n'est-ce pas ?"  # normalised: U+202F -> space
    # an <unk> id that a model could emit is dropped, never printed
    assert tr.postprocess([text], [[tr.tgt_bpe.encode("Oui")[0], UNK_ID, tr.tgt_bpe.encode(".")[0]]]) == ["O."]
    out = tr.translate([text, "I am cold."], beam=2)
    assert len(out) == 2 and not any("<unk>" in o for o in out)
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        tr.translate(["I am cold.", " \u202f "])
    with pytest.raises(ValueError, match="unk must be one of"):
        tr.postprocess([text], [[5]], "guess")


def test_with_subwords_encodes_every_training_pair_and_keeps_the_splits(tmp_path):
    from builders import write_tsv
    from helpers.bpe import BPETokenizer
    from helpers.course.datasets import load_pairs, prepare_data, training_pairs
    from helpers.tokenizers import normalize

    data = prepare_data(load_pairs(write_tsv(tmp_path)), seed=0)
    pairs = training_pairs(data.splits["train"])
    bpe = BPETokenizer.train([normalize(t) for p in pairs for t in p], 300)
    sub = data.with_subwords(bpe, bpe)
    assert sub.splits is data.splits and len(sub.train_src) == len(data.train_src) == len(pairs)
    for (en, fr), s, t in zip(pairs, sub.train_src, sub.train_tgt):
        assert s[-1] == EOS_ID and t[0] == BOS_ID and t[-1] == EOS_ID
        assert bpe.decode(s) == normalize(en) and bpe.decode(t) == normalize(fr)  # case kept, nothing unknown
    src, tgt = next(sub.batches(2, torch.Generator().manual_seed(0)))
    assert int(src.max()) < len(bpe) and int(tgt.max()) < len(bpe)


def test_fit_translator_keeps_the_weights_with_the_best_validation_bleu(tmp_path, monkeypatch):
    import helpers.course.translator as translator_module
    from helpers.course.datasets import Example
    from helpers.training import TrainConfig, translation_loss

    tr = tiny_subword_translator()
    pairs = [("I am cold.", "J'ai froid."), ("Where is Tom?", "Où est Tom ?")]
    batch = (
        torch.nn.utils.rnn.pad_sequence([torch.tensor(tr.source_ids(en)) for en, _ in pairs], batch_first=True),
        torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(tr.tgt_bpe.encode(fr, bos=True, eos=True)) for _, fr in pairs], batch_first=True
        ),
    )
    valid = [Example(en, [fr], [""]) for en, fr in pairs]
    scores = iter([10.0, 30.0, 20.0, 1.0, 2.0, 3.0])  # evals at steps 2, 4, 6; then last, best, average of 3
    monkeypatch.setattr(translator_module, "sacrebleu_scores", lambda hyps, refs: {"bleu": next(scores)})
    cfg = TrainConfig(max_steps=6, batch_size=2, lr=1e-2, warmup_steps=0, eval_interval=2)
    history = translator_module.fit_translator(tr, lambda: batch, translation_loss, cfg, valid, log=lambda *a: None)
    assert [e["step"] for e in history["evals"]] == [2, 4, 6]
    assert history["weight_choice"] == {"last": 1.0, "best (step 4)": 2.0, "average of last 3": 3.0}
    assert history["weights"] == "average of last 3"
    losses = history["loss"]
    assert losses[-1] < losses[0]  # it trained
    assert not tr.model.training


def test_translate_command_runs_a_subword_checkpoint(tmp_path):
    path = tiny_subword_translator().save(tmp_path / "bpe.pt")
    cmd = [sys.executable, str(PROJECT_ROOT / "translate.py"), "--checkpoint", str(path)]
    out = subprocess.run(cmd + ["Zorglub 🍓?", "I am cold."], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2 and "<unk>" not in out.stdout
    out = subprocess.run(cmd + ["x" * 200], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "too long" in out.stderr and "Traceback" not in out.stderr


def test_subword_translator_with_a_truecaser_lowercases_input_and_recases_output(tmp_path):
    from helpers.course.translator import SubwordTranslator

    base = tiny_subword_translator()
    truecaser = Tokenizer("fr").fit_truecase(["Tom est là.", "Je vois Tom."])
    tr = SubwordTranslator(base.model, base.src_bpe, base.tgt_bpe, truecaser)
    assert tr.source_ids("I AM  Cold.") == base.src_bpe.encode("i am cold.", eos=True)
    assert base.source_ids("I AM Cold.") != tr.source_ids("I AM Cold.")  # without a truecaser the case is kept
    assert tr.postprocess(["x"], [tr.tgt_bpe.encode("je vois tom .")]) == ["Je vois Tom."]
    loaded = Translator.load(tr.save(tmp_path / "tc.pt"))
    assert loaded.truecaser.truecase == truecaser.truecase
    assert loaded.source_ids("I AM Cold.") == tr.source_ids("I AM Cold.")

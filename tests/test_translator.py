"""Loading, normalisation, tokenizer, vocabularies, splits by English sentence, baselines and the translate command."""

import subprocess
import sys

import pytest
import torch

from helpers.models import Seq2Seq, Seq2SeqConfig
from helpers.tokenizers import BOS_ID, EOS_ID, SPECIALS, UNK_ID, Tokenizer, Vocab
from helpers.translator import Translator
from helpers.utils import PROJECT_ROOT


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
    from helpers.translator import UNK_RULES

    assert translate.UNK_CHOICES == UNK_RULES


def test_load_names_the_file_and_the_kind_and_puts_the_model_on_the_device(tmp_path):
    from helpers.checkpoints import CheckpointError, make_checkpoint, save_checkpoint

    path = tiny_translator().save(tmp_path / "tiny.pt")
    loaded = Translator.load(path, device="cpu")
    assert loaded.device == torch.device("cpu")
    gpt_like = save_checkpoint(make_checkpoint("char-gpt", {}, {}, {"chars": "ab"}), tmp_path / "gpt.pt")
    with pytest.raises(
        CheckpointError, match=r"gpt\.pt is a char-GPT checkpoint \(from notebook 06\), not a translation"
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

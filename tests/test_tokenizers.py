"""helpers.tokenizers: characters, words, vocabularies and the special ids."""

from helpers.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK_ID,
    Tokenizer,
    Vocab,
    detokenize_fr,
    normalize,
    tokenize,
)


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

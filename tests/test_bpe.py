"""Byte-level BPE: round trips, merge order, vocabulary layout, determinism, compression, saving, errors."""

import random

import pytest
import torch

from helpers.bpe import CHUNK, BPETokenizer, merge_steps
from helpers.course.checkpoints import load_checkpoint, make_checkpoint, save_checkpoint
from helpers.course.datasets import load_pairs
from helpers.course.utils import PROJECT_ROOT
from helpers.tokenizers import BOS_ID, EOS_ID, SPECIALS

UNSEEN = [
    "déjà vu, où êtes-vous ?",
    "Où es-tu\u202f? Attends\u202f! «\u00a0Bonjour\u00a0»",
    "Family 👨\u200d👩\u200d👧\u200d👦, flags 🇫🇷🇯🇵, thumbs 👍🏽 and ❤️",
    "東京は日本の首都です。서울 Москва Ελλάδα مرحبا",
    "tabs\tand\nnewlines\n\n  and   many    spaces  ",
    "e\u0301 (a combining accent) ½ ² 3.14159 x_y__z",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "<eos> <pad><bos>",
    "",
    " ",
    "\n",
]


def _pairs_file():
    for folder in (PROJECT_ROOT / "data", PROJECT_ROOT.parent / "shared" / "data"):
        if (folder / "eng-fra-tatoeba-small.tsv").is_file():
            return folder / "eng-fra-tatoeba-small.tsv"
    pytest.skip("eng-fra-tatoeba-small.tsv is neither in data/ nor in ../shared/data")


@pytest.fixture(scope="module")
def pairs():
    return load_pairs(_pairs_file())


@pytest.fixture(scope="module")
def french(pairs):
    return [p.fr for p in pairs]


@pytest.fixture(scope="module")
def tok(french):
    return BPETokenizer.train(french, 1000)


def brute_force_encode(tok, text, merges):
    """Apply the merges one after the other, in the order given, to the bytes of each pre-split chunk."""
    n = len(tok.specials)
    new_id = {pair: n + 256 + rank for rank, pair in enumerate(tok.merges)}
    out = []
    for chunk in CHUNK.findall(text):
        ids = [n + b for b in chunk.encode("utf-8")]
        for a, b in merges:
            merged, i = [], 0
            while i < len(ids):
                if ids[i : i + 2] == [a, b]:
                    merged.append(new_id[a, b])
                    i += 2
                else:
                    merged.append(ids[i])
                    i += 1
            ids = merged
        out += ids
    return out


def random_text(rng, n):
    """n random code points: ASCII and spaces often, anything but surrogates otherwise."""
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            chars.append(rng.choice("abcdeé  \t\n,.?!'0123"))
        else:
            cp = rng.randrange(0x110000 - 0x800)
            chars.append(chr(cp if cp < 0xD800 else cp + 0x800))  # skip the surrogates D800..DFFF
    return "".join(chars)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", UNSEEN)
def test_round_trip_on_unseen_unicode(tok, text):
    ids = tok.encode(text)
    assert all(len(SPECIALS) <= i < len(tok) for i in ids)
    assert tok.decode(ids) == text


def test_round_trip_on_training_text(tok, french):
    assert all(tok.decode(tok.encode(s)) == s for s in french)


@pytest.mark.parametrize("pre_split", [True, False])
def test_round_trip_on_random_code_points(french, pre_split):
    rng = random.Random(0)
    small = BPETokenizer.train(french[:800] + [random_text(rng, 200) for _ in range(5)], 600, pre_split=pre_split)
    for _ in range(300):
        text = random_text(rng, rng.randrange(0, 40))
        assert small.decode(small.encode(text)) == text


def test_cut_inside_a_character_decodes_without_error():
    tok = BPETokenizer([], specials=SPECIALS)  # bytes only: "é" is two ids
    ids = tok.encode("é")
    assert len(ids) == 2
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.token_strings(ids) == ["<0xC3>", "<0xA9>"]


# ---------------------------------------------------------------- merges and their order


def test_merges_apply_by_rank_not_left_to_right():
    a, b, c = (ord(ch) for ch in "abc")
    tok = BPETokenizer([(b, c), (a, b)], specials=())  # "bc" is id 256 (rank 0), "ab" is 257 (rank 1)
    assert tok.encode("abc") == [a, 256]  # left to right would give "ab" + "c" = [257, c]
    assert tok.encode("abab") == [257, 257]
    assert tok.token_strings(tok.encode("abcab")) == ["a", "bc", "ab"]


def test_trained_encoding_matches_brute_force_by_rank(tok, pairs):
    english = [p.en for p in pairs[::40]]  # text the tokenizer never saw
    assert all(tok.encode(s) == brute_force_encode(tok, s, tok.merges) for s in english)
    wrong = tok.merges[::-1]  # the same merges, last learned first
    assert any(tok.encode(s) != brute_force_encode(tok, s, wrong) for s in english)


def test_vocab_size_reached_and_layout(french):
    tok = BPETokenizer.train(french, 4000)
    assert len(tok) == tok.vocab_size == 4000 and len(tok.merges) == 4000 - 4 - 256
    vocab = tok.vocab
    assert [vocab[i] for i in range(4)] == [s.encode() for s in SPECIALS]
    assert all(vocab[4 + b] == bytes([b]) for b in range(256))
    for rank, (x, y) in enumerate(tok.merges):
        assert x < 260 + rank and y < 260 + rank and vocab[260 + rank] == vocab[x] + vocab[y]
    assert len(set(vocab.values())) == len(vocab)  # no token learned twice


def test_training_stops_when_pairs_run_out(capsys):
    tok = BPETokenizer.train(["ab ab"], 1000, verbose=True)  # chunks "ab", " ab": merges "ab", then " " + "ab"
    assert len(tok) == 262
    assert tok.token_strings(tok.encode("ab ab")) == ["ab", " ab"]
    assert "2 merges learned (no pairs left to merge)" in capsys.readouterr().out


def test_training_is_deterministic_and_order_free(french):
    first = BPETokenizer.train(french, 800).merges
    assert BPETokenizer.train(french, 800).merges == first
    shuffled = list(french)
    random.Random(1).shuffle(shuffled)
    assert BPETokenizer.train(shuffled, 800).merges == first
    assert BPETokenizer.train("\n".join(reversed(french)), 800).merges == first  # one string, lines reversed


def test_no_token_crosses_a_chunk_boundary(french):
    def crossing(tok):
        return [v for i, v in tok.vocab.items() if i >= 260 and v.strip() and b" " in v[1:]]

    assert crossing(BPETokenizer.train(french, 2000)) == []
    assert crossing(BPETokenizer.train(french, 2000, pre_split=False))  # without pre-splitting, words merge


def test_every_chunk_rejoins_to_the_text():
    for text in UNSEEN:
        assert "".join(CHUNK.findall(text)) == text
    assert CHUNK.findall("Va  à Paris\u202f!") == ["Va", " ", " à", " Paris", "\u202f", "!"]


# ---------------------------------------------------------------- compression and speed


@pytest.mark.parametrize("side", ["fr", "en"])
def test_more_merges_fewer_tokens(pairs, side):
    texts = [getattr(p, side) for p in pairs]
    chars = sum(map(len, texts))
    ratios = []
    for size in (300, 1000, 4000):
        tok = BPETokenizer.train(texts, size)
        ratios.append(sum(len(tok.encode(s)) for s in texts) / chars)
    assert ratios[0] > ratios[1] > ratios[2] and ratios[0] < 1.0


def test_every_token_decodes(tok):
    for i, data in tok.vocab.items():
        assert isinstance(data, bytes) and data
        if i >= len(SPECIALS):
            assert tok.decode([i]) == data.decode("utf-8", errors="replace")


def test_training_4000_on_tatoeba_french_finishes(french):
    tok = BPETokenizer.train(french, 4000)  # a full recount per merge would take tens of seconds here
    assert len(tok) == 4000


# ---------------------------------------------------------------- specials, saving, errors


def test_specials_cannot_be_injected(tok):
    ids = tok.encode("<eos><bos>", bos=True, eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and all(i >= 4 for i in ids[1:-1])
    assert tok.decode(ids) == "<eos><bos>"
    assert tok.decode(ids, skip_specials=False) == "<bos><eos><bos><eos>"
    assert tok.decode(torch.tensor(ids)) == "<eos><bos>"


def test_save_load_with_weights_only(tok, tmp_path, french):
    path = tmp_path / "bpe.pt"
    torch.save(tok.to_dict(), path)
    loaded = BPETokenizer.from_dict(torch.load(path, weights_only=True))
    assert loaded.merges == tok.merges and loaded.specials == tok.specials and len(loaded) == len(tok)
    for text in french[::50] + UNSEEN:
        assert loaded.encode(text, bos=True, eos=True) == tok.encode(text, bos=True, eos=True)
    save_checkpoint(make_checkpoint("translation", {}, {}, tokenizer=tok.to_dict()), tmp_path / "ckpt.pt")
    again = BPETokenizer.from_dict(load_checkpoint(tmp_path / "ckpt.pt")["tokenizer"])
    assert again.encode(UNSEEN[0]) == tok.encode(UNSEEN[0])


def test_errors_are_clear(tok):
    with pytest.raises(TypeError, match="bytes"):
        tok.encode(b"abc")
    with pytest.raises(TypeError, match="NoneType"):
        tok.encode(None)
    with pytest.raises(ValueError, match="id 1000 "):
        tok.decode([5, 1000])
    with pytest.raises(ValueError, match="id -1 "):
        tok.decode([-1])
    with pytest.raises(ValueError, match="at least 260"):
        BPETokenizer.train(["abc"], 259)
    with pytest.raises(ValueError, match="must be an int"):
        BPETokenizer.train(["abc"], 300.0)
    with pytest.raises(TypeError, match="int"):
        BPETokenizer.train(["abc", 3], 300)
    saved = tok.to_dict()
    with pytest.raises(ValueError, match="missing key.*merges"):
        BPETokenizer.from_dict({k: v for k, v in saved.items() if k != "merges"})
    with pytest.raises(ValueError, match="version 99"):
        BPETokenizer.from_dict({**saved, "version": 99})
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer.from_dict({**saved, "merges": [[4, 260]] + saved["merges"]})  # 260 does not exist yet
    with pytest.raises(ValueError, match="no <bos>"):
        BPETokenizer([], specials=()).encode("a", bos=True)


# ---------------------------------------------------------------- teaching helper


def test_merge_steps_by_hand():
    # Chunks "hug", " hug" x2, " pug", " pun", " bun": u+g occurs 4 times, then h+ug 3 times.
    steps = merge_steps("hug hug hug pug pun bun", 2)
    assert [(s["pair"], s["count"]) for s in steps] == [(("u", "g"), 4), (("h", "ug"), 3)]
    assert steps[1]["tokens"][:4] == ["hug", " ", "hug", " "] and steps[1]["new"] == "hug"
    # l+o, o+w, w+e and e+r all occur 3 times: the tie goes to the smallest byte pair, (e, r) = (101, 114).
    first = merge_steps("low lower lowest newer wider", 3)[0]
    assert first["pair"] == ("e", "r") and first["count"] == 3
    assert "".join(first["tokens"]) == "low lower lowest newer wider" and first["tokens"].count("er") == 3
    assert len(merge_steps("ab", 10)) == 1  # only one pair to merge


@pytest.mark.parametrize("pre_split", [True, False])
def test_the_heap_trainer_learns_the_merges_of_the_plain_one(pre_split):
    from collections import Counter

    from helpers.bpe import learn_merges, learn_merges_plain, split_chunks

    lines = [f"{p.en} {p.fr}" for p in load_pairs(PROJECT_ROOT / "data" / "eng-fra-tatoeba-small.tsv")[:300]]
    chunk_counts = Counter(c for line in lines for c in split_chunks(line, pre_split))
    fast, counts = learn_merges(chunk_counts, 150, offset=len(SPECIALS))
    assert fast == learn_merges_plain(chunk_counts, 150, offset=len(SPECIALS))
    assert counts == sorted(counts, reverse=True)  # a merge never creates a pair more frequent than itself


def test_the_plain_trainer_stops_when_nothing_is_left_to_merge():
    from helpers.bpe import learn_merges, learn_merges_plain

    chunks = {"aaab": 3, "ab": 1}
    assert learn_merges_plain(chunks, 10) == learn_merges(chunks, 10, offset=0)[0]
    assert len(learn_merges_plain(chunks, 10)) == 3  # a a -> X; X a -> Y; Y b -> Z: each chunk is one token

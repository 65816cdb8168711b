"""Character and word tokenizers, vocabularies and the special ids (introduced in 06_char_gpt, 08_translation).

The special tokens and their ids are defined here once; every model, data set and decoder imports them from here.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)


# ---------------------------------------------------------------- characters (06_char_gpt)


class CharTokenizer:
    """Map each distinct character to an integer id and back; unknown characters are an error, never dropped."""

    def __init__(self, chars: list[str] | str):
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        if any(len(c) != 1 for c in chars):
            raise ValueError("every vocabulary entry must be a single character")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the sorted distinct characters of a text."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Turn a string into a list of ids; raise ValueError naming any character outside the vocabulary."""
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(
                f"characters outside the vocabulary: {unknown!r} (the vocabulary has {self.vocab_size} "
                f"characters, built from the training text)"
            )
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        """Turn a list (or 1-D tensor) of ids back into a string."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids outside 0..{self.vocab_size - 1}: {bad[:5]}")
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        """A plain dict for checkpoints (loadable with weights_only=True)."""
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        """Rebuild a tokenizer saved with to_dict."""
        return cls(list(d["chars"]))


# ---------------------------------------------------------------- words (08_translation)

_SPACES = re.compile(r"[\s\u00a0\u2009\u202f]+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00ab": '"', "\u00bb": '"', "\u201c": '"', "\u201d": '"'})
# English: "don't" -> do n't, "I'm" -> I 'm, punctuation on its own, words and numbers whole.
_EN_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+|[^\w\s]")
# French: elided articles keep their apostrophe ("l'", "qu'"), "-tu", "-vous" after a verb are tokens of their own.
_FR_TOKEN = re.compile(r"\w+'|(?<=\w)-\w+|\w+|[^\w\s]")


def normalize(text: str) -> str:
    """Unicode NFC, typographic apostrophes and quotes to ASCII, every kind of space to one plain space."""
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    return _SPACES.sub(" ", text).strip()


def tokenize(text: str, lang: str) -> list[str]:
    """Split normalised text into words, clitics and punctuation marks (case is kept; see Tokenizer)."""
    pattern = {"en": _EN_TOKEN, "fr": _FR_TOKEN}[lang]
    return pattern.findall(normalize(text))


def detokenize_fr(tokens: list[str]) -> str:
    """Join French tokens: "l'" and "-tu" attach to their neighbour, "!?:;" follow a space, ".," do not."""
    out = ""
    for tok in tokens:
        glue = not out or out.endswith("'") or tok in {".", ","} or (tok.startswith("-") and len(tok) > 1)
        out += tok if glue else " " + tok
    return out


@dataclass
class Tokenizer:
    """Word-level tokenizer for one language, optionally lower-casing; French output is re-cased by `truecase`."""

    lang: str
    lowercase: bool = True
    truecase: dict[str, str] = field(default_factory=dict)  # lower-cased word -> its most frequent written form

    def surface(self, text: str) -> list[str]:
        """Tokens as written (used to copy names and numbers from the source)."""
        return tokenize(text, self.lang)

    def __call__(self, text: str) -> list[str]:
        """Tokens as the model sees them."""
        toks = self.surface(text)
        return [t.lower() for t in toks] if self.lowercase else toks

    def fit_truecase(self, texts: list[str]) -> Tokenizer:
        """Learn the usual case of each word from non-initial positions (so "tom" -> "Tom", "je" stays "je")."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for text in texts:
            for i, tok in enumerate(self.surface(text)):
                counts[tok.lower()][tok] += 0.01 if i == 0 else 1.0  # sentence-initial capitals count little
        self.truecase = {low: c.most_common(1)[0][0] for low, c in counts.items()}
        return self

    def detokenize(self, tokens: list[str]) -> str:
        """Turn model tokens back into a sentence: usual case, capital first letter, French spacing."""
        if self.lowercase:
            tokens = [self.truecase.get(t, t) for t in tokens]
        tokens = [
            t[:1].upper() + t[1:] if i == 0 or tokens[i - 1] in {".", "!", "?"} else t for i, t in enumerate(tokens)
        ]  # a capital letter starts each sentence
        return detokenize_fr(tokens) if self.lang == "fr" else " ".join(tokens)

    def to_dict(self) -> dict:
        """Plain-Python form for checkpoints."""
        return {"lang": self.lang, "lowercase": self.lowercase, "truecase": dict(self.truecase)}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        """Inverse of to_dict."""
        return cls(d["lang"], d["lowercase"], dict(d["truecase"]))


# ---------------------------------------------------------------- vocabulary


class Vocab:
    """Token <-> id maps with <pad>=0, <bos>=1, <eos>=2, <unk>=3 first; rarer tokens than min_freq become <unk>."""

    def __init__(self, itos: list[str]):
        if tuple(itos[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {itos[:4]}")
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, token_lists, min_freq: int = 1) -> Vocab:
        """Count tokens and keep those seen at least min_freq times (most frequent first, ties alphabetical)."""
        counts = Counter(t for toks in token_lists for t in toks)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t)
        )
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str], bos: bool = False, eos: bool = False) -> list[int]:
        """Map tokens to ids (unknown -> <unk>), optionally framed by <bos> ... <eos>."""
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([BOS_ID] if bos else []) + ids + ([EOS_ID] if eos else [])

    def decode(self, ids, strip_specials: bool = True) -> list[str]:
        """Map ids back to tokens, stopping at <eos> and dropping <pad>/<bos> when strip_specials."""
        out = []
        for i in ids.tolist() if torch.is_tensor(ids) else ids:
            if strip_specials and i == EOS_ID:
                break
            if strip_specials and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i])
        return out

"""English-French sentence pairs: loading, normalisation, tokenizer, vocabularies, splits and batches (introduced in 08_translation)."""
from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from helpers.utils import DATA_DIR, relative

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

FULL_ANKI_FILE = "fra.txt"  # the full Anki fra-eng export, if a user puts it in data/


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class Pair:
    """One Tatoeba sentence pair and the attribution that its licence (CC-BY 2.0 FR) requires us to keep."""

    en: str
    fr: str
    attribution: str


def data_file(source: str = "small", data_dir: Path | str | None = None) -> Path:
    """Return the pairs file: "small" (data/eng-fra-tatoeba-small.tsv), "full" (data/fra.txt) or a path."""
    if source == "small":
        from helpers.data import fetch

        return fetch("eng-fra-small", data_dir=Path(data_dir) if data_dir else None)
    path = Path(data_dir or DATA_DIR) / FULL_ANKI_FILE if source == "full" else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{relative(path)} not found: download fra-eng.zip from manythings.org/anki "
                                f"and put its fra.txt in data/")
    return path


def load_pairs(path: Path | str, max_pairs: int | None = None) -> list[Pair]:
    """Read `English<TAB>French<TAB>attribution` lines (the Tatoeba/Anki format) into Pairs."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise ValueError(f"{relative(path)} line {line_no}: expected English<TAB>French<TAB>attribution, "
                                 f"got {line[:80]!r}")
            pairs.append(Pair(cols[0].strip(), cols[1].strip(), cols[2].strip() if len(cols) > 2 else ""))
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
    return pairs


# ---------------------------------------------------------------- normalisation and tokenizer

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
        glue = (not out or out.endswith("'") or tok in {".", ","} or (tok.startswith("-") and len(tok) > 1))
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

    def fit_truecase(self, texts: list[str]) -> "Tokenizer":
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
        tokens = [t[:1].upper() + t[1:] if i == 0 or tokens[i - 1] in {".", "!", "?"} else t
                  for i, t in enumerate(tokens)]  # a capital letter starts each sentence
        return detokenize_fr(tokens) if self.lang == "fr" else " ".join(tokens)

    def to_dict(self) -> dict:
        """Plain-Python form for checkpoints."""
        return {"lang": self.lang, "lowercase": self.lowercase, "truecase": dict(self.truecase)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
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
    def build(cls, token_lists, min_freq: int = 1) -> "Vocab":
        """Count tokens and keep those seen at least min_freq times (most frequent first, ties alphabetical)."""
        counts = Counter(t for toks in token_lists for t in toks)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS), key=lambda t: (-counts[t], t))
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
        for i in (ids.tolist() if torch.is_tensor(ids) else ids):
            if strip_specials and i == EOS_ID:
                break
            if strip_specials and i in (PAD_ID, BOS_ID):
                continue
            out.append(self.itos[i])
        return out


# ---------------------------------------------------------------- splits


@dataclass
class Example:
    """One distinct English sentence with every French translation of it (the references)."""

    en: str
    refs: list[str]
    attributions: list[str]


def group_by_english(pairs: list[Pair]) -> list[Example]:
    """Collect all translations of each distinct (normalised) English sentence, in file order."""
    groups: dict[str, Example] = {}
    for p in pairs:
        key = normalize(p.en)
        if key not in groups:
            groups[key] = Example(key, [], [])
        if normalize(p.fr) not in groups[key].refs:
            groups[key].refs.append(normalize(p.fr))
            groups[key].attributions.append(p.attribution)
    return list(groups.values())


def split_examples(examples: list[Example], fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, list[Example]]:
    """Shuffle distinct English sentences and cut them into train/valid/test, so no sentence is in two splits."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(order))
    n_valid = round(fractions[1] * len(order))
    cut = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {name: [examples[i] for i in sorted(idx)] for name, idx in cut.items()}


def training_pairs(examples: list[Example]) -> list[tuple[str, str]]:
    """Flatten examples into (English, French) pairs: each translation is one training target."""
    return [(ex.en, fr) for ex in examples for fr in ex.refs]


def reference_streams(examples: list[Example]) -> list[list[str | None]]:
    """sacreBLEU's layout: stream j holds the j-th reference of every sentence, None where a sentence has fewer.

    None (not "") because sacreBLEU drops None references but would count "" as a reference of length 0.
    """
    n_refs = max(len(ex.refs) for ex in examples)
    streams = [[ex.refs[j] if j < len(ex.refs) else None for ex in examples] for j in range(n_refs)]
    assert len(streams) == n_refs and all(len(s) == len(examples) for s in streams)
    assert all(r is not None for r in streams[0]), "every sentence needs at least one reference"
    return streams


# ---------------------------------------------------------------- tensors and batches


def pad_batch(seqs: list[list[int]], pad_id: int = PAD_ID, device: torch.device | str | None = None) -> torch.Tensor:
    """Right-pad id lists to a (B, T_max) long tensor, built on the CPU and moved to `device` when one is given."""
    t_max = max(len(s) for s in seqs)
    out = torch.full((len(seqs), t_max), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out if device is None else out.to(device)


@dataclass
class TranslationData:
    """Tokenizers, vocabularies, the three splits and the encoded training pairs."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, list[Example]]
    train_src: list[list[int]]  # English ids, ending with <eos>
    train_tgt: list[list[int]]  # French ids, <bos> ... <eos>

    def batches(self, batch_size: int, generator: torch.Generator, word_dropout: float = 0.0,
                device: torch.device | str | None = None):
        """Yield (src, tgt) padded batches of training pairs in a fresh random order, forever.

        word_dropout replaces that fraction of source words by <unk>, so the model learns what to do with unknown
        words (which the test set has plenty of). The order and the dropped words are drawn on the CPU with
        `generator` (the same batches on every device); each batch is then moved to `device` (default: stays on CPU).
        """
        n = len(self.train_src)
        while True:
            order = torch.randperm(n, generator=generator).tolist()
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start:start + batch_size]
                src = pad_batch([self.train_src[i] for i in idx])
                if word_dropout > 0:
                    drop = (torch.rand(src.shape, generator=generator) < word_dropout) & (src > UNK_ID)
                    src = src.masked_fill(drop, UNK_ID)
                tgt = pad_batch([self.train_tgt[i] for i in idx])
                yield (src, tgt) if device is None else (src.to(device), tgt.to(device))

    def encode_src(self, sentences: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """English sentences -> (B, S) padded ids ending with <eos> (on `device` when one is given)."""
        return pad_batch([self.src_vocab.encode(self.src_tok(s), eos=True) for s in sentences], device=device)


def prepare_data(pairs: list[Pair], seed: int = 0, min_freq_src: int = 1, min_freq_tgt: int = 1,
                 lowercase: bool = True, fractions=(0.8, 0.1, 0.1)) -> TranslationData:
    """Group, split, tokenize and build vocabularies from the training split only."""
    splits = split_examples(group_by_english(pairs), fractions, seed)
    train = training_pairs(splits["train"])
    src_tok = Tokenizer("en", lowercase)
    tgt_tok = Tokenizer("fr", lowercase).fit_truecase([fr for _, fr in train])
    src_tokens = [src_tok(en) for en, _ in train]
    tgt_tokens = [tgt_tok(fr) for _, fr in train]
    src_vocab = Vocab.build(src_tokens, min_freq_src)
    tgt_vocab = Vocab.build(tgt_tokens, min_freq_tgt)
    return TranslationData(src_tok, tgt_tok, src_vocab, tgt_vocab, splits,
                           [src_vocab.encode(t, eos=True) for t in src_tokens],
                           [tgt_vocab.encode(t, bos=True, eos=True) for t in tgt_tokens])


# ---------------------------------------------------------------- translating with a trained model


UNK_RULES = ("keep", "copy", "dictionary")  # a generated <unk>: left as is, the attended source word, or its translation


class Translator:
    """A trained Seq2Seq with its tokenizers and vocabularies: English sentences in, French sentences out."""

    def __init__(self, model, src_tok: Tokenizer, tgt_tok: Tokenizer, src_vocab: Vocab, tgt_vocab: Vocab,
                 dictionary: dict[str, str] | None = None, extra: dict | None = None):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.dictionary = dict(dictionary or {})  # English word -> French word, for <unk> replacement
        self.extra = dict(extra or {})

    @classmethod
    def from_data(cls, model, data: TranslationData, extra: dict | None = None) -> "Translator":
        """Wrap a model trained on `data`, with the word dictionary of its training split."""
        return cls(model, data.src_tok, data.tgt_tok, data.src_vocab, data.tgt_vocab, cooccurrence_dictionary(data),
                   extra)

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """English sentences -> (B, S) source ids ending with <eos>; unknown words become <unk>."""
        if isinstance(sentences, str):
            raise TypeError("translate() takes a list of sentences, not a single string")
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or not self.src_tok(s):
                raise ValueError(f"sentence {i} is empty: nothing to translate ({s!r})")
        ids = [self.src_vocab.encode(self.src_tok(s), eos=True) for s in sentences]
        too_long = [i for i, s in enumerate(ids) if len(s) > self.model.cfg.max_len]
        if too_long:
            raise ValueError(f"sentence {too_long[0]} has {len(ids[too_long[0]])} tokens; this model accepts at most "
                             f"{self.model.cfg.max_len}")
        return pad_batch(ids)

    def decode_ids(self, sentences: list[str], beam: int = 1, alpha: float = 0.6, max_len: int | None = None,
                   batch_size: int = 256) -> list[list[int]]:
        """Greedy (beam=1) or beam-search output ids for each sentence, without <eos>."""
        from helpers.seq2seq import beam_search, greedy_decode, strip_after_eos

        max_len = max_len or self.model.cfg.max_len - 1
        out = []
        for start in range(0, len(sentences), batch_size):
            src = self.encode(sentences[start:start + batch_size]).to(self.device)
            limit = min(max_len, 2 * src.shape[1] + 10)
            ids = greedy_decode(self.model, src, limit) if beam == 1 else beam_search(self.model, src, beam, alpha, limit)
            out.extend(strip_after_eos(ids))
        return out

    @torch.no_grad()
    def copy_unknowns(self, sentences: list[str], outputs: list[list[int]], layer: int = -1,
                      use_dictionary: bool = True) -> list[list[str]]:
        """Replace each generated <unk> with the source word that its cross-attention weighs most.

        The weights come from one teacher-forced pass over the output, averaged over heads of decoder `layer`;
        source <eos> is never copied. Names and numbers that the vocabulary does not know come through as they are;
        with use_dictionary, a source word seen in training is replaced by its dictionary translation instead
        (which brings back French words too rare for the vocabulary).
        """
        from helpers.seq2seq import BOS_ID as bos

        tokens = [self.tgt_vocab.decode(o) for o in outputs]
        todo = [i for i, o in enumerate(outputs) if UNK_ID in o]
        if not todo:
            return tokens
        src = self.encode([sentences[i] for i in todo]).to(self.device)
        tgt_in = pad_batch([[bos] + outputs[i] for i in todo]).to(self.device)
        weights = self.model.cross_attention(src, tgt_in)[layer].mean(1)  # (B, H, T, S) -> (B, T, S)
        weights = weights.masked_fill(((src == PAD_ID) | (src == EOS_ID))[:, None, :], 0.0)  # never copy <eos>/<pad>
        for row, i in enumerate(todo):
            surface = self.src_tok.surface(sentences[i])
            for j, tok_id in enumerate(outputs[i]):
                if tok_id == UNK_ID:
                    word = surface[int(weights[row, j].argmax())]
                    tokens[i][j] = self.dictionary.get(word.lower(), word) if use_dictionary else word
        return tokens

    def postprocess(self, sentences: list[str], outputs: list[list[int]], unk: str = "dictionary") -> list[str]:
        """Decoded ids -> French sentences; unk says what a generated <unk> becomes (one of UNK_RULES)."""
        if unk not in UNK_RULES:
            raise ValueError(f"unk must be one of {UNK_RULES}, got {unk!r}")
        if unk == "keep":
            tokens = [self.tgt_vocab.decode(o) for o in outputs]
        else:
            tokens = self.copy_unknowns(sentences, outputs, use_dictionary=unk == "dictionary")
        return [self.tgt_tok.detokenize(t) for t in tokens]

    def translate(self, sentences: list[str], beam: int = 1, alpha: float = 0.6, unk: str = "dictionary") -> list[str]:
        """Translate English sentences into French: greedy when beam=1, else beam search with length penalty alpha."""
        return self.postprocess(sentences, self.decode_ids(sentences, beam, alpha), unk)

    def checkpoint(self) -> dict:
        """Everything needed to translate again: weights (float16 halves the file), config, tokenizers, vocabularies."""
        from helpers.seq2seq import config_dict

        state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in self.model.state_dict().items()}
        return {"model": state, "config": config_dict(self.model.cfg), "src_tok": self.src_tok.to_dict(),
                "tgt_tok": self.tgt_tok.to_dict(), "src_vocab": list(self.src_vocab.itos),
                "tgt_vocab": list(self.tgt_vocab.itos), "dictionary": dict(self.dictionary), "extra": self.extra}

    def save(self, path: Path | str) -> Path:
        """Write the checkpoint atomically (helpers.training.save_checkpoint)."""
        from helpers.training import save_checkpoint

        return save_checkpoint(self.checkpoint(), path)

    @classmethod
    def load(cls, path: Path | str, device: torch.device | str | None = None) -> "Translator":
        """Load a checkpoint written by save() (torch.load with weights_only=True) onto `device` (default CPU).

        Every problem with the file, including a checkpoint of another kind (such as notebook 06's char-GPT), is a
        helpers.training.CheckpointError whose message names the file and what is wrong.
        """
        from helpers.seq2seq import Seq2Seq, Seq2SeqConfig
        from helpers.training import CheckpointError, load_checkpoint

        ckpt = load_checkpoint(path, kind="translation")
        try:
            model = Seq2Seq(Seq2SeqConfig(**ckpt["config"]))
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
            translator = cls(model, Tokenizer.from_dict(ckpt["src_tok"]), Tokenizer.from_dict(ckpt["tgt_tok"]),
                             Vocab(ckpt["src_vocab"]), Vocab(ckpt["tgt_vocab"]), ckpt.get("dictionary", {}),
                             ckpt.get("extra", {}))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise CheckpointError(f"{path} does not hold a usable translation model "
                                  f"({type(err).__name__}{': ' + detail if detail else ''})") from None
        if device is not None:
            translator.model.to(device)
        return translator

    @property
    def device(self) -> torch.device:
        """The device of the model's weights; batches are moved there."""
        return next(self.model.parameters()).device


def default_checkpoint() -> Path:
    """Where the full-mode notebook saves the translation model (looking it up creates no folder)."""
    from helpers.utils import PROJECT_ROOT

    return PROJECT_ROOT / "artifacts" / "checkpoints" / "translation.pt"


def translate(sentences: list[str], checkpoint: Path | str | None = None, beam: int | None = None,
              alpha: float | None = None) -> list[str]:
    """Load the saved translation checkpoint and translate English sentences (beam=1: greedy; None: the saved choice).

    >>> translate(["I am cold.", "Where is Tom?"])  # doctest: +SKIP
    """
    translator = Translator.load(checkpoint or default_checkpoint())
    best = translator.extra.get("decoding", {})
    beam = best.get("beam", 4) if beam is None else beam
    alpha = best.get("alpha", 0.6) if alpha is None else alpha
    return translator.translate(list(sentences), beam=beam, alpha=alpha, unk=best.get("unk", "dictionary"))


# ---------------------------------------------------------------- scores


def sacrebleu_scores(hypotheses: list[str], examples: list[Example]) -> dict:
    """Corpus BLEU (13a tokenizer, multi-reference) and chrF with sacreBLEU, and their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    streams = reference_streams(examples)
    assert len(hypotheses) == len(examples) and all(len(s) == len(hypotheses) for s in streams)
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hypotheses, streams), chrf.corpus_score(hypotheses, streams)
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "bleu_result": b}


def most_frequent_baseline(examples_train: list[Example], n: int) -> list[str]:
    """The trivial system: answer every sentence with the most frequent French sentence of the training split."""
    counts = Counter(fr for ex in examples_train for fr in ex.refs)
    return [counts.most_common(1)[0][0]] * n


def cooccurrence_dictionary(data: TranslationData) -> dict[str, str]:
    """English word -> the French word that co-occurs with it most in the training pairs (Dice coefficient)."""
    pairs = training_pairs(data.splits["train"])
    en_count, fr_count, both = Counter(), Counter(), Counter()
    for en, fr in pairs:
        e, f = set(data.src_tok(en)), set(data.tgt_tok(fr))
        en_count.update(e)
        fr_count.update(f)
        both.update((a, b) for a in e for b in f)
    best: dict[str, tuple[float, str]] = {}
    for (a, b), c in both.items():
        dice = 2 * c / (en_count[a] + fr_count[b])
        if dice > best.get(a, (0.0, ""))[0] or (dice == best[a][0] and b < best[a][1]):
            best[a] = (dice, b)
    return {a: b for a, (_, b) in sorted(best.items())}


def word_by_word_baseline(data: TranslationData, sentences: list[str]) -> list[str]:
    """A dictionary system: each English word becomes the French word that co-occurs with it most (Dice score)."""
    best = cooccurrence_dictionary(data)
    out = []
    for s in sentences:
        surface = data.src_tok.surface(s)
        words = [best.get(t, w) for t, w in zip(data.src_tok(s), surface)]
        out.append(data.tgt_tok.detokenize(words))
    return out

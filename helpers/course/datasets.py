"""Data sets and batches: Tiny Shakespeare, Tatoeba pairs, a toy reverse task (introduced in 06_char_gpt, 08).

Files come from helpers.course.data.fetch (a local copy first, else a verified download);
tokenizers from helpers.tokenizers.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from helpers.course.data import fetch
from helpers.course.utils import DATA_DIR, relative
from helpers.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer, Tokenizer, Vocab, normalize

FULL_ANKI_FILE = "fra.txt"  # the full Anki fra-eng export, if a user puts it in data/


# ---------------------------------------------------------------- Tiny Shakespeare (06_char_gpt)


def load_text(data_dir: Path | str | None = None, timeout: float = 30.0) -> str:
    """Return the Tiny Shakespeare text: data/tinyshakespeare.txt when present, else a verified download."""
    path = fetch("tinyshakespeare", data_dir=Path(data_dir) if data_dir is not None else None, timeout=timeout)
    return path.read_text(encoding="utf-8")


def split_data(ids: torch.Tensor, train_fraction: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D id tensor into the first train_fraction (training) and the rest (validation)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = int(train_fraction * len(ids))
    return ids[:n], ids[n:]


@dataclass
class CharDataset:
    """The text, its tokenizer and the two id tensors of the 90/10 split."""

    text: str
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor


def load_dataset(data_dir: Path | str | None = None, train_fraction: float = 0.9) -> CharDataset:
    """Load Tiny Shakespeare, build the character vocabulary and split the ids 90/10 as nanoGPT does."""
    text = load_text(data_dir)
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train, val = split_data(ids, train_fraction)
    return CharDataset(text, tokenizer, train, val)


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample batch_size random windows: inputs x (B, T) and targets y (B, T) shifted by one character."""
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} ids, too few for block_size={block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size)  # (T,)
    x = data[starts[:, None] + offsets]  # (B, 1) + (T,) -> (B, T)
    y = data[starts[:, None] + offsets + 1]  # the next character at every position
    return x, y


def eval_windows(
    data: torch.Tensor, block_size: int, max_windows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut data into non-overlapping windows (N, T) of inputs and targets; evenly spaced subset if max_windows."""
    n = (len(data) - 1) // block_size
    if n < 1:
        raise ValueError(f"data has {len(data)} ids, too few for block_size={block_size}")
    idx = torch.arange(n)
    if max_windows is not None and max_windows < n:
        idx = torch.linspace(0, n - 1, max_windows).round().long()
    starts = idx * block_size  # (N,)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]  # (N, T)
    y = data[starts[:, None] + offsets + 1]
    return x, y


def word_set(text: str) -> set[str]:
    """The distinct lower-case words (letters and apostrophes) of a text."""
    return set(re.findall(r"[a-z']+", text.lower()))


def known_word_share(text: str, known: set[str]) -> float:
    """Share of the words in text that appear in `known` (for example the training text's words)."""
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in known for w in words) / len(words) if words else 0.0


# ---------------------------------------------------------------- English-French pairs (08_translation)


@dataclass(frozen=True)
class Pair:
    """One Tatoeba sentence pair and the attribution that its licence (CC-BY 2.0 FR) requires us to keep."""

    en: str
    fr: str
    attribution: str


def data_file(source: str = "small", data_dir: Path | str | None = None) -> Path:
    """Return the pairs file: "small" (data/eng-fra-tatoeba-small.tsv), "full" (data/fra.txt) or a path."""
    if source == "small":
        return fetch("eng-fra-small", data_dir=Path(data_dir) if data_dir else None)
    path = Path(data_dir or DATA_DIR) / FULL_ANKI_FILE if source == "full" else Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"{relative(path)} not found: download fra-eng.zip from manythings.org/anki and put its fra.txt in data/"
        )
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
                raise ValueError(
                    f"{relative(path)} line {line_no}: expected English<TAB>French<TAB>attribution, got {line[:80]!r}"
                )
            pairs.append(Pair(cols[0].strip(), cols[1].strip(), cols[2].strip() if len(cols) > 2 else ""))
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
    return pairs


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
    cut = {"train": order[:n_train], "valid": order[n_train : n_train + n_valid], "test": order[n_train + n_valid :]}
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


def pad_batch(seqs: list[list[int]], pad_id: int = PAD_ID, device: torch.device | str | None = None) -> torch.Tensor:
    """Right-pad id lists to a (B, T_max) long tensor, built on the CPU and moved to `device` when one is given."""
    t_max = max(len(s) for s in seqs)
    out = torch.full((len(seqs), t_max), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
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

    def batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        word_dropout: float = 0.0,
        device: torch.device | str | None = None,
    ):
        """Yield (src, tgt) padded batches of training pairs in a fresh random order, forever.

        word_dropout replaces that fraction of source words by <unk>, so the model learns what to do with unknown
        words (which the test set has plenty of). The order and the dropped words are drawn on the CPU with
        `generator` (the same batches on every device); each batch is then moved to `device` (default: stays on CPU).
        """
        n = len(self.train_src)
        while True:
            order = torch.randperm(n, generator=generator).tolist()
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                src = pad_batch([self.train_src[i] for i in idx])
                if word_dropout > 0:
                    drop = (torch.rand(src.shape, generator=generator) < word_dropout) & (src > UNK_ID)
                    src = src.masked_fill(drop, UNK_ID)
                tgt = pad_batch([self.train_tgt[i] for i in idx])
                yield (src, tgt) if device is None else (src.to(device), tgt.to(device))

    def with_subwords(self, src_bpe, tgt_bpe, prepare=normalize) -> TranslationData:
        """The same splits with the training pairs encoded by byte-pair tokenizers (helpers.bpe) instead of words.

        Each text goes through prepare() first (default: helpers.tokenizers.normalize, which keeps the case). The word
        tokenizers and vocabularies stay, for the baselines and the <unk> statistics. batches() then draws BPE ids,
        and its word dropout replaces subword tokens by <unk>.
        """
        pairs = training_pairs(self.splits["train"])
        return replace(
            self,
            train_src=[src_bpe.encode(prepare(en), eos=True) for en, _ in pairs],
            train_tgt=[tgt_bpe.encode(prepare(fr), bos=True, eos=True) for _, fr in pairs],
        )

    def encode_src(self, sentences: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        """English sentences -> (B, S) padded ids ending with <eos> (on `device` when one is given)."""
        return pad_batch([self.src_vocab.encode(self.src_tok(s), eos=True) for s in sentences], device=device)


def prepare_data(
    pairs: list[Pair],
    seed: int = 0,
    min_freq_src: int = 1,
    min_freq_tgt: int = 1,
    lowercase: bool = True,
    fractions=(0.8, 0.1, 0.1),
) -> TranslationData:
    """Group, split, tokenize and build vocabularies from the training split only."""
    splits = split_examples(group_by_english(pairs), fractions, seed)
    train = training_pairs(splits["train"])
    src_tok = Tokenizer("en", lowercase)
    tgt_tok = Tokenizer("fr", lowercase).fit_truecase([fr for _, fr in train])
    src_tokens = [src_tok(en) for en, _ in train]
    tgt_tokens = [tgt_tok(fr) for _, fr in train]
    src_vocab = Vocab.build(src_tokens, min_freq_src)
    tgt_vocab = Vocab.build(tgt_tokens, min_freq_tgt)
    return TranslationData(
        src_tok,
        tgt_tok,
        src_vocab,
        tgt_vocab,
        splits,
        [src_vocab.encode(t, eos=True) for t in src_tokens],
        [tgt_vocab.encode(t, bos=True, eos=True) for t in tgt_tokens],
    )


# ---------------------------------------------------------------- a synthetic task (08_translation)


def synthetic_batch(
    task: str,
    batch_size: int,
    n_symbols: int,
    min_len: int,
    max_len: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbol sequences (ids 4..3+n_symbols) and their copy or reverse, padded: src (B, S), tgt (B, T).

    The numbers are drawn on the CPU with `generator` (the same batch on every device), then moved to `device`.
    """
    if task not in ("copy", "reverse"):
        raise ValueError(f"task must be 'copy' or 'reverse', got {task!r}")
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    src = torch.full((batch_size, max_len + 1), PAD_ID, dtype=torch.long)
    tgt = torch.full((batch_size, max_len + 2), PAD_ID, dtype=torch.long)
    tgt[:, 0] = BOS_ID
    for i, n in enumerate(lengths.tolist()):
        seq = torch.randint(4, 4 + n_symbols, (n,), generator=generator)
        out = seq if task == "copy" else seq.flip(0)
        src[i, :n], src[i, n] = seq, EOS_ID
        tgt[i, 1 : n + 1], tgt[i, n + 1] = out, EOS_ID
    return (src, tgt) if device is None else (src.to(device), tgt.to(device))

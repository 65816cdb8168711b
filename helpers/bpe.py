"""Byte-level byte-pair encoding (BPE), trained from scratch (introduced in 08_translation).

The base alphabet is the 256 byte values, so any text can be encoded: nothing is ever out of vocabulary.
Ids: the special tokens first (the course's <pad>=0, <bos>=1, <eos>=2, <unk>=3), then the 256 bytes
(byte b has id len(specials) + b, so 4..259), then one id per learned merge, in the order they were learned (rank).
Training repeatedly merges the most frequent adjacent pair of tokens into a new token; encoding replays the merges
on new text, lowest rank first.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict

import torch

from helpers.tokenizers import BOS, EOS, SPECIALS

FORMAT_VERSION = 1

# Pre-splitting cuts text into chunks that merges never cross, so a token never spans two words. The alternatives:
#   " ?[^\W\d_]+"         a run of letters (any script: \w without digits and "_"), with one optional leading space
#   " ?\d+"               a run of digits, with one optional leading space
#   " ?(?:[^\w\s]|_)+"    a run of anything else that is not a space (punctuation, symbols, emoji, "_")
#   "\s+(?!\S)"           spaces, leaving the last one to the word after them ("a   b" -> "a", "  ", " b")
#   "\s+"                 the remaining spaces (at the end of the text, or before a non-space the rules above refuse)
# Every character is a space, a letter, a digit or something else, so the chunks always join back to the text.
CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+")
_CACHE_LIMIT = 100_000  # encoded chunks kept in memory


def split_chunks(text: str, pre_split: bool = True) -> list[str]:
    """Cut a text into the chunks that BPE merges within (the whole text as one chunk when pre_split is False)."""
    if pre_split:
        return CHUNK.findall(text)
    return [text] if text else []


def merge_pair(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `word`, left to right, by `new_id`."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def learn_merges_plain(chunk_counts: dict[str, int], n_merges: int, offset: int = 0) -> list[tuple[int, int]]:
    """The plain algorithm: count every adjacent pair, merge the most frequent one everywhere, repeat.

    Ties go to the smallest pair of ids. Each merge recounts every pair of every chunk: clear, and slow on a large
    corpus; learn_merges gives the same merges, faster (tests/test_bpe.py proves them equal).
    """
    words = [[offset + b for b in chunk.encode("utf-8")] for chunk in chunk_counts]  # token ids of each chunk
    merges = []
    for new_id in range(offset + 256, offset + 256 + n_merges):
        counts: Counter = Counter()
        for word, freq in zip(words, chunk_counts.values()):
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break  # every chunk is a single token: nothing left to merge
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # the most frequent, then the smallest pair
        merges.append(best)
        words = [merge_pair(word, best, new_id) for word in words]
    return merges


def learn_merges(chunk_counts: dict[str, int], n_merges: int, offset: int, verbose: bool = False):
    """learn_merges_plain made fast; return the merges and each one's pair count.

    Pair counts are updated only in the chunks that hold the merged pair (found through `where`), and the best pair
    is taken from a heap whose outdated entries are skipped, so one merge costs far less than a full recount.
    Ties go to the smallest pair of ids, so the result depends on the counts only, never on the order of the texts.
    """
    words = [[offset + b for b in chunk.encode("utf-8")] for chunk in chunk_counts]  # token ids of each chunk
    freqs = list(chunk_counts.values())
    counts: Counter = Counter()  # (id, id) -> occurrences weighted by chunk frequency
    where: defaultdict = defaultdict(set)  # (id, id) -> indices of the chunks holding the pair
    for i in range(len(words)):
        _count_pairs(words[i], freqs[i], i, counts, where, +1)
    heap = [(-count, pair) for pair, count in counts.items()]  # the most frequent, then the smallest pair, on top
    heapq.heapify(heap)
    merges, merge_counts = [], []
    pieces = [bytes([b]) for b in range(256)]  # the bytes of each non-special id, for the progress lines
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair) != -neg_count:
            continue  # an outdated entry: the pair's count changed after it was pushed
        new_id = offset + 256 + len(merges)
        merges.append(pair)
        merge_counts.append(-neg_count)
        pieces.append(pieces[pair[0] - offset] + pieces[pair[1] - offset])
        changed = set()
        for i in where.pop(pair):
            changed |= _count_pairs(words[i], freqs[i], i, counts, where, -1)  # the chunk's old pairs out...
            words[i] = merge_pair(words[i], pair, new_id)
            changed |= _count_pairs(words[i], freqs[i], i, counts, where, +1)  # ...and its new pairs in
        _push_changed(changed, counts, where, heap)
        if verbose and (len(merges) % max(1, n_merges // 10) == 0 or len(merges) == n_merges):
            text = pieces[-1].decode("utf-8", errors="replace")
            print(f"merge {len(merges):>5}/{n_merges}: {pair} -> {new_id} {text!r} (count {-neg_count})")
    if verbose:
        print(f"{len(merges)} merges learned" + (" (no pairs left to merge)" if len(merges) < n_merges else ""))
    return merges, merge_counts


def _count_pairs(word: list[int], freq: int, i: int, counts: Counter, where: defaultdict, sign: int) -> set:
    """Add (sign=+1) or take out (sign=-1) the pairs of chunk i; return the pairs touched."""
    pairs = set(zip(word, word[1:]))
    for pair in zip(word, word[1:]):
        counts[pair] += sign * freq
    for pair in pairs:
        (where[pair].add if sign > 0 else where[pair].discard)(i)
    return pairs


def _push_changed(changed: set, counts: Counter, where: defaultdict, heap: list) -> None:
    """Push the new counts of the changed pairs on the heap; forget the pairs that no longer occur."""
    for p in changed:
        if counts[p] > 0:
            heapq.heappush(heap, (-counts[p], p))
        else:
            del counts[p]
            where.pop(p, None)


class BPETokenizer:
    """Byte-level BPE: specials, then the 256 bytes, then merged tokens; every text encodes and decodes back."""

    def __init__(self, merges: list[tuple[int, int]], specials=SPECIALS, pre_split: bool = True):
        specials = tuple(specials)
        if any(not isinstance(s, str) or not s for s in specials) or len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct non-empty strings, got {specials!r}")
        self.specials, self.pre_split = specials, bool(pre_split)
        offset = len(specials)
        self._vocab = [s.encode("utf-8") for s in specials] + [bytes([b]) for b in range(256)]  # id -> bytes
        self._ranks: dict[tuple[int, int], int] = {}  # pair -> id of the merged token (a higher id: a later rank)
        for rank, pair in enumerate(merges):
            new_id = offset + 256 + rank
            ok = len(pair) == 2 and all(type(t) is int and offset <= t < new_id for t in pair)
            if not ok or tuple(pair) in self._ranks:
                raise ValueError(
                    f"merge {rank} is {pair!r}: a merge must be a new pair of two ids in {offset}..{new_id - 1} "
                    f"(bytes or earlier merges)"
                )
            self._ranks[tuple(pair)] = new_id
            self._vocab.append(self._vocab[pair[0]] + self._vocab[pair[1]])
        self.bos_id = specials.index(BOS) if BOS in specials else None
        self.eos_id = specials.index(EOS) if EOS in specials else None
        self._cache: dict[str, list[int]] = {}  # chunk -> its ids

    @classmethod
    def train(
        cls, texts: list[str] | str, vocab_size: int, specials=SPECIALS, pre_split: bool = True, verbose: bool = False
    ) -> BPETokenizer:
        """Learn merges until the vocabulary (specials + 256 bytes + merges) has vocab_size entries.

        When the texts run out of pairs to merge first, training stops early: len() gives the size reached.
        With pre_split=False each text is one chunk (merges may cross words); keep such texts short (sentences).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts must be strings, got a {type(bad).__name__}")
        base = len(tuple(specials)) + 256
        if type(vocab_size) is not int or vocab_size < base:
            raise ValueError(
                f"vocab_size must be an int of at least {base} ({len(tuple(specials))} specials + 256 bytes), "
                f"got {vocab_size!r}"
            )
        chunk_counts = Counter(chunk for text in texts for chunk in split_chunks(text, pre_split))
        merges, _ = learn_merges(chunk_counts, vocab_size - base, len(tuple(specials)), verbose)
        return cls(merges, specials, pre_split)

    def __len__(self) -> int:
        """Return the number of ids (specials + 256 bytes + merges)."""
        return len(self._vocab)

    @property
    def vocab_size(self) -> int:
        """Return the number of ids, as len() does."""
        return len(self._vocab)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """Return the merged pairs in rank order (merge r creates id len(specials) + 256 + r)."""
        return list(self._ranks)

    @property
    def vocab(self) -> dict[int, bytes]:
        """Return id -> bytes (a special token's bytes are its name's)."""
        return dict(enumerate(self._vocab))

    def __repr__(self) -> str:
        """Show the size and the settings."""
        return f"BPETokenizer(vocab_size={len(self)}, merges={len(self._ranks)}, pre_split={self.pre_split})"

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Bytes of one chunk, then the merges present, lowest rank first, until none applies."""
        ids = self._cache.get(chunk)
        if ids is None:
            ids = [len(self.specials) + b for b in chunk.encode("utf-8")]
            while len(ids) > 1:
                pair = min(zip(ids, ids[1:]), key=lambda p: self._ranks.get(p, len(self._vocab)))
                if pair not in self._ranks:
                    break
                ids = merge_pair(ids, pair, self._ranks[pair])
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Turn a string into ids, optionally framed by <bos> ... <eos>.

        Special-token names inside the text ("<eos>") are plain characters here, so input text cannot inject them.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got a {type(text).__name__}")
        for flag, name, special_id in ((bos, BOS, self.bos_id), (eos, EOS, self.eos_id)):
            if flag and special_id is None:
                raise ValueError(f"this tokenizer has no {name} token (specials: {self.specials})")
        ids = [self.bos_id] if bos else []
        for chunk in split_chunks(text, self.pre_split):
            ids += self._encode_chunk(chunk)
        return ids + ([self.eos_id] if eos else [])

    def _checked(self, ids) -> list[int]:
        """Return ids (a list or a 1-D tensor) as a list of ints; raise ValueError naming an id out of range."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        for i in ids:
            if type(i) is not int or not 0 <= i < len(self._vocab):
                raise ValueError(f"id {i!r} is not a token id (ids go from 0 to {len(self._vocab) - 1})")
        return ids

    def decode(self, ids, skip_specials: bool = True) -> str:
        """Turn ids back into a string; specials are dropped, or written as their names with skip_specials=False.

        Bytes that are not valid UTF-8 (a prefix cut in the middle of a character) become "\ufffd", never an error.
        """
        n_specials = len(self.specials)
        data = b"".join(self._vocab[i] for i in self._checked(ids) if i >= n_specials or not skip_specials)
        return data.decode("utf-8", errors="replace")

    def token_strings(self, ids) -> list[str]:
        """Show each token as text; a piece of a character shows as its bytes, e.g. "<0xC3>"."""
        pieces = []
        for i in self._checked(ids):
            try:
                pieces.append(self._vocab[i].decode("utf-8"))
            except UnicodeDecodeError:
                pieces.append("".join(f"<0x{b:02X}>" for b in self._vocab[i]))
        return pieces

    def to_dict(self) -> dict:
        """A plain dict for checkpoints (loadable with weights_only=True)."""
        return {
            "kind": "byte-bpe",
            "version": FORMAT_VERSION,
            "specials": list(self.specials),
            "pre_split": self.pre_split,
            "merges": [list(pair) for pair in self._ranks],
        }

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        """Rebuild a tokenizer saved with to_dict; raise ValueError for anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"a BPE tokenizer is saved as a dict, got a {type(d).__name__}")
        missing = [k for k in ("kind", "version", "specials", "pre_split", "merges") if k not in d]
        if missing:
            raise ValueError(f"not a saved BPE tokenizer: missing key(s) {missing}")
        if d["kind"] != "byte-bpe" or d["version"] != FORMAT_VERSION:
            raise ValueError(
                f"saved tokenizer is {d['kind']!r} version {d['version']!r}; "
                f"this code reads 'byte-bpe' version {FORMAT_VERSION}"
            )
        return cls([tuple(pair) for pair in d["merges"]], d["specials"], d["pre_split"])


def merge_steps(corpus: list[str] | str, n_merges: int) -> list[dict]:
    """Train on a toy corpus and describe each merge: the pair, its count and the corpus as tokens afterwards.

    No specials here, so ids 0..255 are the bytes. Each step is a dict with keys "step", "pair" (two strings),
    "new" (the merged string), "count" (adjacent occurrences of the pair) and "tokens" (the whole corpus, split).
    Fewer steps come back when the corpus runs out of pairs.
    """
    texts = [corpus] if isinstance(corpus, str) else list(corpus)
    chunk_counts = Counter(chunk for text in texts for chunk in split_chunks(text))
    merges, counts = learn_merges(chunk_counts, n_merges, offset=0)
    steps = []
    for k, count in enumerate(counts, start=1):
        tok = BPETokenizer(merges[:k], specials=())
        a, b = tok.token_strings(merges[k - 1])
        (new,) = tok.token_strings([256 + k - 1])
        tokens = [piece for text in texts for piece in tok.token_strings(tok.encode(text))]
        steps.append({"step": k, "pair": (a, b), "new": new, "count": count, "tokens": tokens})
    return steps

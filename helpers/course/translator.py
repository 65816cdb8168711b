"""A trained encoder-decoder with its tokenizers: English sentences in, French sentences out (08_translation).

Translator wraps a Seq2Seq (helpers.models) with the word tokenizers and vocabularies it was trained with, decodes
greedily or with beam search (helpers.decoding), repairs a generated <unk> through cross-attention, and saves and
loads the course's checkpoint layout (helpers.course.checkpoints).
"""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.bpe import BPETokenizer
from helpers.course.checkpoints import (
    CheckpointError,
    average_states,
    first_line,
    load_checkpoint,
    model_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    state_snapshot,
)
from helpers.course.datasets import Example, TranslationData, pad_batch
from helpers.course.scoring import cooccurrence_dictionary, sacrebleu_scores
from helpers.course.speedups import use_speedups
from helpers.course.utils import PROJECT_ROOT
from helpers.decoding import beam_search, greedy_decode, model_device, strip_after_eos
from helpers.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, Vocab, normalize
from helpers.training import TrainConfig, train

UNK_RULES = (
    "keep",
    "copy",
    "dictionary",
)  # a generated <unk>: left as is, the attended source word, or its translation


class Translator:
    """A trained Seq2Seq with its tokenizers and vocabularies: English sentences in, French sentences out."""

    def __init__(
        self,
        model,
        src_tok: Tokenizer,
        tgt_tok: Tokenizer,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        dictionary: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tok, tgt_tok
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.dictionary = dict(dictionary or {})  # English word -> French word, for <unk> replacement
        self.extra = dict(extra or {})

    @classmethod
    def from_data(cls, model, data: TranslationData, extra: dict | None = None) -> Translator:
        """Wrap a model trained on `data`, with the word dictionary of its training split."""
        return cls(
            model, data.src_tok, data.tgt_tok, data.src_vocab, data.tgt_vocab, cooccurrence_dictionary(data), extra
        )

    def source_ids(self, sentence: str) -> list[int]:
        """One English sentence -> its source ids, ending with <eos> (unknown words become <unk>)."""
        return self.src_vocab.encode(self.src_tok(sentence), eos=True)

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """English sentences -> (B, S) source ids ending with <eos>."""
        if isinstance(sentences, str):
            raise TypeError("translate() takes a list of sentences, not a single string")
        ids = []
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or len(self.source_ids(s)) < 2:
                raise ValueError(f"sentence {i} is empty: nothing to translate ({s!r})")
            ids.append(self.source_ids(s))
        too_long = [i for i, s in enumerate(ids) if len(s) > self.model.cfg.max_len]
        if too_long:
            raise ValueError(
                f"sentence {too_long[0]} has {len(ids[too_long[0]])} tokens; this model accepts at most "
                f"{self.model.cfg.max_len}"
            )
        return pad_batch(ids)

    def decode_ids(
        self, sentences: list[str], beam: int = 1, alpha: float = 0.6, max_len: int | None = None, batch_size: int = 256
    ) -> list[list[int]]:
        """Greedy (beam=1) or beam-search output ids for each sentence, without <eos>."""
        max_len = max_len or self.model.cfg.max_len - 1
        out = []
        for start in range(0, len(sentences), batch_size):
            src = self.encode(sentences[start : start + batch_size]).to(self.device)
            limit = min(max_len, 2 * src.shape[1] + 10)
            ids = (
                greedy_decode(self.model, src, limit) if beam == 1 else beam_search(self.model, src, beam, alpha, limit)
            )
            out.extend(strip_after_eos(ids))
        return out

    @torch.no_grad()
    def copy_unknowns(
        self, sentences: list[str], outputs: list[list[int]], layer: int = -1, use_dictionary: bool = True
    ) -> list[list[str]]:
        """Replace each generated <unk> with the source word that its cross-attention weighs most.

        The weights come from one teacher-forced pass over the output, averaged over heads of decoder `layer`;
        source <eos> is never copied. Names and numbers that the vocabulary does not know come through as they are;
        with use_dictionary, a source word seen in training is replaced by its dictionary translation instead
        (which brings back French words too rare for the vocabulary).
        """
        tokens = [self.tgt_vocab.decode(o) for o in outputs]
        todo = [i for i, o in enumerate(outputs) if UNK_ID in o]
        if not todo:
            return tokens
        src = self.encode([sentences[i] for i in todo]).to(self.device)
        tgt_in = pad_batch([[BOS_ID] + outputs[i] for i in todo]).to(self.device)
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

    def tokenizer_dict(self) -> dict:
        """The tokenizers and vocabularies as plain values (the "tokenizer" part of the checkpoint)."""
        return {
            "src_tok": self.src_tok.to_dict(),
            "tgt_tok": self.tgt_tok.to_dict(),
            "src_vocab": list(self.src_vocab.itos),
            "tgt_vocab": list(self.tgt_vocab.itos),
        }

    def checkpoint(self) -> dict:
        """Everything needed to translate again: float16 weights, config, tokenizers, vocabularies, the dictionary."""
        meta = {"dictionary": dict(self.dictionary), "extra": self.extra}
        return model_checkpoint(self.model, self.tokenizer_dict(), meta)

    def save(self, path: Path | str) -> Path:
        """Write the checkpoint atomically (an unchanged model leaves the file as it is)."""
        return save_checkpoint(self.checkpoint(), path)

    @staticmethod
    def load(path: Path | str, device: torch.device | str | None = None) -> Translator:
        """Load a checkpoint written by save() (torch.load with weights_only=True) onto `device` (default CPU).

        A model trained on byte-pair-encoded tokens comes back as a SubwordTranslator, a word-level one as a Translator.

        Every problem with the file, including a checkpoint of another kind (such as notebook 06's char-GPT), is a
        CheckpointError whose message names the file and what is wrong.
        """
        ckpt = load_checkpoint(path, kind="translation")
        model = model_from_checkpoint(ckpt, source=path)
        try:
            tok, meta = ckpt["tokenizer"], ckpt["meta"]
            if tok.get("kind") == SubwordTranslator.TOKENIZER_KIND:
                src_bpe = BPETokenizer.from_dict(tok["src"])
                tgt_bpe = src_bpe if tok["shared"] else BPETokenizer.from_dict(tok["tgt"])
                truecaser = None if tok["truecaser"] is None else Tokenizer.from_dict(tok["truecaser"])
                translator = SubwordTranslator(model, src_bpe, tgt_bpe, truecaser, meta.get("extra", {}))
                sizes = (len(src_bpe), len(tgt_bpe))
            else:
                translator = Translator(
                    model,
                    Tokenizer.from_dict(tok["src_tok"]),
                    Tokenizer.from_dict(tok["tgt_tok"]),
                    Vocab(tok["src_vocab"]),
                    Vocab(tok["tgt_vocab"]),
                    meta.get("dictionary", {}),
                    meta.get("extra", {}),
                )
                sizes = (len(translator.src_vocab), len(translator.tgt_vocab))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{path} does not hold usable tokenizers ({first_line(err)})") from None
        if sizes != (model.cfg.src_vocab_size, model.cfg.tgt_vocab_size):
            raise CheckpointError(f"{path} is inconsistent: its vocabularies do not match the model's sizes")
        if device is not None:
            translator.model.to(device)
        return translator

    @property
    def device(self) -> torch.device:
        """The device of the model's weights; batches are moved there."""
        return model_device(self.model)


def subword_text(text: str, lowercase: bool) -> str:
    """Text as a SubwordTranslator's tokenizers see it (train them on this too): normalised, optionally lower-cased."""
    text = normalize(text)
    return text.lower() if lowercase else text


class SubwordTranslator(Translator):
    """A Seq2Seq trained on byte-pair-encoded tokens: any English input encodes, and no output can hold <unk>.

    One BPETokenizer (helpers.bpe) per side, or the same one for both (a shared vocabulary). Text is normalised as
    for the word model (helpers.tokenizers.normalize). With a `truecaser` (a French word Tokenizer whose truecase
    table was fitted, as TranslationData.tgt_tok), both sides are lower-cased before encoding and the output is
    re-cased and re-spaced word by word, as the word model's output is; without one, text keeps its case.
    The `unk` argument of translate() is accepted for a common interface and changes nothing: decoding drops special
    tokens, and the target side never held an <unk> to learn.
    """

    TOKENIZER_KIND = "bpe-pair"

    def __init__(
        self,
        model,
        src_bpe: BPETokenizer,
        tgt_bpe: BPETokenizer,
        truecaser: Tokenizer | None = None,
        extra: dict | None = None,
    ):
        self.model, self.src_bpe, self.tgt_bpe, self.truecaser = model.eval(), src_bpe, tgt_bpe, truecaser
        self.dictionary, self.extra = {}, dict(extra or {})

    def prepare(self, text: str) -> str:
        """Text as the tokenizers see it: normalised, and lower-cased when the output is truecased."""
        return subword_text(text, lowercase=self.truecaser is not None)

    def source_ids(self, sentence: str) -> list[int]:
        """One English sentence -> its BPE ids, ending with <eos>."""
        return self.src_bpe.encode(self.prepare(sentence), eos=True)

    def postprocess(self, sentences: list[str], outputs: list[list[int]], unk: str = "keep") -> list[str]:
        """Decoded ids -> French sentences (the bytes of the tokens joined, specials dropped; re-cased if asked)."""
        if unk not in UNK_RULES:
            raise ValueError(f"unk must be one of {UNK_RULES}, got {unk!r}")
        texts = [self.tgt_bpe.decode(o) for o in outputs]
        if self.truecaser is None:
            return texts
        return [self.truecaser.detokenize([w.lower() for w in self.truecaser.surface(t)]) for t in texts]

    def tokenizer_dict(self) -> dict:
        """Both tokenizers as plain values; a shared vocabulary is stored once."""
        shared = self.src_bpe is self.tgt_bpe
        return {
            "kind": self.TOKENIZER_KIND,
            "shared": shared,
            "src": self.src_bpe.to_dict(),
            "tgt": None if shared else self.tgt_bpe.to_dict(),
            "truecaser": None if self.truecaser is None else self.truecaser.to_dict(),
        }

    def checkpoint(self) -> dict:
        """Everything needed to translate again: float16 weights, config, the BPE merges, extra."""
        return model_checkpoint(self.model, self.tokenizer_dict(), {"extra": self.extra})


def default_checkpoint() -> Path:
    """Where the full-mode notebook saves the translation model (looking it up creates no folder)."""
    return PROJECT_ROOT / "artifacts" / "checkpoints" / "translation.pt"


def translate_with_checkpoint(
    sentences: list[str], checkpoint: Path | str | None = None, beam: int | None = None, alpha: float | None = None
) -> list[str]:
    """Load the saved translation checkpoint and translate English sentences (beam=1: greedy; None: the saved choice).

    >>> translate_with_checkpoint(["I am cold.", "Where is Tom?"])  # doctest: +SKIP
    """
    translator = Translator.load(checkpoint or default_checkpoint())
    best = translator.extra.get("decoding", {})
    beam = best.get("beam", 4) if beam is None else beam
    alpha = best.get("alpha", 0.6) if alpha is None else alpha
    return translator.translate(list(sentences), beam=beam, alpha=alpha, unk=best.get("unk", "dictionary"))


def fit_translator(
    translator: Translator, next_batch, loss_fn, cfg: TrainConfig, valid: list[Example], log=print
) -> dict:
    """Train translator.model with helpers.training.train, then keep the weights that translate validation best.

    At every evaluation the weights are copied and the validation split is decoded greedily (sacreBLEU). At the end
    the candidates are the last copy, the best one, and the averages of the last 3 and of the last 5 copies
    (averaging weights along the end of training smooths out the noise of the last steps); the model keeps the
    candidate with the highest validation BLEU. Returns train()'s history with "weights" (the name of the candidate
    kept) and "weight_choice" (candidate -> validation BLEU).
    """
    model, valid_en, snapshots = translator.model, [ex.en for ex in valid], []

    def valid_bleu() -> float:
        return sacrebleu_scores(translator.translate(valid_en, beam=1), valid)["bleu"]

    def evaluate(step: int) -> dict:
        snapshots.append((step, state_snapshot(model)))
        return {"valid_bleu": valid_bleu()}

    use_speedups(model, cfg)
    history = train(model, next_batch, loss_fn, cfg, evaluate=evaluate, log=log)
    by_step = {e["step"]: e["valid_bleu"] for e in history["evals"]}
    best_step, best_state = max(snapshots, key=lambda s: by_step[s[0]])
    candidates = {"last": snapshots[-1][1], f"best (step {best_step})": best_state}
    for k in (3, 5):
        if len(snapshots) >= k:
            candidates[f"average of last {k}"] = average_states([s for _, s in snapshots[-k:]])
    choice = {}
    for name, state in candidates.items():
        model.load_state_dict(state)
        choice[name] = valid_bleu()
    history["weights"] = max(choice, key=choice.get)
    history["weight_choice"] = choice
    model.load_state_dict(candidates[history["weights"]])
    model.eval()
    return history

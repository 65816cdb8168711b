"""Train notebook 08's translator on byte-pair-encoded tokens and score it like the word-level model (a tuning run).

    python scripts/bpe_translation_trial.py --vocab 1000 --shared      # one vocabulary for English and French
    python scripts/bpe_translation_trial.py --vocab 1000               # separate vocabularies

Same data split, model sizes, optimiser and time limit as notebook 08's full run; BPE replaces the word tokenizers,
so there is no <unk> rule and no truecaser (BPE keeps the case). Prints validation and test BLEU and chrF
(sacreBLEU 13a, every reference) for greedy and beam search, and writes them to artifacts/tuning/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from helpers.bpe import BPETokenizer
from helpers.datasets import data_file, load_pairs, pad_batch, prepare_data, training_pairs
from helpers.decoding import beam_search, greedy_decode, strip_after_eos
from helpers.evaluation import sacrebleu_scores
from helpers.models import Seq2Seq, Seq2SeqConfig, translation_loss
from helpers.tokenizers import normalize
from helpers.training import TrainConfig, train
from helpers.utils import PROJECT_ROOT, atomic_write_text, set_seed

MODEL = dict(d_model=128, n_heads=4, n_enc_layers=3, n_dec_layers=3, d_ff=512, dropout=0.3, max_len=96, use_sdpa=True)
TRAIN = TrainConfig(
    max_steps=2500,
    batch_size=64,
    lr=2e-3,
    warmup_steps=200,
    weight_decay=0.1,
    min_lr_ratio=0.05,
    beta2=0.98,
    time_limit=540,
)


@torch.no_grad()
def translate(model, bpe_src, bpe_tgt, sentences: list[str], beam: int, alpha: float) -> list[str]:
    """English sentences -> French sentences with greedy (beam=1) or beam search."""
    model.eval()
    out = []
    for start in range(0, len(sentences), 256):
        src = pad_batch([bpe_src.encode(normalize(s), eos=True) for s in sentences[start : start + 256]])
        limit = min(MODEL["max_len"] - 1, 2 * src.shape[1] + 10)
        ids = greedy_decode(model, src, limit) if beam == 1 else beam_search(model, src, beam, alpha, limit)
        out.extend(bpe_tgt.decode(row) for row in strip_after_eos(ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1000, help="BPE vocabulary size (each, or shared)")
    parser.add_argument("--shared", action="store_true", help="one vocabulary for both languages")
    parser.add_argument("--drop", type=float, default=0.1, help="share of source tokens replaced by <unk> in training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=TRAIN.time_limit, help="seconds of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare_data(load_pairs(data_file("small")), seed=0, min_freq_src=1, min_freq_tgt=2)
    pairs = [(normalize(en), normalize(fr)) for en, fr in training_pairs(data.splits["train"])]
    if args.shared:
        bpe_src = bpe_tgt = BPETokenizer.train([en for en, _ in pairs] + [fr for _, fr in pairs], args.vocab)
    else:
        bpe_src = BPETokenizer.train([en for en, _ in pairs], args.vocab)
        bpe_tgt = BPETokenizer.train([fr for _, fr in pairs], args.vocab)
    src = [bpe_src.encode(en, eos=True) for en, _ in pairs]
    tgt = [bpe_tgt.encode(fr, bos=True, eos=True) for _, fr in pairs]
    set_seed(args.seed)
    model = Seq2Seq(Seq2SeqConfig(len(bpe_src), len(bpe_tgt), **MODEL))
    gen = torch.Generator().manual_seed(args.seed)
    stream = replace(data, train_src=src, train_tgt=tgt).batches(TRAIN.batch_size, gen, word_dropout=args.drop)
    cfg = replace(TRAIN, time_limit=args.time_limit)
    history = train(model, lambda: next(stream), lambda m, b: translation_loss(m, b, 0.1), cfg, log=lambda *a: None)
    result = {
        "vocab": args.vocab,
        "shared": args.shared,
        "sizes": [len(bpe_src), len(bpe_tgt)],
        "drop": args.drop,
        "steps": history["steps"],
        "train_seconds": round(history["train_seconds"], 1),
    }
    for split in ("valid", "test"):
        examples = data.splits[split]
        english = [ex.en for ex in examples]
        for beam, alpha in ((1, 0.0), (4, 0.0), (4, 0.6)):
            t0 = time.perf_counter()
            scores = sacrebleu_scores(translate(model, bpe_src, bpe_tgt, english, beam, alpha), examples)
            key = f"{split}_beam{beam}_alpha{alpha:g}"
            result[key] = {
                "bleu": round(scores["bleu"], 2),
                "chrf": round(scores["chrf"], 2),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(key, result[key], flush=True)
    name = f"bpe_translation_{'shared' if args.shared else 'separate'}_{args.vocab}_seed{args.seed}.json"
    atomic_write_text(PROJECT_ROOT / "artifacts" / "tuning" / name, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

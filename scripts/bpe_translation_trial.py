"""Train notebook 08's translator on byte-pair-encoded tokens and score it like the word-level model (a tuning run).

    python scripts/bpe_translation_trial.py --vocab 2000 --shared      # one vocabulary for English and French
    python scripts/bpe_translation_trial.py --vocab 1000               # separate vocabularies

Same data split, model sizes, optimiser and limits as notebook 08's full run, and the same choice of weights
(helpers.course.translator.fit_translator); BPE replaces the word tokenizers, so there is no <unk> rule and no
truecaser.
Prints validation and test BLEU and chrF (sacreBLEU 13a, every reference) for greedy and beam search, and writes
them to artifacts/tuning/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from functools import partial

import torch

from helpers.bpe import BPETokenizer
from helpers.course.datasets import data_file, load_pairs, prepare_data, training_pairs
from helpers.course.runs import describe_device
from helpers.course.scoring import sacrebleu_scores
from helpers.course.translator import SubwordTranslator, fit_translator, subword_text
from helpers.course.utils import PROJECT_ROOT, atomic_write_text, set_seed
from helpers.models import Seq2Seq, Seq2SeqConfig
from helpers.training import TrainConfig, translation_loss

MODEL = dict(d_model=128, n_heads=4, n_enc_layers=3, n_dec_layers=3, d_ff=512, dropout=0.3, max_len=96, use_sdpa=True)
TRAIN = TrainConfig(
    max_steps=2500,
    batch_size=64,
    lr=2e-3,
    warmup_steps=200,
    weight_decay=0.1,
    min_lr_ratio=0.05,
    beta2=0.98,
    eval_interval=250,
    time_limit=540,
)
DECODINGS = ((1, 0.0), (2, 0.0), (4, 0.0), (4, 0.6), (4, 1.0), (8, 0.0), (8, 0.6), (8, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=1000, help="BPE vocabulary size (each, or shared)")
    parser.add_argument("--shared", action="store_true", help="one vocabulary for both languages")
    parser.add_argument("--drop", type=float, default=0.1, help="share of source tokens replaced by <unk> in training")
    parser.add_argument("--lowercase", action="store_true", help="lower-case both sides; re-case the output by words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=TRAIN.max_steps)
    parser.add_argument("--time-limit", type=float, default=TRAIN.time_limit, help="seconds of training")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = prepare_data(load_pairs(data_file("small")), seed=0, min_freq_src=1, min_freq_tgt=2)
    truecaser = data.tgt_tok if args.lowercase else None  # the word model's French truecaser
    prepare = partial(subword_text, lowercase=args.lowercase)  # what SubwordTranslator.prepare will do
    pairs = [(prepare(en), prepare(fr)) for en, fr in training_pairs(data.splits["train"])]
    if args.shared:
        bpe_src = bpe_tgt = BPETokenizer.train([en for en, _ in pairs] + [fr for _, fr in pairs], args.vocab)
    else:
        bpe_src = BPETokenizer.train([en for en, _ in pairs], args.vocab)
        bpe_tgt = BPETokenizer.train([fr for _, fr in pairs], args.vocab)
    set_seed(args.seed)
    model = Seq2Seq(Seq2SeqConfig(len(bpe_src), len(bpe_tgt), **MODEL))
    translator = SubwordTranslator(model, bpe_src, bpe_tgt, truecaser)
    sub = data.with_subwords(bpe_src, bpe_tgt, translator.prepare)
    stream = sub.batches(TRAIN.batch_size, torch.Generator().manual_seed(args.seed), word_dropout=args.drop)
    warmup = min(TRAIN.warmup_steps, args.max_steps // 10)
    cfg = replace(
        TRAIN,
        time_limit=args.time_limit,
        max_steps=args.max_steps,
        warmup_steps=warmup,
        eval_interval=min(250, args.max_steps),
    )
    loss_fn = lambda m, b: translation_loss(m, b, 0.1)  # noqa: E731
    history = fit_translator(translator, lambda: next(stream), loss_fn, cfg, data.splits["valid"], log=lambda *a: None)
    result = {
        "vocab": args.vocab,
        "shared": args.shared,
        "lowercase": args.lowercase,
        "sizes": [len(bpe_src), len(bpe_tgt)],
        "drop": args.drop,
        "seed": args.seed,
        "provenance": describe_device(torch.device("cpu")),  # commit, machine, torch version, command
        "steps": history["steps"],
        "train_seconds": round(history["train_seconds"], 1),
        "valid_bleu_greedy_by_weights": {k: round(v, 2) for k, v in history["weight_choice"].items()},
        "weights": history["weights"],
    }
    for split in ("valid", "test"):
        examples = data.splits[split]
        english = [ex.en for ex in examples]
        for beam, alpha in DECODINGS:
            t0 = time.perf_counter()
            scores = sacrebleu_scores(translator.translate(english, beam=beam, alpha=alpha), examples)
            key = f"{split}_beam{beam}_alpha{alpha:g}"
            result[key] = {
                "bleu": round(scores["bleu"], 2),
                "chrf": round(scores["chrf"], 2),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(key, result[key], flush=True)
    kind = ("shared" if args.shared else "separate") + ("_lowercase" if args.lowercase else "")
    name = f"bpe_translation_{kind}_{args.vocab}_seed{args.seed}.json"
    atomic_write_text(PROJECT_ROOT / "artifacts" / "tuning" / name, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Translate English sentences into French with the checkpoint trained in notebooks/08_translation.ipynb.

    python translate.py "I am cold." "Where is Tom?" --beam 4
    echo "I am cold." | python translate.py             # one sentence per line from stdin
    python translate.py --file sentences.txt --greedy   # one sentence per line from a file
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.translation import UNK_RULES, Translator, default_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Translate English sentences into French with the course's transformer.")
    p.add_argument("sentences", nargs="*", help="sentences to translate (default: read lines from --file or stdin)")
    p.add_argument("--file", type=Path, help="read one sentence per line from this file")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="translation checkpoint (default: artifacts/checkpoints/translation.pt)")
    p.add_argument("--beam", type=int, default=None, help="beam width (default: the decoding the notebook chose)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding (same as --beam 1)")
    p.add_argument("--alpha", type=float, default=None, help="length penalty exponent for beam search")
    p.add_argument("--unk", choices=UNK_RULES, default=None,
                   help="what a generated <unk> becomes: keep it, copy the attended source word, or translate that word "
                        "with the training dictionary (default: the notebook's choice)")
    return p.parse_args(argv)


def read_sentences(args: argparse.Namespace) -> list[str]:
    """Sentences from the arguments, else from --file, else from stdin (blank lines skipped for files and stdin)."""
    if args.sentences:
        return list(args.sentences)
    text = args.file.read_text(encoding="utf-8") if args.file else sys.stdin.read()
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv=None) -> int:
    """Load the checkpoint, translate, print one French sentence per line."""
    args = parse_args(argv)
    path = args.checkpoint or default_checkpoint()
    if not path.exists():
        print(f"error: no checkpoint at {path}; run notebooks/08_translation.ipynb in full mode first", file=sys.stderr)
        return 2
    translator = Translator.load(path)
    best = translator.extra.get("decoding", {})
    beam = 1 if args.greedy else (args.beam or best.get("beam", 4))
    alpha = args.alpha if args.alpha is not None else best.get("alpha", 0.6)
    sentences = read_sentences(args)
    if not sentences:
        print("error: no sentences given (arguments, --file or stdin)", file=sys.stderr)
        return 2
    try:
        for line in translator.translate(sentences, beam=beam, alpha=alpha, unk=args.unk or best.get("unk", "dictionary")):
            print(line)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

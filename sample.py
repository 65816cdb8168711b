"""Sample text from the trained character-level GPT (the checkpoint notebooks/06_char_gpt.ipynb saves).

    python sample.py --prompt "ROMEO:" --length 300 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.generation import generate_text
from helpers.models import gpt_from_checkpoint
from helpers.shakespeare import CharTokenizer
from helpers.training import load_checkpoint
from helpers.utils import PROJECT_ROOT

DEFAULT_CHECKPOINT = PROJECT_ROOT / "artifacts" / "checkpoints" / "char_gpt.pt"


def parse_args(argv=None) -> argparse.Namespace:
    """Read the command-line options."""
    p = argparse.ArgumentParser(description="Continue a prompt with the character-level GPT.")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (characters of Tiny Shakespeare only)")
    p.add_argument("--length", type=int, default=300, help="number of characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    p.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with this probability mass")
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint written by 06_char_gpt")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Load the checkpoint, generate, print the text."""
    args = parse_args(argv)
    if not args.checkpoint.exists():
        print(f"No checkpoint at {args.checkpoint}. Create it by running notebooks/06_char_gpt.ipynb in full mode: "
              f"python run_all.py --only 06", file=sys.stderr)
        return 1
    ckpt = load_checkpoint(args.checkpoint)
    model = gpt_from_checkpoint(ckpt)
    tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"])
    try:
        text = generate_text(model, tokenizer, args.prompt, args.length, seed=args.seed, greedy=args.greedy,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             use_cache=not args.no_cache)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

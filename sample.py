"""Sample text from the trained character-level GPT (the checkpoint notebooks/06_char_gpt.ipynb saves).

    python sample.py --prompt "ROMEO:" --length 300 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 1

The text is printed as it is generated (Ctrl-C stops it and keeps what was printed); the device line goes to
stderr, so stdout holds only the text. Bad options and bad checkpoints end with "error: ..." and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "artifacts" / "checkpoints" / "char_gpt.pt"
MAX_LENGTH = 100_000  # characters per run: about a play of Shakespeare


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer in low..high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {f'in {low}..{high:,}' if high is not None else f'>= {low}'}, got {value}"
            )
        return value

    return parse


def _float_in(low: float, high: float, low_open: bool, what: str):
    """An argparse type: a finite float in (low, high] or [low, high] (high may be inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(description="Continue a prompt with the character-level GPT.")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (characters of Tiny Shakespeare only)")
    p.add_argument(
        "--length",
        type=_int_in(0, MAX_LENGTH),
        default=300,
        help=f"number of characters to generate, 0..{MAX_LENGTH:,} (default 300)",
    )
    p.add_argument(
        "--temperature",
        type=_float_in(0.0, math.inf, True, "a finite number > 0"),
        default=0.8,
        help="> 0; lower is more conservative (default 0.8)",
    )
    p.add_argument(
        "--top-k",
        type=_int_in(1),
        default=None,
        help="sample among the k most likely characters (1..the vocabulary size)",
    )
    p.add_argument(
        "--top-p",
        type=_float_in(0.0, 1.0, True, "in (0, 1]"),
        default=None,
        help="sample from the smallest set with this probability mass, in (0, 1]",
    )
    p.add_argument("--greedy", action="store_true", help="always take the most likely character")
    p.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="checkpoint written by notebook 06 (default: artifacts/checkpoints/char_gpt.pt)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N, mps or auto (default: $COURSE_DEVICE, else the best available)",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Read the command-line options (bad values exit with status 2)."""
    return build_parser().parse_args(argv)


_started = False  # set once text starts going to stdout


def error(message: str) -> int:
    """Print a one-line error on stderr and return exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Load the checkpoint, then print the prompt and the generated characters as they come."""
    args = parse_args(argv)
    from helpers.course.checkpoints import CheckpointError, load_char_gpt
    from helpers.course.utils import course_device
    from helpers.decoding import generate, prompt_ids

    try:
        with contextlib.redirect_stdout(sys.stderr):  # the device line; stdout is for the text
            device = course_device(args.device)
    except ValueError as err:
        return error(f"--device: {err}")
    try:
        model, tokenizer = load_char_gpt(args.checkpoint, device)
    except CheckpointError as err:
        return error(str(err))
    if args.top_k is not None and args.top_k > tokenizer.vocab_size:
        return error(f"argument --top-k: must be in 1..{tokenizer.vocab_size} (the vocabulary size), got {args.top_k}")
    try:
        idx, generator = prompt_ids(model, tokenizer, args.prompt, args.seed)
    except ValueError as err:  # the options are checked above: what is left is an empty prompt or unknown characters
        return error(f"--prompt: {err}")
    global _started
    out = sys.stdout
    _started = True
    out.write(args.prompt)
    out.flush()

    def write(ids):  # streaming: each new character as soon as it is generated
        out.write(tokenizer.decode(ids[0]))
        out.flush()

    sampling = dict(greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    generate(model, idx, args.length, **sampling, use_cache=not args.no_cache, generator=generator, on_token=write)
    out.write("\n")
    out.flush()
    return 0


def run(argv=None) -> int:
    """main() with Ctrl-C (exit 130) and a closed stdout (exit 1) handled without a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        if _started:  # end the partial text with a newline; what was printed stays
            with contextlib.suppress(Exception):
                sys.stdout.write("\n")
                sys.stdout.flush()
        print("interrupted" + (": the text above is what was generated so far" if _started else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python sample.py | head -c 100`
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(run())

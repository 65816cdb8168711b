"""Translate English sentences into French with the checkpoint trained in notebooks/08_translation.ipynb.

    python translate.py "I am cold." "Where is Tom?" --beam 4
    echo "I am cold." | python translate.py             # one sentence per line from stdin
    python translate.py --file sentences.txt --greedy   # one sentence per line from a file

Each input line gives one output line (a blank line gives a blank line), so the output lines up with the input.
The default checkpoint holds the model notebook 08 chose on validation; --checkpoint
artifacts/checkpoints/translation_subword.pt uses the one trained on byte-pair-encoded subwords.
The translators learned from 4,528 Tatoeba pairs whose English side has 1 to 5 words (mostly 2 or 3): short
everyday sentences. Longer input is translated but usually comes out wrong; a note on stderr says so. To train on
more, see data/README.md (the full Anki export, about 230k pairs).
The device line goes to stderr. Bad options, input and checkpoints end with "error: ..." and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path

UNK_CHOICES = ("keep", "copy", "dictionary")  # helpers.course.translator.UNK_RULES (tests check they agree)
TRAINED_MAX_WORDS = 5  # the longest English sentence of data/eng-fra-tatoeba-small.tsv (tests check it)
CHUNK_LINES = 64  # lines translated and printed together, so long inputs show progress


def _beam_width(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (1 is greedy decoding), got {value}")
    return value


def _alpha(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Translate English sentences into French with the course's transformer.")
    p.add_argument("sentences", nargs="*", help="sentences to translate (default: read lines from --file or stdin)")
    p.add_argument("--file", type=Path, help="read one sentence per line from this UTF-8 file")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="translation checkpoint (default: artifacts/checkpoints/translation.pt)",
    )
    decoding = p.add_mutually_exclusive_group()
    decoding.add_argument(
        "--beam",
        type=_beam_width,
        default=None,
        help="beam width, an integer >= 1 (default: the decoding the notebook chose)",
    )
    decoding.add_argument("--greedy", action="store_true", help="greedy decoding (same as --beam 1)")
    p.add_argument("--alpha", type=_alpha, default=None, help="length penalty exponent for beam search, >= 0")
    p.add_argument(
        "--unk",
        choices=UNK_CHOICES,
        default=None,
        help="what a generated <unk> becomes: keep it, copy the attended source word, or translate that word "
        "with the training dictionary (default: the notebook's choice; a subword model never generates <unk>)",
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


class InputError(ValueError):
    """Input that cannot be read; the message names the file (or stdin) and the problem."""


def _decode(data: bytes, where: str) -> str:
    """UTF-8 bytes (a byte-order mark is dropped) to text, or an InputError naming the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(
            f"{where} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def _split_lines(text: str) -> list[str]:
    """Lines separated by \\n (\\r\\n too); a final newline does not start another line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_input(args: argparse.Namespace) -> tuple[list[str], str]:
    """(lines, what to call them): the sentence arguments, else the lines of --file, else the lines of stdin."""
    if args.sentences:
        return list(args.sentences), "sentence"
    if args.file is not None:
        path = args.file
        if not path.exists():
            raise InputError(f"--file {path}: no such file")
        if path.is_dir():
            raise InputError(f"--file {path} is a directory, not a text file")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise InputError(f"--file {path} cannot be read: {err.strerror or err}") from None
        return _split_lines(_decode(data, f"--file {path}")), f"{path} line"
    return _split_lines(_decode(sys.stdin.buffer.read(), "stdin")), "stdin line"


def error(message: str) -> int:
    """Print a one-line error on stderr and return exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Load the checkpoint, translate, print one French sentence per input line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sentences and args.file is not None:
        parser.error("give sentences as arguments or with --file, not both")
    try:
        lines, label = read_input(args)
    except InputError as err:
        return error(str(err))
    if not lines:
        return error("no sentences given (arguments, --file or stdin)")

    from helpers.course.checkpoints import CheckpointError
    from helpers.course.translator import Translator, default_checkpoint
    from helpers.course.utils import course_device

    try:
        with contextlib.redirect_stdout(sys.stderr):  # the device line; stdout is for the translations
            device = course_device(args.device)
    except ValueError as err:
        return error(f"--device: {err}")
    path = args.checkpoint or default_checkpoint()
    try:
        translator = Translator.load(path, device=device)
    except CheckpointError as err:
        return error(str(err))

    n_ids = [len(translator.source_ids(line)) for line in lines]  # with the end-of-sentence mark
    blank = [n < 2 for n in n_ids]
    max_len = translator.model.cfg.max_len
    for i, (line, n_tokens) in enumerate(zip(lines, n_ids)):
        if blank[i] and label == "sentence":
            return error(f"sentence {i + 1} is empty: nothing to translate ({line!r})")
        if n_tokens > max_len:
            return error(
                f"{label} {i + 1} is too long: {n_tokens} tokens with the end mark; "
                f"this model accepts at most {max_len}"
            )

    long = [i + 1 for i, line in enumerate(lines) if len(line.split()) > TRAINED_MAX_WORDS]
    if long:
        print(
            f"note: {label} {', '.join(map(str, long[:5]))}{' ...' if len(long) > 5 else ''} "
            f"{'has' if len(long) == 1 else 'have'} more than {TRAINED_MAX_WORDS} words; the translators were "
            f"trained on sentences of 1 to {TRAINED_MAX_WORDS} words, so expect a poor translation",
            file=sys.stderr,
        )
    best = translator.extra.get("decoding", {})
    beam = 1 if args.greedy else (args.beam if args.beam is not None else best.get("beam", 4))
    alpha = args.alpha if args.alpha is not None else best.get("alpha", 0.6)
    unk = args.unk or best.get("unk", "dictionary")
    out = sys.stdout
    for start in range(0, len(lines), CHUNK_LINES):
        window = range(start, min(start + CHUNK_LINES, len(lines)))
        todo = [lines[i] for i in window if not blank[i]]
        try:
            french = iter(translator.translate(todo, beam=beam, alpha=alpha, unk=unk) if todo else [])
        except ValueError as err:
            return error(str(err))
        for i in window:
            out.write(("" if blank[i] else next(french)) + "\n")
        out.flush()
    return 0


def run(argv=None) -> int:
    """main() with Ctrl-C (exit 130) and a closed stdout (exit 1) handled without a traceback."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python translate.py --file big.txt | head`
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(run())

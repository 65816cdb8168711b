"""The capstone's last check: the learner's tokenizer, GPT, loop and sampler trained on Tiny Shakespeare.

The learner's model starts from the course GPT's initial weights and sees the same batches as the course's reference
run (the course's GPT, `torch.optim.AdamW` and `clip_grad_norm_`), so the two validation losses differ only by the
rounding of two implementations; the check allows SHAKESPEARE_MARGIN. It draws both training curves and samples from
the learner's model with the learner's sampler.
"""

from __future__ import annotations

import math
import sys
import time

import torch

from grader.checks.capstone import _cfg, _course_gpt, _load, _losses, _module, _reference_train, _suspiciously_low
from grader.core import exercise
from helpers.course.data import DataUnavailableError
from helpers.course.datasets import known_word_share, load_text, split_data, word_set
from helpers.course.scoring import evaluate_lm
from helpers.course.utils import PROJECT_ROOT, default_mode, relative

SHAKESPEARE_MARGIN = 0.05  # nats: the learner's validation loss against the course's, same weights and batches
SIZES = dict(block_size=64, d_model=64, n_heads=4, n_layers=2, dropout=0.0)
SETTINGS = {  # the learner's train() arguments; full: about two minutes for both runs on a laptop CPU
    "full": dict(steps=2000, batch_size=32, max_lr=3e-3, warmup=100, min_lr=3e-4, wd=0.1, max_norm=1.0),
    "quick": dict(steps=150, batch_size=32, max_lr=3e-3, warmup=15, min_lr=3e-4, wd=0.1, max_norm=1.0),
}
SEED = 0
VAL_WINDOWS = 256  # evenly spaced windows of the validation text, scored by the course's evaluate_lm
PROMPT = "ROMEO:\n"
FIGURE = PROJECT_ROOT / "build" / "capstone" / "12_shakespeare.png"


def _ids(text: str, index: dict[str, int]) -> torch.Tensor:
    return torch.tensor([index[ch] for ch in text], dtype=torch.long)


def _tokenizer(c, fn, text: str):
    got = c.call(fn, text)
    c.expect(
        isinstance(got, tuple) and len(got) == 3 and callable(got[1]) and callable(got[2]),
        f"char_tokenizer should return (chars, encode, decode), got {type(got).__name__}",
        "return the list of characters and the two functions",
    )
    return got


def _moving_average(values: list[float], width: int) -> list[float]:
    width = max(1, min(width, len(values)))
    sums = torch.tensor(values, dtype=torch.float64).cumsum(0)
    return ((sums[width - 1 :] - torch.cat([torch.zeros(1, dtype=torch.float64), sums[:-width]])) / width).tolist()


def _figure(mine: list[float], theirs: list[float], val: tuple[float, float]):
    """Both smoothed training curves and both validation losses, saved as FIGURE (and shown inside Jupyter)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = max(1, len(mine) // 40)
    steps = range(width, len(mine) + 1)
    ax.plot(steps, _moving_average(theirs, width), lw=3, alpha=0.5, label=f"the course's GPT (validation {val[1]:.3f})")
    ax.plot(steps, _moving_average(mine, width), lw=1.2, color="black", label=f"your GPT (validation {val[0]:.3f})")
    ax.set(xlabel="step", ylabel=f"training loss (mean of {width} steps)", title="Tiny Shakespeare, same weights")
    ax.grid(alpha=0.3)
    ax.legend()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    if "ipykernel" in sys.modules:
        from IPython.display import display

        display(fig)


def _sample(c, generate, model, encode, decode, n: int) -> str:
    prompt = encode(PROMPT).reshape(1, -1)
    out = c.call(generate, model, prompt, n, 0.8, torch.Generator().manual_seed(SEED))
    return decode(out[0].tolist())


@exercise("12.shakespeare", "it trains: your GPT on Tiny Shakespeare", "char_tokenizer", time_factor=4)
def _shakespeare(fn, case):
    with case("the characters of 'to be, or not to be': sorted, each once; decode(encode(s)) gives s back") as c:
        s = "to be, or not to be"
        chars, encode, decode = _tokenizer(c, fn, s)
        want = sorted(set(s))
        c.expect(list(chars) == want, f"chars should be {want}, got {list(chars)}", "sorted(set(text))")
        ids = c.call(encode, s)
        c.expect(
            isinstance(ids, torch.Tensor) and ids.dtype == torch.long and ids.tolist() == [want.index(ch) for ch in s],
            f"encode(s) should be the LongTensor {[want.index(ch) for ch in s]}, got {ids!r}",
            "the id of a character is its place in chars",
        )
        back = c.call(decode, ids.tolist())
        c.expect(back == s, f"decode(encode(s)) gave {back!r}", "join the characters of the ids")

    mode = default_mode()
    run = SETTINGS[mode]
    with case(
        f"it trains: Tiny Shakespeare, {run['steps']} steps ({mode} mode): your tokenizer, GPT, train and generate, "
        f"from the course GPT's initial weights and batches, end within {SHAKESPEARE_MARGIN} of its validation loss"
    ) as c:
        names = fn.__globals__
        for name, what in (("GPT", "12.gpt"), ("train", "12.train"), ("generate", "12.sample")):
            c.expect(callable(names.get(name)), f"no {name} of your own found (exercise {what})", f"write {what} first")
        try:
            text = load_text()
        except DataUnavailableError as e:
            c.fail(str(e), "put tinyshakespeare.txt into data/ (see the README)")
        chars, encode, decode = _tokenizer(c, fn, text)
        ids = c.call(encode, text)
        index = {ch: i for i, ch in enumerate(sorted(set(text)))}
        c.expect(
            list(chars) == list(index) and isinstance(ids, torch.Tensor) and torch.equal(ids, _ids(text, index)),
            "your ids of Tiny Shakespeare are not the places of its characters in sorted order",
            "sorted(set(text)), and one id per character of the text",
        )
        train_ids, val_ids = split_data(ids)
        cfg = _cfg(vocab_size=len(chars), **SIZES)
        ref = _course_gpt(cfg, seed=SEED)
        untrained = _course_gpt(cfg, seed=SEED)
        model = _module(c, c.call(names["GPT"], cfg), "GPT(cfg)")
        _load(c, model, {k: v.clone() for k, v in ref.state_dict().items()})

        t0 = time.perf_counter()
        got = c.call(names["train"], model, train_ids, *run.values(), torch.Generator().manual_seed(SEED))
        t_mine = time.perf_counter() - t0
        got = _losses(c, got, run["steps"])
        t0 = time.perf_counter()
        want_losses = _reference_train(ref, train_ids, *run.values(), seed=SEED)
        t_ref = time.perf_counter() - t0
        mine, theirs = (evaluate_lm(m, val_ids, cfg.block_size, max_windows=VAL_WINDOWS)[0] for m in (model, ref))
        _figure(got, want_losses, (mine, theirs))
        c.note(
            f"validation loss: yours {mine:.4f}, the course's {theirs:.4f} (untrained: {math.log(len(chars)):.3f}); "
            f"training {t_mine:.0f} s, the course's {t_ref:.0f} s; both curves: {relative(FIGURE)}"
        )
        _suspiciously_low(c, got[-1], mine, want_losses[-1])
        c.expect(
            abs(mine - theirs) <= SHAKESPEARE_MARGIN,
            f"your validation loss is {mine:.3f}, the course's {theirs:.3f} from the same weights and batches; "
            f"training losses {got[0]:.3f} -> {got[-1]:.3f}, "
            f"the course's {want_losses[0]:.3f} -> {want_losses[-1]:.3f}",
            "the checks of 12.gpt and 12.train compare each part on its own: run them first",
        )
        sample = _sample(c, names["generate"], model, encode, decode, 300)
        before = _sample(c, names["generate"], untrained, encode, decode, 300)
        known = word_set(text[: len(train_ids)])
        c.note(
            f"words of the sample found in the training text: {known_word_share(sample[len(PROMPT) :], known):.0%} "
            f"(the same sampler, untrained weights: {known_word_share(before[len(PROMPT) :], known):.0%})"
        )
        c.note("your GPT, temperature 0.8:\n" + sample)

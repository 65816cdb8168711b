"""Checks of the exercises of notebooks 06-08: training, generation, translation (introduced in the exercises).

Every check compares the learner's function with an oracle: PyTorch where it has one, otherwise the course's helpers
(which the test suite checks), or a brute-force computation small enough to trust.
The KV-cache exercise (07.kv_cache) runs on helpers.models.TinyDecoder, a one-head decoder.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU
from torch import nn

from grader.core import exercise, matching_mistake, mistake_hint
from helpers.course.datasets import get_batch
from helpers.models import GPT, GPTConfig, TinyDecoder

F64 = torch.float64


def _as_float(c, value, what: str) -> float:
    """A learner's number as a float (a Python number or a one-element tensor), or the case fails."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.fail(f"{what} should be a number, got {type(value).__name__}")
    return float(value)


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _same_numbers(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-12) for u, v in zip(a, b))


def _expect_number(c, what: str, got, want: float, mistakes: dict[str, float] | None = None, tol=1e-9, hint=""):
    """Fail unless got is a number equal to want; name the mistake whose value got equals."""
    value = _as_float(c, got, what)
    if _close(value, want, tol):
        return
    found = matching_mistake(value, mistakes or {}, same=lambda a, b: _close(a, b, tol))
    c.fail(f"{what} is {value:.6g}, expected {want:.6g}", found or hint)


def _expect_loss(c, got, want: torch.Tensor, mistakes: dict[str, torch.Tensor], what: str = "the loss") -> None:
    """A scalar loss tensor, still attached to the graph, equal to want."""
    c.expect(
        isinstance(got, torch.Tensor),
        f"{what} should be a tensor (so that backward() can run), got {type(got).__name__}",
        "keep the loss a tensor: no .item() and no float()",
    )
    if got.dim() != 0:
        c.fail(f"{what} should be a scalar (shape ()), got shape {tuple(got.shape)}", "average over every position")
    c.expect_close(what, got, want, atol=1e-9, rtol=1e-9, mistakes=mistakes)
    c.expect(
        got.requires_grad,
        f"{what} is cut off from the logits: backward() could not reach the model",
        "build the loss from the logits with tensor operations only (no .item(), .detach() or .numpy())",
    )


# ---------------------------------------------------------------- 06 char GPT


@exercise("06.batch", "windows of inputs and their next-character targets", "make_batch")
def _batch(fn, case):
    text = torch.arange(100, 130)  # ids 100..129: a window of it reads as its positions
    data = torch.randint(65, (200,), generator=torch.Generator().manual_seed(6))
    g_starts, g_batch = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    random_starts = torch.randint(len(data) - 8, (4,), generator=g_starts)  # the draw get_batch makes
    for name, d, starts, block_size, oracle in [
        ("ids 100..129, windows starting at 0, 5 and 17 (block_size 6)", text, torch.tensor([0, 5, 17]), 6, None),
        ("the last window that fits: its target ends on the last id", text, torch.tensor([len(text) - 5]), 4, None),
        (
            "4 windows of random characters, as helpers.course.datasets.get_batch draws them",
            data,
            random_starts,
            8,
            lambda: get_batch(data, 4, 8, generator=g_batch),
        ),
    ]:
        with case(name) as c:
            out = c.call(fn, d.clone(), starts.clone(), block_size)
            c.expect(isinstance(out, tuple) and len(out) == 2, "return a tuple (x, y)")
            x, y = out
            offsets = starts[:, None] + torch.arange(block_size)  # (B, 1) + (T,) -> (B, T)
            want_x, want_y = oracle() if oracle else (d[offsets], d[offsets + 1])
            c.expect_close(
                "x", x, want_x, mistakes={"windows one id too long": d[starts[:, None] + torch.arange(block_size + 1)]}
            )
            shifted_back = d[(offsets - 1).clamp(min=0)]
            c.expect_close(
                "y",
                y,
                want_y,
                mistakes={
                    "targets equal to the inputs (not shifted)": want_x,
                    "targets shifted the wrong way (the previous id instead of the next)": shifted_back,
                },
            )


@exercise("06.lm_loss", "the language-model loss", "lm_loss")
def _lm_loss(fn, case):
    g = torch.Generator().manual_seed(6)
    flat_hint = (
        (
            "Expected target size",
            "F.cross_entropy takes the classes on axis 1: flatten the logits to "
            "(B*T, vocab_size) and the targets to (B*T,)",
        ),
    )
    for name, (b, t, v), scale in [
        ("a (2, 4, 5) batch of random logits", (2, 4, 5), 2.0),
        ("T equal to vocab_size, (3, 6, 6): the softmax must run over the vocabulary axis", (3, 6, 6), 2.0),
        ("uniform logits over 65 characters give ln 65 ≈ 4.17, the loss of an untrained model", (2, 3, 65), 0.0),
    ]:
        with case(name) as c:
            logits = torch.randn(b, t, v, generator=g, dtype=F64) * scale
            targets = torch.randint(v, (b, t), generator=g)
            out = c.call(fn, logits.clone().requires_grad_(True), targets.clone(), error_hints=flat_hint)
            want = F.cross_entropy(logits.reshape(-1, v), targets.reshape(-1))
            per_position = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, V, T) -> (B, T)
            wrong_axis = -torch.log_softmax(logits, dim=1).gather(-1, targets[..., None]).mean()
            mistakes = {
                "a sum over the positions instead of a mean": per_position.sum(),
                "averaging over the batch only (the positions summed)": per_position.sum(1).mean(),
                "a log-softmax over the positions (axis 1) instead of the vocabulary (the last axis)": wrong_axis,
            }
            if t == v:
                label = (
                    "passing the (B, T, vocab_size) logits to F.cross_entropy unflattened (axis 1 becomes the classes)"
                )
                mistakes[label] = F.cross_entropy(logits, targets)
            _expect_loss(c, out, want, mistakes)


def _tiny_gpt(seed: int = 0) -> GPT:
    """A seeded one-block GPT in float64 (its loss is computed in float32), small enough to train in milliseconds."""
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=13, block_size=8, d_model=16, n_heads=2, n_layers=1, dropout=0.0)
    return GPT(cfg).double()


def _flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _reference_step(model, optimizer, x, y, zero_grad: bool = True) -> float:
    """The step the exercise asks for (or, with zero_grad=False, the one that forgets to clear the gradients)."""
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _lm_batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(13, (4, 8), generator=g), torch.randint(13, (4, 8), generator=g)) for _ in range(n)]


@exercise("06.train_step", "one training step", "train_step")
def _train_step(fn, case):
    frozen = "the weights did not change: call backward() on the loss, then optimizer.step()"
    with case("one AdamW step on a tiny GPT: the same weights as a reference step") as c:
        model = _tiny_gpt()
        ref = copy.deepcopy(model)
        before = _flat_params(model)
        ((x, y),) = _lm_batches(1)
        c.call(fn, model, torch.optim.AdamW(model.parameters(), lr=1e-2), x, y)
        _reference_step(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2), x, y)
        after = _flat_params(model)
        c.expect(not torch.equal(after, before), frozen)
        c.expect_close("the flattened parameter vector after the step", after, _flat_params(ref), atol=1e-6, rtol=1e-5)

    with case("two SGD steps in a row: the first step's gradients must not leak into the second") as c:
        model = _tiny_gpt(1)
        ref, no_zero = copy.deepcopy(model), copy.deepcopy(model)
        opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (model, ref, no_zero)]
        for x, y in _lm_batches(2, seed=1):
            c.call(fn, model, opts[0], x, y)
            _reference_step(ref, opts[1], x, y)
            _reference_step(no_zero, opts[2], x, y, zero_grad=False)
        label = "a step that never zeroes the gradients (backward() adds to the .grad left by the previous step)"
        c.expect_close(
            "the flattened parameter vector after two steps",
            _flat_params(model),
            _flat_params(ref),
            atol=1e-6,
            rtol=1e-5,
            mistakes={label: _flat_params(no_zero)},
        )

    with case("the return value: the batch's loss before the step, as a Python float") as c:
        model = _tiny_gpt(2)
        ref = copy.deepcopy(model)
        ((x, y),) = _lm_batches(1, seed=2)
        out = c.call(fn, model, torch.optim.AdamW(model.parameters(), lr=1e-2), x, y)
        if isinstance(out, torch.Tensor):
            c.fail(
                f"returned a tensor of shape {tuple(out.shape)}, expected a Python float",
                "a float does not keep the graph alive: .item() turns a one-element tensor into a number",
            )
        want = _reference_step(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2), x, y)
        with torch.no_grad():
            after = ref(x, y)[1].item()
        after_label = "the loss after the step (computed again)"
        _expect_number(c, "the returned loss", out, want, {after_label: after}, tol=1e-6)
        c.expect(isinstance(out, float), f"return a Python float, got {type(out).__name__}")


def _schedule(step, max_lr, warmup_steps, total_steps, min_lr, mistake: str = "") -> float:
    """The course's warm-up + cosine in absolute terms, or one of its classic mistakes."""
    if step < warmup_steps:
        return max_lr * (step if mistake == "off by one" else step + 1) / warmup_steps
    if mistake == "over total":
        progress = step / total_steps
    else:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if mistake != "no hold":
        progress = min(1.0, progress)
    floor = 0.0 if mistake == "to zero" else min_lr
    return floor + (max_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


_SCHEDULE_MISTAKES = {
    "off by one": "a warm-up off by one (max_lr · step / warmup_steps gives 0 at step 0; step 0 is the first of the "
    "warm-up steps and already gets max_lr / warmup_steps)",
    "to zero": "a cosine that decays to 0 instead of min_lr",
    "over total": "a cosine whose progress is counted from step 0 over total_steps (it starts after the warm-up)",
    "no hold": "a cosine that goes on past total_steps (it rises again; the rate should stay at min_lr)",
}


@exercise("06.warmup_cosine", "the warm-up + cosine learning-rate schedule", "lr_at")
def _warmup_cosine(fn, case):
    for name, (max_lr, warmup, total, min_lr), steps in [
        ("max_lr 1e-3, warmup_steps 4, total_steps 12, min_lr 1e-4: steps 0 to 11", (1e-3, 4, 12, 1e-4), range(12)),
        ("past total_steps the rate stays at min_lr: steps 10 to 18", (1e-3, 4, 12, 1e-4), range(10, 19)),
        ("no warm-up (warmup_steps 0): step 0 already gets max_lr; min_lr 0", (2e-3, 0, 6, 0.0), range(8)),
    ]:
        with case(name) as c:
            got = [_as_float(c, c.call(fn, s, max_lr, warmup, total, min_lr), f"the rate at step {s}") for s in steps]
            want = [_schedule(s, max_lr, warmup, total, min_lr) for s in steps]
            bad = [i for i, (a, b) in enumerate(zip(got, want)) if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)]
            if bad:
                s = steps[bad[0]]
                wrong = {
                    label: [_schedule(t, max_lr, warmup, total, min_lr, key) for t in steps]
                    for key, label in _SCHEDULE_MISTAKES.items()
                }
                c.fail(
                    f"the learning rate at step {s} is {got[bad[0]]:.6g}, expected {want[bad[0]]:.6g} "
                    f"({len(bad)} of the {len(got)} steps differ)",
                    matching_mistake(got, wrong, same=_same_numbers),
                )


# ---------------------------------------------------------------- 07 generation: sampling


def _row_sum_symptom(probs) -> str:
    """Say which row of probabilities does not sum to 1 ('' when all do or probs is not a usable tensor)."""
    if not isinstance(probs, torch.Tensor) or torch.isnan(probs).any():
        return ""
    sums = probs.detach().double().sum(-1).reshape(-1)
    off = ((sums - 1).abs() > 1e-6).nonzero()
    if len(off) == 0:
        return ""
    row = int(off[0])
    return f"the probabilities of row {row} sum to {float(sums[row]):.4g}, not 1"


@exercise("07.greedy", "greedy: the most likely next token", "greedy_next")
def _greedy_next(fn, case):
    g = torch.Generator().manual_seed(7)
    for name, logits in [
        ("one row of 5 logits", torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05]).log()),
        ("a batch (3, 11)", torch.randn(3, 11, generator=g, dtype=torch.float64)),
        ("a batch of sequences (2, 4, 7)", torch.randn(2, 4, 7, generator=g, dtype=torch.float64)),
    ]:
        with case(name) as c:
            ids = c.call(fn, logits.clone())
            want = logits.argmax(dim=-1)
            c.expect(isinstance(ids, torch.Tensor), f"return a tensor of ids, got {type(ids).__name__}")
            c.expect(
                ids.shape == want.shape,
                f"the ids have shape {tuple(ids.shape)}, expected {tuple(want.shape)} (one id per row)",
                "take the largest along the last axis (the vocabulary), not over the whole tensor",
            )
            if not torch.equal(ids.long(), want):
                hint = ""
                if ids.is_floating_point() and torch.allclose(ids.double(), logits.amax(dim=-1).double()):
                    hint = "these are the largest logits themselves; return their positions"
                elif torch.equal(ids.long(), logits.argmin(dim=-1)):
                    hint = mistake_hint("taking the smallest logit")
                c.fail(f"ids {ids.tolist()} differ from the most likely tokens {want.tolist()}", hint)
            c.expect(not ids.is_floating_point(), f"the ids are {ids.dtype}: token ids are integers (torch.long)")


@exercise("07.temperature", "sampling probabilities at a temperature", "temperature_probs")
def _temperature(fn, case):
    g = torch.Generator().manual_seed(7)
    overflow = "exp overflows for large logits: subtract each row's largest logit first (the softmax does not change)"
    for name, logits, tau in [
        ("τ = 0.5 sharpens a (2, 6) batch of logits", torch.randn(2, 6, generator=g, dtype=F64) * 2, 0.5),
        ("τ = 2 flattens one row (vocab_size,) of logits", torch.randn(7, generator=g, dtype=F64) * 2, 2.0),
        (
            "large logits (±500) at τ = 0.1: no overflow, no NaN",
            torch.tensor([[500.0, -500.0, 499.0, 0.0]], dtype=F64),
            0.1,
        ),
    ]:
        with case(name) as c:
            out = c.call(fn, logits.clone(), tau)
            want = torch.softmax(logits / tau, dim=-1)
            plain = torch.softmax(logits, dim=-1)
            mistakes = {
                "the temperature applied after the softmax (dividing the probabilities, not the logits)": plain / tau,
                "the temperature applied after the softmax and renormalised (it then has no effect)": plain,
                "multiplying the logits by the temperature instead of dividing them": torch.softmax(logits * tau, -1),
            }
            if logits.dim() == 2:
                mistakes["a softmax over the batch axis instead of the vocabulary"] = torch.softmax(logits / tau, 0)
            if isinstance(out, torch.Tensor) and out.shape == want.shape and _row_sum_symptom(out):
                c.fail(_row_sum_symptom(out), matching_mistake(out, mistakes))
            c.expect_close(
                "the probability tensor",
                out,
                want,
                atol=1e-9,
                rtol=1e-7,
                mistakes=mistakes,
                hint=overflow if isinstance(out, torch.Tensor) and torch.isnan(out).any() else "",
            )


def _expect_filtered(c, got, want: torch.Tensor, logits: torch.Tensor, mistakes: dict[str, torch.Tensor]) -> None:
    """Compare filtered logits: first which tokens are kept (finite), then that kept logits are unchanged."""
    what = "the filtered logits tensor"
    if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.isnan(got).any():
        got_kept, want_kept = (
            torch.isfinite(got).reshape(-1, want.shape[-1]),
            torch.isfinite(want).reshape(-1, want.shape[-1]),
        )
        rows = (got_kept != want_kept).any(-1).nonzero()
        if len(rows):
            r = int(rows[0])
            probs = torch.softmax(logits.reshape(-1, want.shape[-1])[r].double(), -1)
            missing = (want_kept[r] & ~got_kept[r]).nonzero().flatten().tolist()
            extra = (got_kept[r] & ~want_kept[r]).nonzero().flatten().tolist()
            where = f"row {r}" if want.dim() > 1 else "the row"
            parts = [f"{where} keeps {int(got_kept[r].sum())} token(s), the reference keeps {int(want_kept[r].sum())}"]
            if not got_kept[r].any():
                parts.append("no token is left at all: the most likely token must always stay")
            if missing:
                parts.append("missing: " + ", ".join(f"token {t} (probability {probs[t]:.3g})" for t in missing))
            if extra:
                parts.append(
                    "kept but should be -inf: " + ", ".join(f"token {t} (probability {probs[t]:.3g})" for t in extra)
                )
            hint = matching_mistake(got, mistakes)
            zeros = extra and all(float(got.reshape(-1, want.shape[-1])[r, t]) == 0.0 for t in extra)
            if not hint and zeros:
                hint = "a dropped logit must be -inf: a logit of 0 still gets probability after the softmax"
            c.fail("; ".join(parts), hint)
    c.expect_close(
        what,
        got,
        want,
        atol=1e-12,
        rtol=1e-12,
        mistakes=mistakes,
        hint="leave the kept logits as they are: no softmax, no rescaling",
    )


def _keep_exactly(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k that keeps exactly k tokens, dropping ties with the k-th (a mistake under the course's contract)."""
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, torch.topk(logits, k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


@exercise("07.top_k", "top-k filtering", "top_k_filter")
def _top_k(fn, case):
    g = torch.Generator().manual_seed(7)
    batch = torch.randn(2, 6, generator=g, dtype=F64) * 2
    row = torch.randn(8, generator=g, dtype=F64) * 2
    tie = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.5, 2.0]], dtype=F64)
    for name, calls in [
        ("k = 2 on a (2, 6) batch of logits", [(batch, 2)]),
        (
            "one row (vocab_size,): k = 1 keeps only the largest logit, k = vocab_size keeps them all",
            [(row, 1), (row, 8)],
        ),
        ("ties: a logit equal to the k-th largest is kept too (k = 3 keeps 4 of 6 here)", [(tie, 3)]),
    ]:
        with case(name) as c:
            for logits, k in calls:
                out = c.call(fn, logits.clone(), k)
                want = _top_k_brute(logits, k)
                kth_small = torch.topk(logits, k, dim=-1, largest=False).values[..., -1:]
                smallest = logits.masked_fill(logits > kth_small, float("-inf"))
                mistakes = {
                    "keeping the k smallest logits instead of the largest": smallest,
                    "setting the dropped logits to 0 instead of -inf": logits.masked_fill(~torch.isfinite(want), 0.0),
                    "keeping exactly k tokens when another ties with the k-th (ties are kept)": _keep_exactly(
                        logits, k
                    ),
                }
                if k > 1:
                    mistakes["keeping k - 1 tokens (an off-by-one on the k-th largest)"] = _top_k_brute(logits, k - 1)
                if k < logits.shape[-1]:
                    mistakes["keeping k + 1 tokens (an off-by-one on the k-th largest)"] = _top_k_brute(logits, k + 1)
                _expect_filtered(c, out, want, logits, mistakes)


def _top_k_brute(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k by brute force, row by row: keep every logit at least as large as the k-th largest of its row."""
    rows = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(rows, -math.inf)
    for r, row in enumerate(rows.tolist()):
        kth = sorted(row, reverse=True)[k - 1]
        for j, value in enumerate(row):
            if value >= kth:
                out[r, j] = value
    return out.reshape(logits.shape)


def _top_p_brute(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Top-p by brute force, row by row: take tokens from the most likely down until their probabilities reach p."""
    rows = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(rows, -math.inf)
    for r, row in enumerate(rows.tolist()):
        top = max(row)
        weights = [math.exp(v - top) for v in row]
        probs = [w / sum(weights) for w in weights]
        mass = 0.0
        for j in sorted(range(len(row)), key=lambda i: -probs[i]):
            if mass >= p:
                break
            out[r, j] = row[j]
            mass += probs[j]
    return out.reshape(logits.shape)


def _top_p_mistakes(logits: torch.Tensor, p: float) -> dict[str, torch.Tensor]:
    """The outputs of the classic top-p mistakes."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = torch.cumsum(probs, dim=-1)
    crossing_dropped = torch.zeros_like(cum, dtype=torch.bool).scatter(-1, order, cum > p)
    unsorted_probs = torch.softmax(logits, dim=-1)
    unsorted_drop = torch.cumsum(unsorted_probs, dim=-1) - unsorted_probs >= p
    in_sorted_order = sorted_logits.masked_fill((cum - probs) >= p, -math.inf)
    crossing, unsorted = logits.masked_fill(crossing_dropped, -math.inf), logits.masked_fill(unsorted_drop, -math.inf)
    return {
        "dropping the token that crosses p (keep it: the kept probabilities must reach p)": crossing,
        "a cumulative sum in vocabulary order instead of from the most likely token down": unsorted,
        "leaving the logits in sorted order (put them back in vocabulary order)": in_sorted_order,
    }


@exercise("07.top_p", "top-p (nucleus) filtering", "top_p_filter")
def _top_p(fn, case):
    g = torch.Generator().manual_seed(7)
    hand = torch.tensor([0.05, 0.5, 0.1, 0.3, 0.05], dtype=F64).log()  # the two most likely: tokens 1 and 3
    batch = torch.randn(3, 8, generator=g, dtype=F64) * 1.5
    for name, calls in [
        (
            "p = 0.7 on probabilities (0.05, 0.5, 0.1, 0.3, 0.05): 0.5 is short of p, 0.5 + 0.3 reaches it",
            [(hand, 0.7)],
        ),
        ("p = 0.3, below the largest probability: only the most likely token stays", [(hand, 0.3)]),
        ("a random (3, 8) batch at p = 0.9, then p = 1 keeps every token", [(batch, 0.9), (batch, 1.0)]),
    ]:
        with case(name) as c:
            for logits, p in calls:
                out = c.call(fn, logits.clone(), p)
                _expect_filtered(c, out, _top_p_brute(logits, p), logits, _top_p_mistakes(logits, p))


# ---------------------------------------------------------------- 07 generation: a KV cache


def _reference_cached_step(model: TinyDecoder, new_ids, cache, mistake: str = ""):
    """One cached step done right (or with one classic mistake): (logits (B, T_new, V), the new cache)."""
    offset = 0 if cache is None else cache["k"].shape[1]
    t_new = new_ids.shape[1]
    start = 0 if mistake == "restart" else offset
    x = model.tok_emb(new_ids) + model.pos_emb(torch.arange(start, start + t_new))  # (B, T_new, C)
    q, k_new, v_new = model.q_proj(x), model.k_proj(x), model.v_proj(x)
    k, v = k_new, v_new
    if cache is not None:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)  # (B, T_all, C)
    k_seen, v_seen = (k_new, v_new) if mistake == "own keys" else (k, v)
    t_seen = k_seen.shape[1]
    scores = q @ k_seen.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T_new, T_all)
    if mistake != "no mask":
        allowed = torch.ones(t_new, t_seen, dtype=torch.bool).tril(t_seen - t_new)  # new query i: keys ..offset+i
        scores = scores.masked_fill(~allowed, float("-inf"))
    logits = model.lm_head(x + torch.softmax(scores, dim=-1) @ v_seen)
    return logits, {"k": k, "v": v}


_CACHE_MISTAKES = {
    "restart": "a KV cache whose new tokens get positions that restart at 0 (they continue after the cached ones)",
    "own keys": "new queries that attend only to the new keys (the cached keys and values are not used)",
    "no mask": "no causal mask among the new tokens (a new token sees the new tokens after it)",
}


def _expect_cache(c, cache, shape: tuple[int, int, int]) -> None:
    """The returned cache is a dict with "k" and "v" tensors of the given (B, T_cached, d_model) shape."""
    c.expect(
        isinstance(cache, dict) and "k" in cache and "v" in cache,
        f'return the cache as a dict with "k" and "v", got {type(cache).__name__}',
    )
    for name in ("k", "v"):
        got = cache[name]
        c.expect(isinstance(got, torch.Tensor), f'cache["{name}"] should be a tensor, got {type(got).__name__}')
        if tuple(got.shape) != shape:
            hint = (
                "append the new keys and values to the cached ones along the positions axis, do not replace them"
                if got.dim() == 3 and got.shape[1] < shape[1]
                else ""
            )
            c.fail(f'after {shape[1]} positions cache["{name}"] has shape {tuple(got.shape)}, expected {shape}', hint)


def _cached_run(c, fn, model, ids, chunks, first_cache):
    """Feed ids in chunks through fn (from first_cache) and compare each chunk with the full recomputation."""
    with torch.no_grad():
        full = model(ids)  # (B, T, V): the oracle, recomputing everything
        wrong = {label: [] for label in _CACHE_MISTAKES.values()}
        for key, label in _CACHE_MISTAKES.items():
            bad_cache = first_cache
            for a, b in chunks:
                logits, bad_cache = _reference_cached_step(model, ids[:, a:b], bad_cache, key)
                wrong[label].append(logits)
    cache = first_cache
    for i, (a, b) in enumerate(chunks):
        out = c.call(fn, model, ids[:, a:b].clone(), None if cache is None else dict(cache))
        c.expect(isinstance(out, tuple) and len(out) == 2, "return a tuple (logits, cache)")
        logits, cache = out
        what = f"the logits tensor of position {a}" if b == a + 1 else f"the logits tensor of positions {a} to {b - 1}"
        c.expect_close(
            what, logits, full[:, a:b], atol=1e-9, rtol=1e-7, mistakes={label: outs[i] for label, outs in wrong.items()}
        )
        _expect_cache(c, cache, (ids.shape[0], b, model.k_proj.out_features))


@exercise("07.kv_cache", "one generation step with a KV cache", "step_with_cache")
def _kv_cache(fn, case):
    model = TinyDecoder(seed=7).double()
    ids = torch.randint(12, (2, 9), generator=torch.Generator().manual_seed(7))  # (B, T) = (2, 9)
    with torch.no_grad():
        _, prompt_cache = _reference_cached_step(model, ids[:, :4], None)
    with case("the prompt (2, 4) with no cache yet: the logits of model(prompt), a cache of 4 positions") as c:
        _cached_run(c, fn, model, ids, [(0, 4)], None)
    with case("then one token at a time (positions 4 to 8): each step equals recomputing model(all ids)") as c:
        _cached_run(c, fn, model, ids, [(i, i + 1) for i in range(4, 9)], prompt_cache)
    with case("a chunk of 3 new tokens after the prompt: each sees the cache and the new tokens up to itself") as c:
        _cached_run(c, fn, model, ids, [(4, 7)], prompt_cache)


# ---------------------------------------------------------------- 08 translation: loss and decoding


@exercise("08.masked_loss", "a loss that ignores padding", "masked_lm_loss")
def _masked_loss(fn, case):
    g = torch.Generator().manual_seed(8)
    for name, pad_id, lengths in [
        ("a (3, 6) batch whose rows hold 6, 4 and 2 real tokens, then <pad> = 0", 0, [6, 4, 2]),
        ("the padding id comes from the argument: pad_id = 3", 3, [5, 2]),
        ("no padding at all: the plain mean cross-entropy", 0, [5, 5]),
    ]:
        with case(name) as c:
            b, t, v = len(lengths), max(lengths), 7
            logits = torch.randn(b, t, v, generator=g, dtype=F64) * 2
            targets = torch.randint(v, (b, t), generator=g)
            targets[targets == pad_id] = (pad_id + 1) % v  # real tokens are never <pad>
            for row, n in enumerate(lengths):
                targets[row, n:] = pad_id
            out = c.call(fn, logits.clone().requires_grad_(True), targets.clone(), pad_id)
            flat_logits, flat_targets = logits.reshape(-1, v), targets.reshape(-1)
            want = F.cross_entropy(flat_logits, flat_targets, ignore_index=pad_id)
            per_position = F.cross_entropy(flat_logits, flat_targets, reduction="none").view(b, t)
            real = (targets != pad_id).double()
            real_sum = per_position * real  # (B, T): the loss of the real positions, 0 elsewhere
            counts_pad = F.cross_entropy(flat_logits, flat_targets)
            pad_zero = F.cross_entropy(flat_logits, flat_targets, ignore_index=0)
            over_all, per_sentence = real_sum.sum() / real.numel(), (real_sum.sum(1) / real.sum(1)).mean()
            mistakes = {
                "a loss that counts padding (every position averaged, <pad> targets included)": counts_pad,
                "dividing the loss of the real tokens by every position, padding included": over_all,
                "averaging each sentence first, then the sentences (short ones weigh as much as long)": per_sentence,
                "ignoring <pad> = 0 instead of the pad_id given": pad_zero,
            }
            _expect_loss(c, out, want, mistakes)


class _Scorer:
    """A hand-made next_logits: logits over the vocabulary from the whole prefix; it records each prefix it gets."""

    def __init__(self, vocab_size: int, bos_id: int, eos_id: int, seed: int, eos_after: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab_size, vocab_size, generator=g, dtype=F64)  # last token -> logits
        self.by_length = torch.randn(32, vocab_size, generator=g, dtype=F64)
        self.bos_id, self.eos_id, self.eos_after = bos_id, eos_id, eos_after
        self.prefixes: list[list[int]] = []

    def __call__(self, prefix) -> torch.Tensor:
        prefix = [int(t) for t in prefix]
        self.prefixes.append(prefix)
        logits = self.table[prefix[-1]] + self.by_length[len(prefix) % 32] + 0.3 * (sum(prefix) % 5)
        logits[self.bos_id] = -30.0
        ends = self.eos_after is not None and len(prefix) - 1 >= self.eos_after
        logits[self.eos_id] = 30.0 if ends else -30.0
        return logits


def _brute_greedy(next_logits, bos_id, eos_id, max_len, stop=True) -> list[int]:
    prefix = [bos_id]
    while len(prefix) - 1 < max_len:
        token = int(torch.argmax(next_logits(prefix)))
        prefix.append(token)
        if stop and token == eos_id:
            break
    return prefix[1:]


def _token_list(c, out, what: str = "the output") -> list[int]:
    """The learner's token ids as a list of ints, or the case fails."""
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    c.expect(isinstance(out, list | tuple), f"{what} should be a list of token ids, got {type(out).__name__}")
    try:
        return [int(t) for t in out]
    except (TypeError, ValueError, RuntimeError):
        c.fail(f"{what} should hold token ids (ints), got {out!r}")


@exercise("08.greedy_decode", "greedy decoding", "greedy_decode")
def _greedy(fn, case):
    for name, (vocab, bos, eos, seed, eos_after, max_len) in [
        ("a scorer that picks <eos> as the 5th token: the output stops there, <eos> included", (9, 1, 2, 8, 4, 10)),
        ("a scorer that never picks <eos>: stop after max_len = 6 tokens", (9, 0, 5, 9, None, 6)),
        ("next_logits gets <bos> and every token chosen so far (<bos> = 3, <eos> = 4)", (11, 3, 4, 10, 6, 12)),
    ]:
        with case(name) as c:
            scorer = _Scorer(vocab, bos, eos, seed, eos_after)
            got = _token_list(c, c.call(fn, scorer, bos, eos, max_len))
            calls = scorer.prefixes
            oracle = _Scorer(vocab, bos, eos, seed, eos_after)  # the same logits as the learner's scorer
            want = _brute_greedy(oracle, bos, eos, max_len)
            for i, prefix in enumerate(calls[: len(got)]):
                if prefix != [bos, *got[:i]]:
                    c.fail(
                        f"call {i + 1} of next_logits got {prefix}, expected the prefix {[bos, *got[:i]]}",
                        "next_logits takes the whole prefix: <bos>, then every token chosen so far",
                    )
            if got == want:
                continue
            if eos in got[:-1]:
                c.fail(
                    f"the output goes on after <eos> (position {got.index(eos)} of {len(got)}): {got}",
                    "stop as soon as <eos> is chosen",
                )
            mistakes = {
                "a loop that does not stop at <eos>": _brute_greedy(oracle, bos, eos, max_len, stop=False),
                "leaving out the final <eos>": want[:-1] if want and want[-1] == eos else None,
                "returning <bos> too": [bos, *want],
                "a max_len off by one": _brute_greedy(oracle, bos, eos, max_len - 1),
            }
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            c.fail(
                f"the output is {got}, expected {want} (first difference at position {first})",
                matching_mistake(got, mistakes, same=lambda a, b: a == b),
            )


def _brute_beams(beams, log_probs, beam_size, mistake: str = ""):
    """Every extension of every beam, scored by summed log-probabilities; the beam_size best, best first."""
    cands = []
    for i, (tokens, score) in enumerate(beams):
        row = log_probs[i].tolist()
        tokens_here = [max(range(len(row)), key=row.__getitem__)] if mistake == "best only" else range(len(row))
        for t in tokens_here:
            rank = row[t] if mistake == "no add" else score + row[t]
            cands.append((rank, tokens + [t], row[t] if mistake == "score only" else score + row[t]))
    cands.sort(key=lambda x: x[0], reverse=mistake != "worst first")
    return [(tokens, s) for _, tokens, s in cands[:beam_size]]


def _beam_list(c, out, n: int):
    """The learner's beams as [(tokens, score)], or the case fails."""
    c.expect(isinstance(out, list | tuple), f"return a list of (tokens, score) pairs, got {type(out).__name__}")
    if len(out) != n:
        few = "rank the extensions of all beams together: one beam may supply several survivors, another none"
        c.fail(f"returned {len(out)} beam(s), expected beam_size = {n}", few if len(out) < n else "")
    beams = []
    for i, item in enumerate(out):
        c.expect(isinstance(item, list | tuple) and len(item) == 2, f"beam {i} should be a pair (tokens, score)")
        tokens = _token_list(c, item[0], f"the tokens of beam {i}")
        beams.append((tokens, _as_float(c, item[1], f"the score of beam {i}")))
    return beams


def _same_beams(a, b) -> bool:
    return len(a) == len(b) and all(ta == tb and _close(sa, sb, 1e-6) for (ta, sa), (tb, sb) in zip(a, b))


_BEAM_MISTAKES = {
    "best only": "keeping only each beam's best token (a strong beam may supply several of the survivors)",
    "no add": "ranking by the new token's log-probability alone (the beam's score is not added)",
    "score only": "scores that leave out the beam's score (the new token's log-probability alone)",
    "worst first": "sorting the candidates worst first",
}


@exercise("08.beam_step", "one step of beam search", "beam_step")
def _beam_step(fn, case):
    g = torch.Generator().manual_seed(8)
    strong = torch.tensor(
        [[3.0, 2.9, 0.0, -1.0, -1.0, -2.0], [0.5, 0.0, 1.0, 0.2, -1.0, 0.0], [-3.0, -3.0, -3.0, 6.0, -3.0, -3.0]],
        dtype=F64,
    )
    for name, beams, logits, beam_size in [
        (
            "the first step: one beam (<bos>, score 0) keeps its 3 most likely tokens",
            [([1], 0.0)],
            torch.randn(1, 6, generator=g, dtype=F64) * 2,
            3,
        ),
        (
            "3 beams: the strongest supplies two of the 3 survivors, the weakest none",
            [([1, 5], -0.4), ([1, 2], -1.1), ([1, 4], -4.5)],
            strong,
            3,
        ),
        (
            "4 beams of 3 tokens over 7 tokens, beam_size 5",
            [([1, 2 + i, 3], -float(i) * 0.7 - 0.2) for i in range(4)],
            torch.randn(4, 7, generator=g, dtype=F64) * 2,
            5,
        ),
    ]:
        with case(name) as c:
            log_probs = torch.log_softmax(logits, dim=-1)  # (n_beams, vocab_size)
            given = [(list(tokens), score) for tokens, score in beams]
            out = c.call(fn, given, log_probs.clone(), beam_size)
            if given != beams:
                c.fail("the input beams changed: build each extension as a new list, leave the parents' lists alone")
            got = _beam_list(c, out, beam_size)
            want = _brute_beams(beams, log_probs, beam_size)
            if _same_beams(got, want):
                continue
            i = next(j for j, (a, b) in enumerate(zip(got, want)) if not _same_beams([a], [b]))
            wrong = {label: _brute_beams(beams, log_probs, beam_size, key) for key, label in _BEAM_MISTAKES.items()}
            c.fail(
                f"beam {i} (best first) is {got[i][0]} with score {got[i][1]:.4f}, expected {want[i][0]} with "
                f"score {want[i][1]:.4f}",
                matching_mistake(got, wrong, same=_same_beams),
            )


# ---------------------------------------------------------------- 08 translation: BLEU


def _clipped(hyp, refs, n, rule: str = "max") -> tuple[int, int]:
    """Clipped n-gram matches under a clipping rule: "max" (right), "none", "sum", "first" or "distinct"."""
    counts = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
    ref_counts = [Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1)) for r in refs]
    total = sum(counts.values())
    if rule == "none":
        return sum(c for g, c in counts.items() if any(g in rc for rc in ref_counts)), total
    if rule == "distinct":
        return sum(1 for g in counts if any(g in rc for rc in ref_counts)), total
    if rule == "first":
        cap = {g: ref_counts[0][g] for g in counts}
    else:
        cap = {g: (sum if rule == "sum" else max)(rc[g] for rc in ref_counts) for g in counts}
    return sum(min(c, cap[g]) for g, c in counts.items()), total


_CLIP_MISTAKES = {
    "none": "counting matches without clipping (an n-gram credited as often as the output repeats it)",
    "sum": "clipping with the counts of all references added up (clip by the single most generous reference)",
    "first": "clipping with the first reference only (every reference counts)",
    "distinct": "counting each distinct n-gram once",
}


def _pair(c, out, what: str) -> tuple[int, int]:
    c.expect(isinstance(out, list | tuple) and len(out) == 2, f"{what} should be a pair (matched, total), got {out!r}")
    return tuple(int(_as_float(c, v, what)) for v in out)


_CAT = ("the cat is on the mat".split(), "there is a cat on the mat".split())


@exercise("08.clipped_precision", "clipped n-gram matches", "clipped_precision")
def _clipped_precision(fn, case):
    for name, hyp, refs, n in [
        ("'the the the the the the the' against the notebook's two references, n = 1", ["the"] * 7, _CAT, 1),
        ("the bigrams of 'the cat sat on the mat', same references", "the cat sat on the mat".split(), _CAT, 2),
        (
            "several references: each n-gram is clipped by the reference where it is most frequent",
            "a a a a b b b c".split(),
            ["a a b b d".split(), "b a b b".split(), "c d".split()],
            1,
        ),
        ("n-grams longer than the hypothesis: none at all, (0, 0)", "a b c".split(), ["a b c d".split()], 4),
    ]:
        with case(name) as c:
            got = _pair(c, c.call(fn, list(hyp), [list(r) for r in refs], n), "the result")
            want = _clipped(hyp, refs, n)
            if got != want:
                wrong = {label: _clipped(hyp, refs, n, rule) for rule, label in _CLIP_MISTAKES.items()}
                c.fail(
                    f"(matched, total) is {got}, expected {want}",
                    matching_mistake(got, wrong, same=lambda a, b: a == b),
                )


@exercise("08.brevity_penalty", "the brevity penalty", "brevity_penalty")
def _brevity_penalty(fn, case):
    for name, pairs in [
        ("outputs shorter than the reference: (c, r) = (8, 10), (3, 7), (1, 4)", [(8, 10), (3, 7), (1, 4)]),
        ("outputs as long as the reference or longer get 1: (10, 10), (12, 9)", [(10, 10), (12, 9)]),
        ("an empty output (c = 0, r = 5) gets 0, without a division by zero", [(0, 5)]),
    ]:
        with case(name) as c:
            for hyp_len, ref_len in pairs:
                got = c.call(fn, hyp_len, ref_len)
                want = BLEU.compute_bleu([1] * 4, [1] * 4, hyp_len, ref_len).bp  # sacreBLEU's brevity penalty
                inverted = math.exp(1 - hyp_len / ref_len) if hyp_len < ref_len else 1.0
                always = math.exp(1 - ref_len / hyp_len) if hyp_len else 0.0
                mistakes = {
                    "the length ratio inverted (output over reference instead of reference over output)": inverted,
                    "a penalty for long outputs too (only outputs shorter than the reference are penalised)": always,
                }
                _expect_number(c, f"the penalty for c = {hyp_len}, r = {ref_len}", got, want, mistakes, tol=1e-6)


def _bleu(hypotheses, references, clip="max", ref_len_rule="closest", smooth=True, bp=True, per_sentence=False):
    """Corpus BLEU (0-100) built like sacreBLEU's default, or with one of the classic mistakes."""
    if per_sentence:
        scores = [_bleu([h], [r], clip, ref_len_rule, smooth, bp) for h, r in zip(hypotheses, references)]
        return sum(scores) / len(scores)
    matched, total, c, r = [0] * 4, [0] * 4, 0, 0
    for hyp, refs in zip(hypotheses, references):
        lens = [len(x) for x in refs]
        c += len(hyp)
        closest = min(lens, key=lambda n: (abs(n - len(hyp)), n))  # the shorter one on a tie
        r += {"closest": closest, "shortest": min(lens), "first": lens[0]}[ref_len_rule]
        for n in range(1, 5):
            m, t = _clipped(hyp, refs, n, clip)
            matched[n - 1] += m
            total[n - 1] += t
    if not any(matched) or 0 in total:
        return 0.0
    logs, zeros = 0.0, 0
    for m, t in zip(matched, total):
        if m == 0:
            if not smooth:
                return 0.0
            zeros += 1
            logs += math.log(1 / (2**zeros * t))
        else:
            logs += math.log(m / t)
    penalty = 1.0 if (c >= r or not bp) else math.exp(1 - r / c)
    return 100 * penalty * math.exp(logs / 4)


def _sacrebleu(hypotheses, references) -> float:
    """sacreBLEU on the space-joined tokens: references as streams (stream j = the j-th reference of each sentence)."""
    n_streams = max(len(refs) for refs in references)
    streams = [[" ".join(refs[j]) if j < len(refs) else None for refs in references] for j in range(n_streams)]
    return BLEU(tokenize="none", force=True).corpus_score([" ".join(h) for h in hypotheses], streams).score


_BLEU_MISTAKES = {
    "BLEU without clipping (each n-gram credited as often as the output repeats it)": dict(clip="none"),
    "the shortest reference length instead of the closest one": dict(ref_len_rule="shortest"),
    "the first reference's length instead of the closest one": dict(ref_len_rule="first"),
    "no smoothing of a zero precision": dict(smooth=False),
    "no brevity penalty": dict(bp=False),
    "averaging sentence-level BLEU (BLEU sums the n-gram counts over the corpus first)": dict(per_sentence=True),
}


def _split(*sentences: str) -> list[list[str]]:
    return [s.split() for s in sentences]


@exercise("08.corpus_bleu", "corpus BLEU from scratch", "corpus_bleu")
def _corpus_bleu(fn, case):
    for name, hyps, refs in [
        (
            "the notebook's sentence against its two references (sacreBLEU: 37.99)",
            _split("the cat sat on the mat"),
            [list(_CAT)],
        ),
        (
            "a repetitive output next to a good one: matches are clipped",
            _split("the the the cat the the the mat", "il fait très froid ce matin ."),
            [_split("the cat is on the mat"), _split("il fait très froid ce matin .")],
        ),
        (
            "three sentences, 1 or 2 references each: r sums the reference length closest to each output's "
            "(the shorter one on a tie)",
            _split("où est le chat noir", "je suis très fatigué", "tom a un vélo"),
            [
                _split("où est le chat noir ?", "le chat"),  # closest: 6 tokens, not the shortest
                _split("je suis vraiment très fatigué", "je suis fatigué"),  # 5 and 3 tie around 4: the shorter
                _split("tom a un vélo rouge et tout neuf ."),
            ],
        ),
        (
            "a short output without any matching 4-gram: a smoothed precision and a brevity penalty",
            _split("elle lit un livre", "nous partons"),
            [_split("elle lit un bon livre ce soir"), _split("nous partons demain matin")],
        ),
    ]:
        with case(name) as c:
            got = c.call(fn, [list(h) for h in hyps], [[list(r) for r in rs] for rs in refs])
            want = _sacrebleu(hyps, refs)
            mistakes = {label: _bleu(hyps, refs, **kw) for label, kw in _BLEU_MISTAKES.items()}
            mistakes = {k: v for k, v in mistakes.items() if not _close(v, want, 1e-5)}
            _expect_number(
                c,
                "the BLEU score",
                got,
                want,
                mistakes,
                tol=1e-5,
                hint="print your four precisions and the brevity penalty and compare them by hand",
            )

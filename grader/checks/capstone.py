"""Checks of the capstone (solutions/12_build_your_gpt.py): a whole GPT, its optimiser and its training loop.

Each part is compared in float64 with PyTorch (softmax, cross_entropy, layer_norm, scaled_dot_product_attention, gelu,
AdamW, clip_grad_norm_) or with a small reference written here (the schedule, a functional GPT for the known mistakes).
The whole model is compared with the course's helpers.models.GPT after loading its weights into the learner's model
(the parameter names are the same), and "it trains" runs the learner's loop against PyTorch's optimiser on the
course's GPT, then the learner's GPT against the course's from the same initial weights.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from grader.core import exercise, matching_mistake
from helpers.course.datasets import eval_windows, get_batch
from helpers.models import GPT, GPTBlock, GPTConfig
from helpers.optim import make_adamw

F64 = torch.float64
TRAIN_MARGIN = 0.05  # "it trains": the learner's held-out loss must be within this many nats of the course's


def _one_thread(check):
    """Run a check on one CPU thread: its models are tiny, and threads only wait on each other (restored after)."""

    @functools.wraps(check)
    def run(fn, case):
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(fn, case)
        finally:
            torch.set_num_threads(previous)

    return run


def _cfg(**kw) -> GPTConfig:
    base = dict(vocab_size=13, block_size=16, d_model=32, n_heads=4, n_layers=2, dropout=0.0)
    base.update(kw)
    return GPTConfig(**base)


def _course_gpt(cfg: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg)


def _module(c, obj, what: str) -> nn.Module:
    c.expect(isinstance(obj, nn.Module), f"{what} should be an nn.Module, got {type(obj).__name__}")
    return obj


def _load(c, module: nn.Module, state: dict, what: str = "the course's weights") -> None:
    """Load a state dict into the learner's module, or fail naming the missing and unexpected names."""
    want = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        parts = ([f"missing: {', '.join(missing[:6])}"] if missing else []) + (
            [f"unexpected: {', '.join(extra[:6])}"] if extra else []
        )
        c.fail(
            f"cannot load {what}: " + "; ".join(parts),
            "the parameter names must be those of the handout (print your model's state_dict().keys())",
        )
    wrong = [f"{k} {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
    if wrong:
        c.fail(f"cannot load {what}: wrong shapes: {', '.join(wrong[:4])}", "a Linear(a, b) holds a weight (b, a)")
    module.load_state_dict(state)


# ---------------------------------------------------------------- a functional GPT: the known mistakes


def _attention(sd: dict, p: str, h: torch.Tensor, n_heads: int, mask: str = "causal") -> torch.Tensor:
    b, t, c = h.shape
    q, k, v = (F.linear(h, sd[f"{p}{n}_proj.weight"], sd[f"{p}{n}_proj.bias"]) for n in "qkv")
    q, k, v = (z.view(b, t, n_heads, c // n_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
    ones = torch.ones(t, t, dtype=torch.bool)
    allowed = {"none": ones, "one_ahead": ones.tril(1)}.get(mask, ones.tril())
    if mask == "unscaled":
        q = q * math.sqrt(c // n_heads)  # the oracle divides by sqrt(D): multiplying first cancels it
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = out.transpose(1, 2).reshape(b, t, c)
    return F.linear(out, sd[f"{p}out_proj.weight"], sd[f"{p}out_proj.bias"])


def _block(sd: dict, p: str, x: torch.Tensor, n_heads: int, mask="causal", norm_first=True, residual=True):
    c = x.shape[-1]

    def ln(h, j):
        return F.layer_norm(h, (c,), sd[f"{p}norms.{j}.weight"], sd[f"{p}norms.{j}.bias"])

    def ff(h):
        h = F.gelu(F.linear(h, sd[f"{p}ff.linear1.weight"], sd[f"{p}ff.linear1.bias"]))
        return F.linear(h, sd[f"{p}ff.linear2.weight"], sd[f"{p}ff.linear2.bias"])

    for j, sub in enumerate((lambda h: _attention(sd, f"{p}self_attn.", h, n_heads, mask), ff)):
        if norm_first:
            y = sub(ln(x, j))
            x = x + y if residual else y
        else:
            y = sub(x)
            x = ln(x + y if residual else y, j)
    return x


def _gpt_logits(sd: dict, cfg, idx: torch.Tensor, positions: int = 1, final_norm: bool = True, **block_kw):
    """The GPT of the handout from a state dict, in float64, or with one planted change."""
    t = idx.shape[1]
    x = sd["tok_emb.weight"][idx] + positions * sd["pos_emb.embedding.weight"][:t]
    for i in range(cfg.n_layers):
        x = _block(sd, f"blocks.{i}.", x, cfg.n_heads, **block_kw)
    if final_norm:
        x = F.layer_norm(x, (cfg.d_model,), sd["norm.weight"], sd["norm.bias"])
    return x @ sd["lm_head.weight"].T


_MODEL_MISTAKES = {
    "no causal mask (every position attends to every key, later ones included)": dict(mask="none"),
    "a causal mask off by one (each position also sees the next token)": dict(mask="one_ahead"),
    "attention scores not divided by sqrt(d_head)": dict(mask="unscaled"),
    "the norm after the residual sum (Post-LN) instead of before each sublayer (Pre-LN)": dict(norm_first=False),
    "no residual connection: each sublayer's output replaces its input instead of being added to it": dict(
        residual=False
    ),
    "no final LayerNorm before the output head": dict(final_norm=False),
    "no position embeddings: the model cannot tell where a token is": dict(positions=0),
    "the position embeddings added twice": dict(positions=2),
}


def _model_mistakes(sd: dict, cfg, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {label: _gpt_logits(sd, cfg, idx, **kw) for label, kw in _MODEL_MISTAKES.items()}


def _block_mistakes(sd: dict, n_heads: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
    keys = ("mask", "norm_first", "residual")
    with torch.no_grad():
        return {
            label: _block(sd, "", x, n_heads, **kw) for label, kw in _MODEL_MISTAKES.items() if set(kw) <= set(keys)
        }


def _causality(c, run, idx: torch.Tensor, t: int, what: str) -> None:
    """Change the tokens after position t: nothing at or before t may change."""
    changed = idx.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % int(idx.max() + 1)
    with torch.no_grad():
        a, b = run(idx), run(changed)
    diff = (a[:, : t + 1] - b[:, : t + 1]).abs().amax(dim=(0, 2))
    if (diff > 1e-9).any() or torch.isnan(diff).any():
        first = int(((diff > 1e-9) | torch.isnan(diff)).nonzero()[0])
        c.fail(
            f"changing the tokens after position {t} changed {what} at position {first} (by {float(diff[first]):.3g}): "
            "a position sees tokens that come after it",
            "position t may only see positions 0..t: look at which keys each query can reach",
        )


# ---------------------------------------------------------------- 12 softmax and cross-entropy


def _overflow_hint(got) -> str:
    if isinstance(got, torch.Tensor) and not torch.isfinite(got.detach()).all():
        return (
            "inf or NaN for logits of ±1e4: exp of a large logit overflows to inf (inf / inf is NaN), and a "
            "probability that underflows to 0 has a log of -inf"
        )
    return ""


@exercise("12.softmax", "a softmax that does not overflow", "softmax")
@_one_thread
def _softmax(fn, case):
    g = torch.Generator().manual_seed(12)
    extreme = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, 0.0]], dtype=F64)
    for name, x in [
        ("random logits (4, 6)", 3 * torch.randn(4, 6, generator=g, dtype=F64)),
        ("a (2, 3, 5) tensor: the softmax runs over the last axis", torch.randn(2, 3, 5, generator=g, dtype=F64)),
        ("logits of ±1e4: no inf, no NaN", extreme),
    ]:
        with case(name) as c:
            got = c.call(fn, x.clone())
            want = torch.softmax(x, dim=-1)
            mistakes = {"a softmax over the first axis instead of the last": torch.softmax(x, dim=0)}
            c.expect_close(
                "the probabilities", got, want, atol=1e-12, rtol=1e-9, mistakes=mistakes, hint=_overflow_hint(got)
            )


@exercise("12.cross_entropy", "cross-entropy from logits, stable for large logits", "cross_entropy")
@_one_thread
def _cross_entropy(fn, case):
    g = torch.Generator().manual_seed(12)
    for name, logits, targets in [
        ("random logits (6, 5)", 2 * torch.randn(6, 5, generator=g, dtype=F64), torch.randint(5, (6,), generator=g)),
        (
            "logits of ±1e4: a finite loss, and a target far below the largest logit costs about 1e4",
            torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0], [5.0, 5.0, 5.0]], dtype=F64),
            torch.tensor([2, 1, 0]),
        ),
    ]:
        with case(name) as c:
            leaf = logits.clone().requires_grad_(True)
            got = c.call(fn, leaf, targets.clone())
            want = F.cross_entropy(logits, targets)
            c.expect(isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}")
            c.expect(got.dim() == 0, f"the loss should be a scalar, got shape {tuple(got.shape)}", "average the rows")
            per_row = F.cross_entropy(logits, targets, reduction="none")
            mistakes = {"a sum over the rows instead of a mean": per_row.sum()}
            c.expect_close("the loss", got, want, atol=1e-9, rtol=1e-9, mistakes=mistakes, hint=_overflow_hint(got))
            c.expect(got.requires_grad, "the loss is cut off from the logits", "keep it a tensor built from the logits")
            (grad,) = torch.autograd.grad(got, leaf)
            ref = logits.clone().requires_grad_(True)
            (want_grad,) = torch.autograd.grad(F.cross_entropy(ref, targets), ref)
            c.expect_close("the gradient of the loss", grad, want_grad, atol=1e-9, rtol=1e-7, hint=_overflow_hint(grad))


# ---------------------------------------------------------------- 12 the parts of a block


@exercise("12.layer_norm", "LayerNorm with a gain and a bias", "LayerNorm")
@_one_thread
def _layer_norm(fn, case):
    g = torch.Generator().manual_seed(12)
    for name, shape, scale in [("a (2, 5, 16) batch", (2, 5, 16), 1.0), ("small values (1e-3)", (3, 16), 1e-3)]:
        with case(name) as c:
            ln = _module(c, c.call(fn, 16), "LayerNorm(16)").double()
            weight = torch.rand(16, generator=g, dtype=F64) + 0.5
            bias = torch.randn(16, generator=g, dtype=F64)
            _load(c, ln, {"weight": weight, "bias": bias}, "a gain and a bias")
            x = scale * torch.randn(*shape, generator=g, dtype=F64)
            got = c.call(ln, x)
            want = F.layer_norm(x, (16,), weight, bias, 1e-5)
            centred = x - x.mean(-1, keepdim=True)
            mistakes = {
                "the unbiased variance (dividing by C - 1): LayerNorm divides by C": centred
                / torch.sqrt(x.var(-1, keepdim=True) + 1e-5)
                * weight
                + bias,
                "eps added after the square root instead of inside it": centred
                / (x.var(-1, unbiased=False, keepdim=True).sqrt() + 1e-5)
                * weight
                + bias,
                "the gain and the bias are not applied": F.layer_norm(x, (16,), None, None, 1e-5),
            }
            c.expect_close("the output", got, want, atol=1e-9, rtol=1e-7, mistakes=mistakes)


def _attention_state(g: torch.Generator, c_dim: int) -> dict:
    sd = {}
    for n in ("q", "k", "v", "out"):
        sd[f"{n}_proj.weight"] = torch.randn(c_dim, c_dim, generator=g, dtype=F64) / math.sqrt(c_dim)
        sd[f"{n}_proj.bias"] = 0.1 * torch.randn(c_dim, generator=g, dtype=F64)
    return sd


@exercise("12.attention", "causal multi-head self-attention from scratch", "CausalSelfAttention")
@_one_thread
def _causal_attention(fn, case):
    g = torch.Generator().manual_seed(12)
    for name, (b, t, c_dim, h) in [
        ("x (2, 6, 16), 4 heads", (2, 6, 16, 4)),
        ("x (1, 9, 12), 3 heads", (1, 9, 12, 3)),
    ]:
        with case(name) as c:
            attn = _module(c, c.call(fn, c_dim, h), f"CausalSelfAttention({c_dim}, {h})").double().eval()
            sd = _attention_state(g, c_dim)
            _load(c, attn, sd, "the projections")
            x = torch.randn(b, t, c_dim, generator=g, dtype=F64)
            got = c.call(attn, x)
            c.expect(
                isinstance(got, torch.Tensor) and got.shape == x.shape,
                f"the output should be a tensor of shape {tuple(x.shape)}, got "
                f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
            )
            _causality(c, attn, x, t // 2, "the output")
            with torch.no_grad():
                want = _attention({f"a.{k}": v for k, v in sd.items()}, "a.", x, h)
                mistakes = {
                    label: _attention({f"a.{k}": v for k, v in sd.items()}, "a.", x, h, kw["mask"])
                    for label, kw in _MODEL_MISTAKES.items()
                    if "mask" in kw
                }
            c.expect_close("the output", got, want, atol=1e-9, rtol=1e-7, mistakes=mistakes)


@exercise("12.feed_forward", "the GELU feed-forward block", "FeedForward")
@_one_thread
def _feed_forward(fn, case):
    g = torch.Generator().manual_seed(12)
    with case("x (2, 5, 16), d_ff 64: Linear -> GELU -> Linear") as c:
        ff = _module(c, c.call(fn, 16, 64), "FeedForward(16, 64)").double().eval()
        sd = {
            "linear1.weight": torch.randn(64, 16, generator=g, dtype=F64) / 4,
            "linear1.bias": torch.randn(64, generator=g, dtype=F64),
            "linear2.weight": torch.randn(16, 64, generator=g, dtype=F64) / 8,
            "linear2.bias": torch.randn(16, generator=g, dtype=F64),
        }
        _load(c, ff, sd, "linear1 and linear2")
        x = torch.randn(2, 5, 16, generator=g, dtype=F64)
        got = c.call(ff, x)

        def out(act):
            return F.linear(act(F.linear(x, sd["linear1.weight"], sd["linear1.bias"])), *list(sd.values())[2:])

        mistakes = {
            "the tanh approximation of GELU instead of the exact one (with erf)": out(
                lambda h: F.gelu(h, approximate="tanh")
            ),
            "ReLU instead of GELU": out(F.relu),
            "no activation between the two linear layers": out(lambda h: h),
        }
        c.expect_close("the output", got, out(F.gelu), atol=1e-9, rtol=1e-7, mistakes=mistakes)


@exercise("12.block", "the Pre-LN block", "Block")
@_one_thread
def _pre_ln_block(fn, case):
    cfg = _cfg(d_model=16, n_heads=4, n_layers=1)
    for name, seed, t in [("x (2, 7, 16), the course block's weights", 0, 7), ("x (1, 12, 16), other weights", 1, 12)]:
        with case(name) as c:
            torch.manual_seed(seed)
            ref = GPTBlock(cfg.block_config()).double().eval()
            with torch.no_grad():
                for prm in ref.parameters():  # larger weights than the initial ones: every mistake shows
                    prm.add_(0.3 * torch.randn_like(prm))
            block = _module(c, c.call(fn, cfg), "Block(cfg)").double().eval()
            _load(c, block, ref.state_dict(), "the course block's weights")
            x = torch.randn(2, t, 16, generator=torch.Generator().manual_seed(seed), dtype=F64)
            got = c.call(block, x)
            _causality(c, block, x, t // 2, "the output")
            with torch.no_grad():
                want = ref(x)
            mistakes = _block_mistakes({k: v for k, v in ref.state_dict().items()}, 4, x)
            c.expect_close("the output", got, want, atol=1e-9, rtol=1e-7, mistakes=mistakes)


# ---------------------------------------------------------------- 12 the whole GPT


def _learner_gpt(c, fn, cfg) -> nn.Module:
    return _module(c, c.call(fn, cfg), "GPT(cfg)")


@exercise("12.gpt", "the whole GPT, with the course's weights loaded", "GPT")
@_one_thread
def _whole_gpt(fn, case):
    cfg = _cfg()
    ref = _course_gpt(cfg).double().eval()
    with torch.no_grad():
        for prm in ref.parameters():  # trained-looking weights, so that every part of the model matters
            prm.add_(0.2 * torch.randn_like(prm))
    state = ref.state_dict()
    g = torch.Generator().manual_seed(12)
    idx = torch.randint(cfg.vocab_size, (3, cfg.block_size), generator=g)
    targets = torch.randint(cfg.vocab_size, (3, cfg.block_size), generator=g)

    with case("the parameter names and shapes are those of helpers.models.GPT") as c:
        model = _learner_gpt(c, fn, cfg)
        want = {k: tuple(v.shape) for k, v in _course_gpt(cfg).state_dict().items()}
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        c.expect(not missing, f"missing: {', '.join(missing[:8])}", "compare your state_dict().keys() with the handout")
        c.expect(not extra, f"not in the course's GPT: {', '.join(extra[:8])}", "the handout lists every name")
        wrong = [f"{k} {got[k]} (expected {want[k]})" for k in want if got[k] != want[k]]
        c.expect(not wrong, f"wrong shapes: {', '.join(wrong[:4])}", "a Linear(a, b) holds a weight of shape (b, a)")

    with case("the parameter count (vocab 13, block 16, d_model 32, 4 heads, 2 layers): each parameter once") as c:
        model = _learner_gpt(c, fn, cfg)
        n, want_n = sum(p.numel() for p in model.parameters()), _course_gpt(cfg).num_params()
        head = cfg.vocab_size * cfg.d_model
        hints = {
            want_n + head: "exactly vocab_size * d_model too many: the output head holds a matrix of its own",
            want_n - 2 * cfg.d_model: "2 * d_model too few: a LayerNorm is missing",
        }
        c.expect(n == want_n, f"{n} parameters, expected {want_n} ({n - want_n:+d})", hints.get(n, ""))

    with case("the output head and the token embedding are one tensor (tied)") as c:
        model = _learner_gpt(c, fn, cfg)
        head, emb = getattr(model, "lm_head", None), getattr(model, "tok_emb", None)
        c.expect(head is not None and emb is not None, "no lm_head or no tok_emb", "the handout names them")
        c.expect(
            head.weight.data_ptr() == emb.weight.data_ptr(),
            "lm_head.weight and tok_emb.weight are two tensors: a training step would move them apart",
            "one matrix serves both: the head's weight must be the very same Parameter as the table's",
        )

    with case("with the course's weights loaded, the logits equal helpers.models.GPT's (float64, eval mode)") as c:
        model = _learner_gpt(c, fn, cfg).double().eval()
        _load(c, model, state)
        out = c.call(model, idx)
        c.expect(isinstance(out, tuple) and len(out) == 2, "forward(idx) should return a tuple (logits, loss)")
        logits, loss = out
        c.expect(loss is None, f"without targets the loss should be None, got {type(loss).__name__}")
        with torch.no_grad():
            want = ref(idx)[0]
        c.expect_close("the logits", logits, want, atol=1e-8, rtol=1e-6, mistakes=_model_mistakes(state, cfg, idx))

    with case("changing the tokens after position 7 changes no logit at positions 0 to 7 (causality)") as c:
        model = _learner_gpt(c, fn, cfg).double().eval()
        _load(c, model, state)
        _causality(c, lambda i: c.call(model, i)[0], idx, 7, "the logits")

    with case("the loss and every parameter's gradient equal the course GPT's (float64)") as c:
        model = _learner_gpt(c, fn, cfg).double().eval()
        _load(c, model, state)
        logits, loss = c.call(model, idx, targets)
        ref_logits = ref(idx)[0]
        want_loss = F.cross_entropy(ref_logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))
        mistakes = {
            "the loss of predicting the inputs themselves (the targets are already the next tokens)": F.cross_entropy(
                ref_logits.reshape(-1, cfg.vocab_size), idx.reshape(-1)
            ),
            "a sum over the positions instead of a mean": want_loss * idx.numel(),
        }
        c.expect(isinstance(loss, torch.Tensor), f"with targets the loss should be a tensor, got {type(loss).__name__}")
        c.expect_close("the loss", loss, want_loss, atol=1e-9, rtol=1e-7, mistakes=mistakes)
        ref.zero_grad(set_to_none=True)
        want_loss.backward()
        c.call(loss.backward)
        ref_grads = {n: p.grad for n, p in ref.named_parameters()}
        for name, p in model.named_parameters():
            c.expect(p.grad is not None, f"{name} got no gradient", "every parameter must take part in the forward")
            c.expect_close(f"the gradient of {name}", p.grad, ref_grads[name], atol=1e-9, rtol=1e-6)

    with case("dropout 0.1: eval mode is deterministic and equals the course's GPT; train mode is not") as c:
        cfg_drop = _cfg(dropout=0.1)
        ref_drop = _course_gpt(cfg_drop).double().eval()
        ref_drop.load_state_dict(state)
        model = _learner_gpt(c, fn, cfg_drop).double()
        _load(c, model, state)
        model.eval()
        first, second = c.call(model, idx)[0], c.call(model, idx)[0]
        c.expect(
            torch.equal(first, second),
            "two calls in eval mode gave different logits: something random still runs at evaluation",
            "at evaluation (model.eval()) no unit may be dropped",
        )
        with torch.no_grad():
            c.expect_close("the logits in eval mode", first, ref_drop(idx)[0], atol=1e-8, rtol=1e-6)
        model.train()
        a, b = c.call(model, idx)[0], c.call(model, idx)[0]
        c.expect(
            not torch.equal(a, b),
            "two calls in train mode with dropout 0.1 gave the same logits: no dropout runs while training",
            "cfg.dropout should drop units while training",
        )


# ---------------------------------------------------------------- 12 the optimiser


@exercise("12.decay_groups", "which parameters get weight decay", "decay_groups")
@_one_thread
def _decay_groups(fn, case):
    with case("the course's GPT: decay on the Linear weights only (as helpers.optim.make_adamw)") as c:
        model = _course_gpt(_cfg())
        groups = c.call(fn, model, 0.1)
        c.expect(
            isinstance(groups, list | tuple) and len(groups) == 2 and all(isinstance(g, dict) for g in groups),
            "return a list of two dicts, each with 'params' and 'weight_decay'",
        )
        c.expect(
            [g.get("weight_decay") for g in groups] == [0.1, 0.0],
            f"the groups' weight_decay are {[g.get('weight_decay') for g in groups]}, expected [0.1, 0.0]",
        )
        names = {id(p): n for n, p in model.named_parameters()}
        got = [[names.get(id(p), "?") for p in g["params"]] for g in groups]
        everything = got[0] + got[1]
        c.expect(
            sorted(everything) == sorted(names.values()),
            f"the groups hold {len(everything)} parameters, the model {len(names)} (each must be in one group once)",
            "the tied head's matrix is the token table: count it once",
        )
        want = [[names[id(p)] for p in g["params"]] for g in make_adamw(model, lr=1e-3).param_groups]
        wrongly = sorted(set(got[0]) - set(want[0]))
        missed = sorted(set(want[0]) - set(got[0]))
        if wrongly:
            kinds = [
                ("norms" in n or n.startswith("norm."))
                and "LayerNorm gains and biases"
                or n.endswith("bias")
                and "biases"
                or "emb" in n
                and "the embedding tables"
                for n in wrongly
            ]
            c.fail(f"decayed but should not be: {', '.join(wrongly[:5])}", f"{kinds[0]} get weight decay")
        c.expect(not missed, f"not decayed but should be: {', '.join(missed[:5])}", "the Linear layers' weights decay")


def _adamw_reference(params, grads, wd, lrs, betas, eps, variant=""):
    """AdamW in float64 on plain tensors, or with a planted change (the known mistakes)."""
    params = [p.clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = betas
    for t, (step_grads, lr) in enumerate(zip(grads, lrs), start=1):
        for i, (p, g) in enumerate(zip(params, step_grads)):
            if variant == "l2":
                g = g + wd[i] * p
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = (m[i], v[i]) if variant == "no_bias_correction" else (m[i] / (1 - b1**t), v[i] / (1 - b2**t))
            denom = (v_hat + eps).sqrt() if variant == "eps_inside" else v_hat.sqrt() + eps
            decay = 0.0 if variant == "l2" else (wd[i] if variant != "no_lr_in_decay" else wd[i] / lr)
            params[i] = p * (1 - lr * decay) - lr * m_hat / denom
    return torch.cat([p.flatten() for p in params])


_ADAMW_MISTAKES = {
    "no_bias_correction": "the moments not divided by (1 - beta^t): the first steps are far too small",
    "eps_inside": "eps added inside the square root instead of after it",
    "l2": "weight decay added to the gradient (L2, Adam's coupled decay) instead of shrinking the weights directly",
    "no_lr_in_decay": "the weights shrunk by weight_decay alone, not by lr * weight_decay",
}


@exercise("12.adamw", "AdamW from scratch, equal to torch.optim.AdamW", "AdamW")
@_one_thread
def _adamw(fn, case):
    for name, scale, eps, steps in [
        ("two groups (weight decay 0.1 and 0), 30 steps, a learning rate that changes every step", 1.0, 1e-8, 30),
        ("tiny gradients (1e-3) with eps = 1e-3, 10 steps", 1e-3, 1e-3, 10),
    ]:
        with case(name) as c:
            g = torch.Generator().manual_seed(12)
            shapes = [(4, 3), (3,), (5, 2)]
            init = [torch.randn(s, generator=g, dtype=F64) for s in shapes]
            grads = [[scale * torch.randn(s, generator=g, dtype=F64) for s in shapes] for _ in range(steps)]
            lrs = [1e-2 * (0.9**t) for t in range(steps)]
            wd = [0.1, 0.0, 0.1]
            betas = (0.9, 0.95)
            mine = [nn.Parameter(p.clone()) for p in init]
            theirs = [nn.Parameter(p.clone()) for p in init]
            opt = c.call(
                fn,
                [{"params": [mine[0], mine[2]], "weight_decay": 0.1}, {"params": [mine[1]], "weight_decay": 0.0}],
                lr=lrs[0],
                betas=betas,
                eps=eps,
            )
            ref = torch.optim.AdamW(
                [{"params": [theirs[0], theirs[2]], "weight_decay": 0.1}, {"params": [theirs[1]], "weight_decay": 0.0}],
                lr=lrs[0],
                betas=betas,
                eps=eps,
            )
            for step_grads, lr in zip(grads, lrs):
                for group in (*opt.param_groups, *ref.param_groups):
                    group["lr"] = lr
                for p, q, gr in zip(mine, theirs, step_grads):
                    p.grad, q.grad = gr.clone(), gr.clone()
                c.call(opt.step)
                ref.step()
            got = torch.cat([p.detach().flatten() for p in mine])
            want = torch.cat([p.detach().flatten() for p in theirs])
            mistakes = {
                label: _adamw_reference(init, grads, wd, lrs, betas, eps, key) for key, label in _ADAMW_MISTAKES.items()
            }
            c.expect_close(f"the parameters after {steps} steps", got, want, atol=1e-10, rtol=1e-8, mistakes=mistakes)

    with case("make_adamw's groups on a GPT, 20 steps on real gradients: the weights of torch.optim.AdamW") as c:
        model = _course_gpt(_cfg(d_model=16, n_layers=1)).double()
        twin = copy.deepcopy(model)
        ref = make_adamw(twin, lr=3e-3)
        groups = [
            {"params": g["params"], "weight_decay": g["weight_decay"]} for g in make_adamw(model, lr=3e-3).param_groups
        ]
        opt = c.call(fn, groups, lr=3e-3, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(12)
        for _ in range(20):
            x, y = torch.randint(13, (4, 16), generator=gen), torch.randint(13, (4, 16), generator=gen)
            c.call(opt.zero_grad)
            ref.zero_grad()
            for m in (model, twin):
                F.cross_entropy(m(x)[0].reshape(-1, 13), y.reshape(-1)).backward()
            c.call(opt.step)
            ref.step()
        got = torch.cat([p.detach().flatten() for p in model.parameters()])
        want = torch.cat([p.detach().flatten() for p in twin.parameters()])
        c.expect_close("the parameters after 20 steps", got, want, atol=1e-9, rtol=1e-7)


@exercise("12.clip", "clipping by the global gradient norm", "clip_grad_norm")
@_one_thread
def _clip(fn, case):
    for name, scale, max_norm in [
        ("gradients of global norm about 9, max_norm 1: all scaled by one factor", 2.0, 1.0),
        ("gradients already below max_norm: unchanged", 0.01, 1.0),
    ]:
        with case(name) as c:
            g = torch.Generator().manual_seed(12)
            shapes = [(4, 3), (3,), (6,)]
            grads = [scale * torch.randn(s, generator=g, dtype=F64) for s in shapes]
            grads[0] *= 3  # one large parameter: clipping each on its own gives another result
            mine = [nn.Parameter(torch.zeros(s, dtype=F64)) for s in shapes]
            theirs = [nn.Parameter(torch.zeros(s, dtype=F64)) for s in shapes]
            for p, q, gr in zip(mine, theirs, grads):
                p.grad, q.grad = gr.clone(), gr.clone()
            norm = c.call(fn, mine, max_norm)
            want_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
            got = torch.cat([p.grad.flatten() for p in mine])
            want = torch.cat([q.grad.flatten() for q in theirs])
            per_param = torch.cat([gr.flatten() * min(1.0, max_norm / (float(gr.norm()) + 1e-6)) for gr in grads])
            flat = torch.cat([gr.flatten() for gr in grads])
            mistakes = {
                "each parameter's gradient clipped on its own norm, not all of them by the global norm": per_param,
                "gradients below max_norm scaled up to it (the factor must be capped at 1)": flat
                * (max_norm / (float(flat.norm()) + 1e-6)),
            }
            c.expect_close("the gradients after clipping", got, want, atol=1e-12, rtol=1e-9, mistakes=mistakes)
            value = norm.detach() if isinstance(norm, torch.Tensor) else torch.tensor(norm) if norm is not None else 0
            c.expect(
                isinstance(norm, torch.Tensor | float) and math.isclose(float(value), float(want_norm), rel_tol=1e-9),
                f"the returned norm is {norm!r}, expected {float(want_norm):.6g} (the global norm before clipping)",
            )


def _schedule(step, max_lr, warmup, total, min_lr, variant=""):
    if step < warmup:
        return max_lr * (step if variant == "off_by_one" else step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = progress if variant == "not_held" else min(1.0, progress)
    low = 0.0 if variant == "to_zero" else min_lr
    return low + (max_lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


_SCHEDULE_MISTAKES = {
    "off_by_one": "the warm-up off by one: the learning rate of step 0 is 0, and that step is wasted",
    "not_held": "the cosine goes on past total_steps and climbs back up",
    "to_zero": "the cosine decays to 0 instead of min_lr",
}


@exercise("12.schedule", "warm-up, then cosine decay", "lr_at")
@_one_thread
def _lr_schedule(fn, case):
    for name, (max_lr, warmup, total, min_lr), steps in [
        ("max_lr 1e-3, 4 warm-up steps, 12 in all, min_lr 1e-4: steps 0 to 16", (1e-3, 4, 12, 1e-4), range(17)),
        ("no warm-up: step 0 already gets max_lr", (2e-3, 0, 6, 0.0), range(8)),
    ]:
        with case(name) as c:
            got = [float(c.call(fn, s, max_lr, warmup, total, min_lr)) for s in steps]
            want = [_schedule(s, max_lr, warmup, total, min_lr) for s in steps]
            bad = [i for i, (a, b) in enumerate(zip(got, want)) if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)]
            if bad:
                wrong = {
                    label: [_schedule(s, max_lr, warmup, total, min_lr, key) for s in steps]
                    for key, label in _SCHEDULE_MISTAKES.items()
                }
                same = lambda a, b: all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-12) for u, v in zip(a, b))  # noqa: E731
                c.fail(
                    f"the learning rate at step {steps[bad[0]]} is {got[bad[0]]:.6g}, expected {want[bad[0]]:.6g}",
                    matching_mistake(got, wrong, same=same),
                )


# ---------------------------------------------------------------- 12 training


TEXT = (
    "first citizen: before we proceed any further, hear me speak. all: speak, speak. first citizen: you are all "
    "resolved rather to die than to famish? all: resolved. resolved. first citizen: first, you know caius marcius "
    "is chief enemy to the people. all: we know't, we know't. first citizen: let us kill him, and we'll have corn "
    "at our own price. is't a verdict? all: no more talking on't; let it be done: away, away! "
)


def _text_data() -> tuple[torch.Tensor, int]:
    chars = sorted(set(TEXT))
    return torch.tensor([chars.index(ch) for ch in TEXT * 3]), len(chars)


def _reference_train(model, data, steps, batch_size, max_lr, warmup, min_lr, wd, max_norm, seed, variant=""):
    """The exercise's loop with torch.optim.AdamW (make_adamw's groups) and clip_grad_norm_, or a planted change."""
    opt = make_adamw(model, lr=max_lr, weight_decay=wd, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step in range(steps):
        lr = _schedule(step + 1 if variant == "early" else step, max_lr, warmup, steps, min_lr)
        for group in opt.param_groups:
            group["lr"] = max_lr if variant == "constant" else lr
        x, y = get_batch(data, batch_size, model.cfg.block_size, gen)
        if variant != "no_zero_grad":
            opt.zero_grad(set_to_none=True)
        _, loss = model(x, x if variant == "inputs" else y)
        loss.backward()
        if variant == "per_param":
            for p in model.parameters():
                torch.nn.utils.clip_grad_norm_([p], max_norm)
        elif variant != "no_clip":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        losses.append(loss.item())
    return losses


_TRAIN_MISTAKES = {
    "no_zero_grad": "the gradients are never cleared: each step adds the new gradients to all the old ones",
    "early": "each step used the learning rate of the next step: the schedule runs one step ahead of the optimiser",
    "constant": "the learning rate stays at max_lr: no warm-up and no decay",
    "no_clip": "the gradients were never clipped",
    "per_param": "each parameter's gradient clipped on its own norm instead of the global norm",
    "inputs": "the loss of predicting the inputs themselves (the batch's targets are already the next tokens)",
}


def _held_out_loss(model, data, block_size) -> float:
    x, y = eval_windows(data, block_size, max_windows=32)
    model.eval()
    with torch.no_grad():
        logits = model(x)[0]
    return float(F.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), y.reshape(-1)))


def _losses(c, got, steps: int) -> list[float]:
    c.expect(
        isinstance(got, list | tuple) and len(got) == steps,
        f"train should return a list of {steps} losses, got "
        f"{len(got) if isinstance(got, list | tuple) else type(got).__name__}",
        "append loss.item() once per step",
    )
    c.expect(all(isinstance(v, int | float) for v in got), "the losses should be Python floats", "use loss.item()")
    return [float(v) for v in got]


def _suspiciously_low(c, train_loss: float, held_out: float, reference: float) -> None:
    if train_loss < 0.5 * min(held_out, reference):
        c.fail(
            f"suspiciously low: the training loss falls to {train_loss:.3f}, while the same model scores "
            f"{held_out:.3f} on the next characters of held-out text (the course's loop: {reference:.3f})",
            "a loss that low means the model is asked for something it can already see",
        )


@exercise("12.train", "the training loop: it trains", "train")
@_one_thread
def _train(fn, case):
    data, vocab = _text_data()
    args = dict(steps=12, batch_size=4, max_lr=1e-2, warmup=3, min_lr=1e-3, wd=0.1, max_norm=0.5)
    with case("the course's GPT (float64), 12 steps: the losses and weights of PyTorch's AdamW and clipping") as c:
        cfg = _cfg(vocab_size=vocab, d_model=16, n_layers=1)
        model, twin = _course_gpt(cfg).double(), _course_gpt(cfg).double()
        a = args
        got = c.call(
            fn, model, data, a["steps"], a["batch_size"], a["max_lr"], a["warmup"], a["min_lr"], a["wd"],
            a["max_norm"], torch.Generator().manual_seed(12),
        )  # fmt: skip
        got = _losses(c, got, a["steps"])
        want = _reference_train(twin, data, *args.values(), seed=12)
        _suspiciously_low(c, got[-1], _held_out_loss(model, data, cfg.block_size), want[-1])
        if not all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-9) for u, v in zip(got, want)):
            wrong = {
                label: _reference_train(_course_gpt(cfg).double(), data, *args.values(), seed=12, variant=key)
                for key, label in _TRAIN_MISTAKES.items()
            }
            c.expect_close(
                "the losses of the 12 steps",
                torch.tensor(got, dtype=F64),
                torch.tensor(want, dtype=F64),
                atol=1e-9,
                rtol=1e-6,
                mistakes={k: torch.tensor(v, dtype=F64) for k, v in wrong.items()},
                hint="the order of each step is: learning rate, batch, clear, forward, backward, clip, step",
            )
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        want_flat = torch.cat([p.detach().flatten() for p in twin.parameters()])
        c.expect_close("the weights after 12 steps", flat, want_flat, atol=1e-8, rtol=1e-6)

    with case(
        f"it trains: your GPT with your loop, from the course GPT's initial weights, 40 steps on a slice of text, "
        f"ends within {TRAIN_MARGIN} of the course's held-out loss"
    ) as c:
        learner_gpt = getattr(fn, "__globals__", {}).get("GPT")
        c.expect(
            isinstance(learner_gpt, type) and issubclass(learner_gpt, nn.Module) and learner_gpt is not GPT,
            "no class GPT of your own found next to train (exercise 12.gpt)",
            "write the GPT of exercise 12.gpt in the same notebook",
        )
        cfg = _cfg(vocab_size=vocab, block_size=16, d_model=32, n_heads=4, n_layers=2)
        ref = _course_gpt(cfg, seed=1)
        model = _module(c, c.call(learner_gpt, cfg), "GPT(cfg)")
        _load(c, model, copy.deepcopy(ref.state_dict()))
        run = dict(steps=40, batch_size=8, max_lr=1e-2, warmup=4, min_lr=1e-3, wd=0.1, max_norm=1.0)
        got = c.call(fn, model, data, *run.values(), torch.Generator().manual_seed(1))
        got = _losses(c, got, run["steps"])
        want = _reference_train(ref, data, *run.values(), seed=1)
        mine, theirs = _held_out_loss(model, data, 16), _held_out_loss(ref, data, 16)
        _suspiciously_low(c, got[-1], mine, want[-1])
        c.expect(
            theirs - TRAIN_MARGIN <= mine,
            f"suspiciously low: your model's held-out loss is {mine:.3f}, the course's {theirs:.3f} (from "
            f"{math.log(vocab):.3f} untrained): it predicts text it should not be able to see",
            "a model that sees the token it must predict wins at training and at evaluation alike",
        )
        c.expect(
            mine <= theirs + TRAIN_MARGIN,
            f"your model's held-out loss is {mine:.3f} after 40 steps, the course's {theirs:.3f} from the same "
            f"weights (untrained: {math.log(vocab):.3f}); training losses {got[0]:.3f} -> {got[-1]:.3f}, "
            f"the course's {want[0]:.3f} -> {want[-1]:.3f}",
            "compare your model and your loop with the course's part by part: the checks above each of them",
        )


# ---------------------------------------------------------------- 12 sampling


def _reference_sample(model, idx, n, temperature, seed, variant=""):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -model.cfg.block_size :])[0][:, -1, :]
            if variant == "greedy":
                nxt = logits.argmax(-1, keepdim=True)
            else:
                scale = 1.0 if variant == "no_temperature" else temperature
                probs = torch.softmax(logits * temperature if variant == "times" else logits / scale, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=gen)
            idx = torch.cat([idx, nxt], dim=1)
    return idx


_SAMPLE_MISTAKES = {
    "no_temperature": "the temperature is not applied",
    "times": "the logits multiplied by the temperature instead of divided",
    "greedy": "always the most likely id: nothing is drawn",
}


@exercise("12.sample", "sampling from your GPT", "generate")
@_one_thread
def _sample(fn, case):
    cfg = _cfg(block_size=8, d_model=16, n_layers=1)
    model = _course_gpt(cfg).double().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.5 * torch.randn_like(prm))
    prompt = torch.randint(13, (2, 3), generator=torch.Generator().manual_seed(12))
    for name, n, temperature in [
        ("2 prompts of 3 ids, 4 new ids at temperature 0.7, drawn with the given generator", 4, 0.7),
        ("12 new ids: the context grows past block_size 8 and must be cropped", 12, 1.3),
    ]:
        with case(name) as c:
            got = c.call(
                fn,
                model,
                prompt.clone(),
                n,
                temperature,
                torch.Generator().manual_seed(12),
                error_hints=(("exceed block_size", "the model takes at most block_size positions"),),
            )
            want = _reference_sample(model, prompt, n, temperature, 12)
            c.expect(
                isinstance(got, torch.Tensor) and got.shape == want.shape,
                f"the result should be a tensor of shape {tuple(want.shape)} (the prompt and the new ids), got "
                f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
            )
            c.expect(torch.equal(got[:, :3], prompt), "the result should start with the prompt")
            if not torch.equal(got, want):
                wrong = {
                    label: _reference_sample(model, prompt, n, temperature, 12, key)
                    for key, label in _SAMPLE_MISTAKES.items()
                }
                first = int((got != want).any(0).nonzero()[0])
                c.fail(
                    f"the ids differ from position {first} on: got {got[:, first].tolist()}, "
                    f"expected {want[:, first].tolist()}",
                    matching_mistake(got, wrong, same=torch.equal)
                    or "draw each id with torch.multinomial(probs, 1, generator=generator), one position at a time",
                )

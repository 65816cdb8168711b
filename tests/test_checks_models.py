"""The checks of notebooks 06-08: each planted mistake is caught with feedback that names its symptom, and the checks'
own references agree with the course's helpers and sacreBLEU (solutions and stubs: test_workspace.py)."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from builders import failing
from grader.checks import models as cm
from grader.core import grade
from helpers.evaluation import corpus_bleu as helpers_corpus_bleu
from helpers.models import TinyDecoder

# ---------------------------------------------------------------- 06


def make_batch(data, starts, block_size, shift=1):
    offsets = starts[:, None] + torch.arange(block_size)
    return data[offsets], data[offsets + shift]


def test_batch_targets_not_shifted():
    failing("06.batch", lambda d, s, t: make_batch(d, s, t, shift=0), "targets equal to the inputs (not shifted)")


def test_batch_targets_shifted_backwards():
    failing("06.batch", lambda d, s, t: make_batch(d, s, t, shift=-1), "y differs", "targets shifted the wrong way")


def lm_loss(logits, targets, reduce="mean", dim=-1):
    log_probs = torch.log_softmax(logits, dim=dim)
    picked = -log_probs.gather(-1, targets[..., None])[..., 0]
    return picked.sum() if reduce == "sum" else picked.mean()


def test_lm_loss_sum_instead_of_mean():
    failing("06.lm_loss", lambda lg, t: lm_loss(lg, t, reduce="sum"), "a sum over the positions instead of a mean")


def test_lm_loss_softmax_over_the_positions():
    failing("06.lm_loss", lambda lg, t: lm_loss(lg, t, dim=1), "log-softmax over the positions (axis 1)")


def test_lm_loss_cross_entropy_unflattened():
    text = failing("06.lm_loss", lambda lg, t: F.cross_entropy(lg, t), "Expected target size", "flatten the logits")
    assert (
        "F.cross_entropy unflattened (axis 1 becomes the classes)" in text
    )  # the case where T == vocab_size hides the error


def test_lm_loss_detached():
    failing("06.lm_loss", lambda lg, t: lm_loss(lg, t).detach(), "cut off from the logits")


def train_step(model, optimizer, x, y, zero_grad=True, step=True, as_float=True):
    if zero_grad:
        optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    if step:
        optimizer.step()
    return loss.item() if as_float else loss


def test_train_step_without_zero_grad():
    text = failing(
        "06.train_step", lambda m, o, x, y: train_step(m, o, x, y, zero_grad=False), "never zeroes the gradients"
    )
    assert "1/3 cases passed" not in text and "2/3 cases passed" in text  # only the two-step case can see it


def test_train_step_without_optimizer_step():
    failing("06.train_step", lambda m, o, x, y: train_step(m, o, x, y, step=False), "the weights did not change")


def test_train_step_returning_the_tensor():
    failing("06.train_step", lambda m, o, x, y: train_step(m, o, x, y, as_float=False), "expected a Python float")


def lr_at(step, max_lr, warmup_steps, total_steps, min_lr, off_by_one=False, hold=True, floor=True):
    if step < warmup_steps:
        return max_lr * (step if off_by_one else step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress) if hold else progress
    low = min_lr if floor else 0.0
    return low + (max_lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def test_warmup_off_by_one():
    text = failing(
        "06.warmup_cosine",
        lambda *a: lr_at(*a, off_by_one=True),
        "warm-up off by one",
        "the learning rate at step 0 is 0,",
    )
    assert "2/3 cases passed" in text  # steps past the warm-up and a schedule without one are right


def test_warmup_cosine_not_held_after_the_end():
    failing("06.warmup_cosine", lambda *a: lr_at(*a, hold=False), "goes on past total_steps")


def test_warmup_cosine_decaying_to_zero():
    failing("06.warmup_cosine", lambda *a: lr_at(*a, floor=False), "decays to 0 instead of min_lr")


# ---------------------------------------------------------------- 07


def test_temperature_after_the_softmax():
    failing(
        "07.temperature",
        lambda lg, tau: torch.softmax(lg, dim=-1) / tau,
        "sum to 2, not 1",
        "temperature applied after the softmax",
    )


def test_temperature_multiplied():
    failing("07.temperature", lambda lg, tau: torch.softmax(lg * tau, dim=-1), "multiplying the logits")


def test_temperature_softmax_that_overflows():
    def naive(logits, tau):
        exps = torch.exp(logits / tau)
        return exps / exps.sum(-1, keepdim=True)

    text = failing("07.temperature", naive, "NaN", "exp overflows")
    assert "2/3 cases passed" in text


def top_k(logits, k, fill=float("-inf")):
    kth = torch.sort(logits, dim=-1, descending=True).values[..., k - 1 : k]
    return logits.masked_fill(logits < kth, fill)


def test_top_k_dropped_logits_set_to_zero():
    failing("07.top_k", lambda lg, k: top_k(lg, k, fill=0.0), "should be -inf", "to 0 instead of -inf")


def test_top_k_one_too_few():
    failing(
        "07.top_k",
        lambda lg, k: top_k(lg, max(1, k - 1)),
        "keeps 1 token(s), the reference keeps 2",
        "keeping k - 1 tokens",
    )


def test_top_k_without_ties():
    failing("07.top_k", cm._keep_exactly, "keeps 3 token(s), the reference keeps 4", "ties are kept")


def top_p(logits, p, keep_crossing=True, sort=True):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = torch.cumsum(probs, dim=-1)
    drop_sorted = (cum - probs >= p) if keep_crossing else (cum > p)
    if not sort:
        return sorted_logits.masked_fill(drop_sorted, float("-inf"))
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def test_top_p_dropping_the_crossing_token():
    text = failing(
        "07.top_p",
        lambda lg, p: top_p(lg, p, keep_crossing=False),
        "missing: token 3 (probability 0.3)",
        "dropping the token that crosses p",
        "no token is left at all",
    )
    assert "0/3 cases passed" in text


def test_top_p_left_in_sorted_order():
    failing("07.top_p", lambda lg, p: top_p(lg, p, sort=False), "sorted order")


def step_with_cache(model, new_ids, cache, restart=False, replace=False, mask=True):
    offset = 0 if cache is None else cache["k"].shape[1]
    t_new = new_ids.shape[1]
    start = 0 if restart else offset
    x = model.tok_emb(new_ids) + model.pos_emb(torch.arange(start, start + t_new))
    q, k_new, v_new = model.q_proj(x), model.k_proj(x), model.v_proj(x)
    k, v = k_new, v_new
    if cache is not None:
        k, v = torch.cat([cache["k"], k], dim=1), torch.cat([cache["v"], v], dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask:
        allowed = torch.ones(t_new, offset + t_new, dtype=torch.bool).tril(offset)
        scores = scores.masked_fill(~allowed, float("-inf"))
    logits = model.lm_head(x + torch.softmax(scores, dim=-1) @ v)
    return logits, ({"k": k_new, "v": v_new} if replace else {"k": k, "v": v})


def test_kv_cache_positions_restart_at_zero():
    text = failing(
        "07.kv_cache",
        lambda m, i, c: step_with_cache(m, i, c, restart=True),
        "positions that restart at 0",
        "the logits tensor of position 4 differs",
    )
    assert "1/3 cases passed" in text  # the prompt alone is right


def test_kv_cache_replaced_instead_of_appended():
    failing(
        "07.kv_cache",
        lambda m, i, c: step_with_cache(m, i, c, replace=True),
        "has shape (2, 1, 8)",
        "append the new keys and values",
    )


def test_kv_cache_without_a_mask_in_a_chunk():
    text = failing("07.kv_cache", lambda m, i, c: step_with_cache(m, i, c, mask=False), "no causal mask")
    assert "1/3 cases passed" in text  # single new tokens need no mask


def test_tiny_decoder_reference_step_equals_recomputation():
    model = TinyDecoder(seed=3).double()
    ids = torch.randint(12, (2, 7))
    with torch.no_grad():
        logits, cache = cm._reference_cached_step(model, ids[:, :3], None)
        pieces = [logits]
        for a, b in [(3, 5), (5, 6), (6, 7)]:
            logits, cache = cm._reference_cached_step(model, ids[:, a:b], cache)
            pieces.append(logits)
        assert torch.allclose(torch.cat(pieces, dim=1), model(ids), atol=1e-12)
        assert cache["k"].shape == (2, 7, 8)


def test_tiny_decoder_is_seeded():
    torch.manual_seed(1)
    a = TinyDecoder(seed=5)
    torch.manual_seed(2)
    b = TinyDecoder(seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(TinyDecoder(seed=6).lm_head.weight, a.lm_head.weight)


# ---------------------------------------------------------------- 08


def masked_lm_loss(logits, targets, pad_id, fixed_pad=None):
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=pad_id if fixed_pad is None else fixed_pad,
    )


def test_loss_that_counts_padding():
    text = failing("08.masked_loss", lambda lg, t, pad: masked_lm_loss(lg, t, -100), "a loss that counts padding")
    assert "1/3 cases passed" in text  # only the batch without padding is right


def test_loss_with_pad_id_fixed_at_zero():
    failing("08.masked_loss", lambda lg, t, pad: masked_lm_loss(lg, t, pad, fixed_pad=0), "instead of the pad_id given")


def greedy_decode(next_logits, bos_id, eos_id, max_len, stop=True, whole_prefix=True):
    prefix = [bos_id]
    while len(prefix) - 1 < max_len:
        token = int(torch.argmax(next_logits(prefix if whole_prefix else prefix[-1:])))
        prefix.append(token)
        if stop and token == eos_id:
            break
    return prefix[1:]


def test_greedy_that_does_not_stop_at_eos():
    text = failing(
        "08.greedy_decode",
        lambda *a: greedy_decode(*a, stop=False),
        "goes on after <eos>",
        "stop as soon as <eos> is chosen",
    )
    assert "1/3 cases passed" in text  # a scorer without <eos> is right


def test_greedy_with_only_the_last_token():
    failing("08.greedy_decode", lambda *a: greedy_decode(*a, whole_prefix=False), "next_logits takes the whole prefix")


def beam_step(beams, log_probs, beam_size, best_only=False, add=True):
    cands = []
    for (tokens, score), row in zip(beams, log_probs.tolist()):
        ids = [max(range(len(row)), key=row.__getitem__)] if best_only else range(len(row))
        cands += [((score if add else 0.0) + row[t], tokens + [t], score + row[t]) for t in ids]
    cands.sort(key=lambda c: c[0], reverse=True)
    return [(tokens, s) for _, tokens, s in cands[:beam_size]]


def test_beam_step_keeping_each_beams_best_token():
    failing(
        "08.beam_step",
        lambda *a: beam_step(*a, best_only=True),
        "keeping only each beam's best token",
        "returned 1 beam(s), expected beam_size = 3",
        "one beam may supply several survivors",
    )


def test_beam_step_without_the_beams_score():
    failing("08.beam_step", lambda *a: beam_step(*a, add=False), "the beam's score is not added")


def test_beam_step_that_appends_to_the_parents():
    def appending(beams, log_probs, beam_size):
        out = beam_step(beams, log_probs, beam_size)
        for tokens, _ in beams:
            tokens.append(0)
        return out

    failing("08.beam_step", appending, "the input beams changed")


def clipped_precision(hyp, refs, n, clip=True):
    counts = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
    best = Counter()
    for ref in refs:
        for gram, c in Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)).items():
            best[gram] = max(best[gram], c)
    matched = sum((min(c, best[g]) if clip else c) for g, c in counts.items() if best[g])
    return matched, sum(counts.values())


def test_clipped_precision_without_clipping():
    failing(
        "08.clipped_precision",
        lambda h, r, n: clipped_precision(h, r, n, clip=False),
        "(7, 7), expected (2, 7)",
        "without clipping",
    )


def brevity_penalty(c, r, inverted=False):
    if c >= r:
        return 1.0
    if c == 0:
        return 0.0
    return math.exp(1 - c / r) if inverted else math.exp(1 - r / c)


def test_brevity_penalty_with_the_ratio_inverted():
    text = failing("08.brevity_penalty", lambda c, r: brevity_penalty(c, r, inverted=True), "length ratio inverted")
    assert "2/3 cases passed" in text


def test_brevity_penalty_dividing_by_zero():
    failing("08.brevity_penalty", lambda c, r: 1.0 if c >= r else math.exp(1 - r / c), "ZeroDivisionError")


@pytest.mark.parametrize("mistake", [dict(clip="none"), dict(ref_len_rule="shortest"), dict(smooth=False)])
def test_corpus_bleu_mistakes(mistake):
    (label,) = [k for k, v in cm._BLEU_MISTAKES.items() if v == mistake]
    failing("08.corpus_bleu", lambda h, r: cm._bleu(h, r, **mistake), label)


def test_corpus_bleu_without_clipping_names_it():
    failing("08.corpus_bleu", lambda h, r: cm._bleu(h, r, clip="none"), "BLEU without clipping")


BLEU_CASES = [
    (cm._split("the cat sat on the mat"), [list(cm._CAT)]),
    (
        cm._split("the the the cat the the the mat", "a b c d e"),
        [cm._split("the cat is on the mat"), cm._split("a b c d e f", "a b d")],
    ),
    (
        cm._split("où est le chat noir", "je suis très fatigué", "tom a un vélo"),
        [
            cm._split("où est le chat noir ?", "le chat"),
            cm._split("je suis vraiment très fatigué", "je suis fatigué"),
            cm._split("tom a un vélo rouge et tout neuf ."),
        ],
    ),
    (
        cm._split("elle lit un livre", "nous partons"),
        [cm._split("elle lit un bon livre ce soir"), cm._split("nous partons demain matin")],
    ),
]


@pytest.mark.parametrize("hyps, refs", BLEU_CASES)
def test_check_bleu_reference_equals_helpers_and_sacrebleu(hyps, refs):
    ours = cm._bleu(hyps, refs)
    assert ours > 0
    assert ours == pytest.approx(helpers_corpus_bleu(hyps, refs).score, abs=1e-9)
    assert ours == pytest.approx(cm._sacrebleu(hyps, refs), abs=1e-9)


def test_check_clipping_rules_differ_on_the_several_references_case():
    hyp, refs = "a a a a b b b c".split(), ["a a b b d".split(), "b a b b".split(), "c d".split()]
    results = {rule: cm._clipped(hyp, refs, 1, rule) for rule in ("max", "none", "sum", "first", "distinct")}
    assert len(set(results.values())) == len(results), results


def test_07_greedy_catches_values_and_argmin():
    assert grade("07.greedy", lambda logits: logits.argmax(dim=-1)).passed
    values = grade("07.greedy", lambda logits: logits.amax(dim=-1))
    assert not values.passed and "return their positions" in values.text()
    smallest = grade("07.greedy", lambda logits: logits.argmin(dim=-1))
    assert not smallest.passed and "taking the smallest logit" in smallest.text()
    flat = grade("07.greedy", lambda logits: logits.argmax())
    assert not flat.passed and "one id per row" in flat.text()

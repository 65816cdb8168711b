"""From logits to text: sampling and generation (introduced in 07_generation), greedy and beam search (08).

Both kinds of model decode with the same KV-cache interface (new_cache / cache_length).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from helpers.tokenizers import BOS_ID, EOS_ID, PAD_ID

# ---------------------------------------------------------------- sampling and generation with a GPT (07_generation)


def check_sampling_args(
    vocab_size: int, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Raise a ValueError for temperature <= 0, top_k outside 1..vocab_size or top_p outside (0, 1]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax decoding), got {temperature}")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= vocab_size):
        raise ValueError(f"top_k must be an integer in 1..{vocab_size} (the vocabulary size), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept) and set the rest to -inf."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, V) -> (B, 1): the k-th largest value
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p; set the rest to -inf."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # probability of all strictly more likely tokens
    drop_sorted = mass_before >= p  # the most likely token always has mass_before = 0, so it stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Turn last-position logits (B, V) into sampling probabilities: temperature, then top-k, then top-p."""
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def pick_next(
    logits: torch.Tensor,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token (B, 1) from logits (B, V): argmax if greedy, else a draw from next_token_probs."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator)


def _check_generate_args(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Raise a ValueError for a bad prompt tensor, a negative length or bad sampling settings."""
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be a non-empty (B, T) tensor of token ids, got shape {tuple(idx.shape)}")
    if max_new_tokens is not None and max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling_args(model.cfg.vocab_size, temperature, top_k, top_p)
    if idx.min() < 0 or idx.max() >= model.cfg.vocab_size:
        raise ValueError(f"token ids must be in 0..{model.cfg.vocab_size - 1}")


# Without the cache, every step runs the model on the last block_size tokens. With the cache, the prompt runs once and
# each step feeds only the newest token: the same result while the sequence fits in block_size. A full cache is rebuilt
# from the last block_size // 2 tokens (learned positions cannot slide), so beyond block_size the model sees between
# block_size // 2 and block_size tokens of context instead of exactly block_size.
@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int | None,
    greedy: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    on_token=None,
):
    """Append max_new_tokens tokens to idx (B, T) and return (B, T + max_new_tokens) [and the logits used (B, N, V)].

    on_token(ids (B, 1)) is called after each step (sample.py streams with it); None as max_new_tokens goes on until
    on_token raises (or Ctrl-C). The KV cache is described above; the model's mode is restored at the end."""
    _check_generate_args(model, idx, max_new_tokens or 0, temperature, top_k, top_p)
    block_size, was_training = model.cfg.block_size, model.training
    model.eval()
    cache, used = None, []
    try:
        for step in range(max_new_tokens) if max_new_tokens is not None else itertools.count():
            if not use_cache:
                logits, _ = model(idx[:, -block_size:])  # the whole window, every step: (B, T') -> (B, T', V)
            elif step == 0 or model.cache_length(cache) >= block_size:
                window = block_size if step == 0 else max(1, block_size // 2)  # a full cache: the last half window
                cache = model.new_cache()  # the prompt, or a full cache rebuilt
                logits, _ = model(idx[:, -window:], cache=cache)
            else:
                logits, _ = model(idx[:, -1:], cache=cache)  # only the newest token: (B, 1) -> (B, 1, V)
            last = logits[:, -1, :]  # (B, V)
            nxt = pick_next(last, greedy, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            used.append(last)
            if on_token is not None:
                on_token(nxt)
    finally:  # also when on_token stops the loop (or Ctrl-C does)
        model.train(was_training)
    return (idx, torch.stack(used, dim=1) if used else None) if return_logits else idx  # logits: (B, N, V)


def prompt_ids(model: nn.Module, tokenizer, prompt: str, seed: int | None = None):
    """Encode a prompt (cropped to its last block_size tokens) on the model's device, and a seeded generator."""
    if not isinstance(prompt, str) or prompt == "":
        raise ValueError("the prompt must be a non-empty string")
    ids = tokenizer.encode(prompt)  # raises ValueError on characters outside the vocabulary
    idx = torch.tensor([ids[-model.cfg.block_size :]], dtype=torch.long, device=model_device(model))
    generator = torch.Generator(device=idx.device).manual_seed(seed) if seed is not None else None
    return idx, generator


def generate_text(
    model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, seed: int | None = None, **kwargs
) -> str:
    """Continue a prompt string; a prompt longer than block_size is cropped to its last block_size characters."""
    idx, generator = prompt_ids(model, tokenizer, prompt, seed)
    out = generate(model, idx, max_new_tokens, generator=generator, **kwargs)
    return prompt + tokenizer.decode(out[0, idx.shape[1] :])


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


# ---------------------------------------------------------------- greedy decoding and beam search (08_translation)


def _reorder_cache(cache: list[dict], index: torch.Tensor) -> None:
    """Keep the cached keys and values of the rows in `index` (beam search picks new parents each step)."""
    for layer in cache:
        for part in layer.values():
            for name in ("k", "v"):
                if name in part:
                    part[name] = part[name].index_select(0, index)


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, max_len: int = 40) -> torch.Tensor:
    """Pick the most likely next token until every row has produced <eos>; returns (B, <= max_len) ids without <bos>.

    src is moved to the model's device; the output ids are on that device.
    """
    model.eval()
    src = src.to(model_device(model))
    max_len = min(max_len, model.cfg.max_len)
    memory, src_mask = model.encode(src)
    b = src.shape[0]
    cache = model.new_cache()
    token = torch.full((b, 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    out = []
    for _ in range(max_len):
        logits = model.decode(token, memory, src_mask, cache=cache)[:, -1]  # (B, V): only the new position
        token = logits.argmax(-1).masked_fill(done, PAD_ID)[:, None]  # (B, 1)
        out.append(token)
        done |= token[:, 0] == EOS_ID
        if done.all():
            break
    return torch.cat(out, dim=1)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length normalisation ((5 + length) / 6) ** alpha; alpha = 0 ranks by total log-probability."""
    return ((5.0 + length.float()) / 6.0) ** alpha


def _best_extensions(logp, logp_sum, lengths, finished, alpha: float):
    """The K best one-token extensions of every sentence's K hypotheses: (parent, token, total log-prob, length).

    logp (B, K, V) are the next-token log-probabilities; a finished hypothesis extends only with <pad>, at no cost.
    Extensions are ranked by total log-prob / length_penalty, each of the results is (B, K).
    """
    b, k, v = logp.shape
    frozen = torch.full_like(logp, float("-inf"))
    frozen[..., PAD_ID] = 0.0
    logp = torch.where(finished[..., None], frozen, logp)
    cand = (logp_sum[..., None] + logp).view(b, k * v)  # (B, K*V) total log-probs of every extension
    cand_len = (lengths + (~finished).long())[..., None].expand(b, k, v).reshape(b, k * v)
    ranked = cand / length_penalty(cand_len, alpha)
    ranked = ranked.masked_fill(torch.isneginf(cand), float("-inf"))
    _, top = ranked.topk(k, dim=-1)  # (B, K)
    return top // v, top % v, cand.gather(1, top), cand_len.gather(1, top)


@torch.no_grad()
def beam_search(
    model: nn.Module, src: torch.Tensor, beam: int = 4, alpha: float = 0.6, max_len: int = 40, return_all: bool = False
):
    """Batched beam search: keep the `beam` best hypotheses per sentence, ranked by log-prob / length_penalty.

    A hypothesis that produced <eos> is frozen (it extends only with <pad> at no cost) and keeps competing.
    Returns (B, T) ids of the best hypothesis per sentence, or with return_all the (B, beam, T) hypotheses and
    their normalised scores (B, beam), best first. src is moved to the model's device; the outputs are on that device.
    """
    model.eval()
    src = src.to(model_device(model))
    max_len = min(max_len, model.cfg.max_len)
    b, k = src.shape[0], beam
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)  # (B, S, C) -> (B*K, S, C)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    cache = model.new_cache()
    dev = src.device
    seqs = torch.full((b * k, 1), BOS_ID, dtype=torch.long, device=dev)
    logp_sum = torch.zeros(b, k, device=dev)
    logp_sum[:, 1:] = float("-inf")  # all beams start identical: keep one so the first step does not repeat it
    lengths = torch.zeros(b, k, dtype=torch.long, device=dev)
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    for _ in range(max_len):
        logits = model.decode(seqs[:, -1:], memory, src_mask, cache=cache)[:, -1]  # (B*K, V)
        logp = torch.log_softmax(logits.float(), dim=-1).view(b, k, -1)  # (B, K, V)
        parent, token, logp_sum, lengths = _best_extensions(logp, logp_sum, lengths, finished, alpha)
        finished = finished.gather(1, parent) | (token == EOS_ID)
        rows = (parent + torch.arange(b, device=dev)[:, None] * k).view(-1)  # (B*K,) rows of the parents
        seqs = torch.cat([seqs.index_select(0, rows), token.view(-1, 1)], dim=1)
        _reorder_cache(cache, rows)
        if finished.all():
            break
    scores = logp_sum / length_penalty(lengths, alpha)
    scores, order = scores.sort(dim=-1, descending=True)
    seqs = seqs[:, 1:].view(b, k, -1).gather(1, order[..., None].expand(b, k, seqs.shape[1] - 1))
    return (seqs, scores) if return_all else seqs[:, 0]


def strip_after_eos(ids: torch.Tensor) -> list[list[int]]:
    """(B, T) decoder output -> id lists without <eos> and what follows it."""
    out = []
    for row in ids.tolist():
        out.append(row[: row.index(EOS_ID)] if EOS_ID in row else [i for i in row if i != PAD_ID])
    return out

"""Sampling strategies and autoregressive generation with and without a KV cache (introduced in 07_generation)."""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def check_sampling_args(vocab_size: int, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None) -> None:
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


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """Turn last-position logits (B, V) into sampling probabilities: temperature, then top-k, then top-p."""
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def pick_next(logits: torch.Tensor, greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
              top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose the next token (B, 1) from logits (B, V): argmax if greedy, else a draw from next_token_probs."""
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, greedy: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, return_logits: bool = False):
    """Append max_new_tokens tokens to idx (B, T) and return (B, T + max_new_tokens) [and the logits used].

    Without the cache, every step runs the model on the last block_size tokens.
    With the cache, the prompt is run once and each step feeds only the newest token; the result is the same as
    without the cache while the sequence fits in block_size. Once the cache is full, it is rebuilt from the last
    block_size // 2 tokens (learned positions cannot slide), so beyond block_size the model sees between
    block_size // 2 and block_size tokens of context instead of exactly block_size.
    """
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx must be a non-empty (B, T) tensor of token ids, got shape {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    vocab_size, block_size = model.cfg.vocab_size, model.cfg.block_size
    check_sampling_args(vocab_size, temperature, top_k, top_p)
    if idx.min() < 0 or idx.max() >= vocab_size:
        raise ValueError(f"token ids must be in 0..{vocab_size - 1}")
    was_training = model.training
    model.eval()
    cache, used_logits = None, []
    for _ in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(idx[:, -block_size:])  # (B, T') -> (B, T', V)
        elif cache is None:
            cache = model.new_cache()
            logits, _ = model(idx[:, -block_size:], cache=cache)  # the prompt, once: (B, T) -> (B, T, V)
        elif model.cache_length(cache) >= block_size:
            cache = model.new_cache()  # full: rebuild from the last half window
            logits, _ = model(idx[:, -max(1, block_size // 2):], cache=cache)
        else:
            logits, _ = model(idx[:, -1:], cache=cache)  # only the newest token: (B, 1) -> (B, 1, V)
        last = logits[:, -1, :]  # (B, V)
        used_logits.append(last)
        idx = torch.cat([idx, pick_next(last, greedy, temperature, top_k, top_p, generator)], dim=1)
    model.train(was_training)
    if return_logits:
        return idx, (torch.stack(used_logits, dim=1) if used_logits else None)  # (B, max_new_tokens, V)
    return idx


def generate_text(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int, seed: int | None = None,
                  **kwargs) -> str:
    """Continue a prompt string; a prompt longer than block_size is cropped to its last block_size characters."""
    if not isinstance(prompt, str) or prompt == "":
        raise ValueError("the prompt must be a non-empty string")
    ids = tokenizer.encode(prompt)  # raises ValueError on characters outside the vocabulary
    idx = torch.tensor([ids[-model.cfg.block_size:]], dtype=torch.long, device=next(model.parameters()).device)
    generator = torch.Generator(device=idx.device).manual_seed(seed) if seed is not None else None
    out = generate(model, idx, max_new_tokens, generator=generator, **kwargs)
    return prompt + tokenizer.decode(out[0, idx.shape[1]:])


def time_generation(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, use_cache: bool,
                    repeats: int = 3) -> dict:
    """Time greedy generation of max_new_tokens tokens; return the median seconds and tokens per second."""
    generate(model, idx[:, :2], 2, greedy=True, use_cache=use_cache)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, idx, max_new_tokens, greedy=True, use_cache=use_cache)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"seconds": median, "tokens_per_second": max_new_tokens / median, "times": times}

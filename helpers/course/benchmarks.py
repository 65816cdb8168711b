"""Attention, training and generation benchmarks and a GRU baseline (introduced in 07_generation, 09_profiling).

Attention methods are measured against sequence length and heads; throughput for training steps and generation.
Every number comes from helpers.course.measure (one timer, one memory probe).

Apple's MPS backend has no peak-memory counter, so benchmark_attention measures memory there on CPU copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import causal_mask, scaled_dot_product_attention
from helpers.attention_variants import blockwise_attention, linear_attention
from helpers.course.measure import peak_memory_bytes, time_fn
from helpers.decoding import generate, model_device
from helpers.training import autocast

ATTENTION_METHODS = ("naive", "sdpa", "linear")  # from-scratch softmax, PyTorch's fused kernel, linear attention


def attention_fn(method: str, causal: bool = True):
    """Return f(q, k, v) -> output for one attention method: "naive", "sdpa", "linear" or "blockwise" (tiles of 64)."""
    if method == "naive":

        def naive(q, k, v):
            mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None
            return scaled_dot_product_attention(q, k, v, mask=mask)[0]

        return naive
    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if method == "linear":
        return lambda q, k, v: linear_attention(q, k, v, causal=causal)
    if method == "blockwise":
        return lambda q, k, v: blockwise_attention(q, k, v, block_size=64, causal=causal)
    raise ValueError(f"unknown attention method {method!r}; choose from {(*ATTENTION_METHODS, 'blockwise')}")


def make_qkv(
    batch: int, n_heads: int, seq_len: int, d_head: int, requires_grad: bool = False, device="cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k, v of shape (B, H, T, D), seeded."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, n_heads, seq_len, d_head)
    return tuple(torch.randn(shape, generator=gen).to(device).requires_grad_(requires_grad) for _ in range(3))


def attention_step(method: str, q, k, v, backward: bool, causal: bool = True):
    """A closure that runs one attention call: forward under no_grad, or forward + backward of out.sum()."""
    fn = attention_fn(method, causal)

    def forward_only():
        with torch.no_grad():
            fn(q, k, v)

    def forward_backward():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).sum().backward()

    return forward_backward if backward else forward_only


def benchmark_attention(
    method: str,
    batch: int,
    n_heads: int,
    seq_len: int,
    d_head: int,
    warmup: int = 1,
    repeats: int = 3,
    device="cpu",
    causal: bool = True,
    seed: int = 0,
) -> dict:
    """Median time and peak memory of one attention call, forward and forward + backward, on `device`.

    Memory is measured on the device for CPU and CUDA; on other devices (MPS has no peak counter) it is measured on
    CPU copies of the same inputs.
    """
    device = torch.device(device)
    q, k, v = make_qkv(batch, n_heads, seq_len, d_head, requires_grad=True, device=device, seed=seed)
    memory_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")
    mq, mk, mv = (q, k, v) if memory_device == device else make_qkv(batch, n_heads, seq_len, d_head, True, "cpu", seed)
    row = {"method": method, "B": batch, "H": n_heads, "T": seq_len, "D": d_head}
    for backward, tag in ((False, "fwd"), (True, "fwd_bwd")):
        step = attention_step(method, q, k, v, backward, causal)
        row[f"time_{tag}_ms"] = 1e3 * time_fn(step, warmup, repeats, device).median
        memory_step = step if memory_device == device else attention_step(method, mq, mk, mv, backward, causal)
        row[f"peak_{tag}_MiB"] = peak_memory_bytes(memory_step, memory_device) / 2**20
    return row


def training_step_fn(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, amp: bool = False
):
    """A closure running one training step of a language model whose forward(x, y) returns (logits, loss).

    amp=True runs the forward pass under autocast in the device's reduced precision (helpers.course.speedups.autocast:
    bfloat16 on CPU and CUDA, as notebook 06 trains; none on MPS). The model, x and y must be on one device.
    """

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, enabled=amp):
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()

    return step


def count_params(model: nn.Module) -> int:
    """Number of distinct trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


class GRULanguageModel(nn.Module):
    """A character-level recurrent language model: embedding -> GRU -> linear head (the baseline for 09)."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int = 1):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.gru = nn.GRU(d_model, d_model, num_layers=n_layers, batch_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) -> logits (B, T, vocab_size) and, given targets, the mean cross-entropy."""
        h, _ = self.gru(self.tok_emb(idx))  # (B, T, C): step t waits for the hidden state of step t - 1
        logits = self.head(h)
        loss = None if targets is None else F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


@dataclass
class ProfileSettings:
    """Sizes and repeat counts of the profiling notebook for one run mode."""

    seq_lens: tuple = (64, 128, 256, 512, 1024, 2048, 4096)  # sequence lengths of the attention sweep
    head_counts: tuple = (1, 2, 4, 8, 16)  # head counts at fixed d_model
    head_seq_len: int = 1024  # sequence length of the head sweep
    batch: int = 1  # batch size of the attention benchmarks
    n_heads: int = 4  # heads in the sequence-length sweep
    d_model: int = 256  # d_model = n_heads * d_head
    threads: int = 1  # torch CPU threads while timing (one thread gives steady timings on a shared machine)
    warmup: int = 1  # untimed calls before timing
    repeats: int = 5  # timed calls; the median is reported
    gpt_seq_lens: tuple = (128, 1024)  # context lengths of the char-GPT throughput runs (06 trains at 128)
    gpt_tokens_per_step: int = 2048  # batch * block_size in each throughput step
    rnn_seq_lens: tuple = (32, 64, 128, 256, 512, 1024)  # sequence lengths of the GRU vs transformer runs
    rnn_batch: int = 8  # batch size of the GRU vs transformer runs
    step_repeats: int = 3  # timed training steps per configuration (after two warm-up steps)

    @classmethod
    def for_mode(cls, mode: str) -> ProfileSettings:
        """Full settings, or a shorter range with fewer repeats for quick runs."""
        if mode == "full":
            return cls()
        return cls(
            seq_lens=(64, 128, 256, 512),
            head_counts=(1, 2, 4, 8),
            head_seq_len=256,
            repeats=3,
            gpt_seq_lens=(64, 256),
            gpt_tokens_per_step=512,
            rnn_seq_lens=(32, 64, 128),
            step_repeats=2,
        )


def time_generation(
    model: nn.Module, idx: torch.Tensor, max_new_tokens: int, use_cache: bool, repeats: int = 3
) -> dict:
    """Time greedy generation of max_new_tokens tokens; return the median seconds and tokens per second."""
    device = model_device(model)
    generate(model, idx[:, :2], 2, greedy=True, use_cache=use_cache)  # a short warm-up, then full-length repeats
    timing = time_fn(
        lambda: generate(model, idx, max_new_tokens, greedy=True, use_cache=use_cache),
        warmup=0,
        repeats=repeats,
        device=device,
    )
    return {"seconds": timing.median, "tokens_per_second": max_new_tokens / timing.median, "times": timing.times}

"""Timing, peak-memory measurement, log-log slopes and the attention benchmarks (introduced in 09_profiling).

Timing: run the function a few times to warm up (allocator, thread pool, kernel selection), then time several
repeats with time.perf_counter and report the median, which one slow outlier cannot move.
Memory on CPU: torch.profiler with profile_memory=True records one event per allocation and per free made by
PyTorch's CPU allocator, each with its size and time stamp. Sorting them by time and summing the sizes gives the
bytes held at every moment; the largest value is the peak the call added on top of what existed before it.
Memory on CUDA: the caching allocator's own counters, torch.cuda.max_memory_allocated, after a reset.
Apple's MPS backend has no peak counter, so benchmark_attention measures memory there on CPU copies of the inputs.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import causal_mask, scaled_dot_product_attention
from helpers.attention_variants import linear_attention
from helpers.utils import autocast

ATTENTION_METHODS = ("naive", "sdpa", "linear")  # from-scratch softmax, PyTorch's fused kernel, linear attention


@dataclass
class Timing:
    """Seconds of each timed repeat (after warm-up) and their median."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the repeats, in seconds."""
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: how noisy the measurement was."""
        return (max(self.times) - min(self.times)) / self.median


def _synchronize(device) -> None:
    """Wait for queued CUDA or MPS work, so a timer measures it; nothing to do on CPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def time_fn(fn, warmup: int = 2, repeats: int = 5, device="cpu") -> Timing:
    """Call fn() warmup times untimed, then time `repeats` calls; return a Timing (use .median)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(times)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for a moment: the profiler's C++ side logs a line at start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _profile(fn, profile_memory: bool):
    """Run fn() once under torch.profiler (CPU activity) and return the profiler object."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=profile_memory) as prof:
        fn()
    return prof


def allocation_events(prof) -> list[tuple[int, int]]:
    """(time_ns, bytes) of every allocation (+) and free (-) a memory profile recorded, in time order."""
    from torch._C._profiler import _EventType

    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    return sorted(events)


def peak_from_events(events: list[tuple[int, int]]) -> int:
    """Largest running total of allocation sizes (0 if nothing was allocated)."""
    return max(itertools.accumulate(size for _, size in events), default=0) if events else 0


def peak_memory_bytes(fn, device="cpu") -> int:
    """Peak bytes that fn() allocates on top of what was allocated before the call (CPU: profiler; CUDA: allocator)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    if device.type != "cpu":
        raise ValueError(f"peak_memory_bytes measures cpu or cuda, got {device}")
    return max(0, peak_from_events(allocation_events(_profile(fn, profile_memory=True))))


def op_names(fn) -> list[str]:
    """Names of the aten operators fn() runs, in order of first appearance (to see which kernel was chosen)."""
    names = []
    for event in _profile(fn, profile_memory=False).events():
        if event.name.startswith("aten::") and event.name not in names:
            names.append(event.name)
    return names


def fit_loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit of log y = slope * log x + intercept; return (slope, intercept). y ~ x^slope."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 2 or (x <= 0).any() or (y <= 0).any():
        raise ValueError("fit_loglog_slope needs at least two pairs of positive numbers of equal length")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def attention_fn(method: str, causal: bool = True):
    """Return f(q, k, v) -> output for one attention method: "naive", "sdpa" or "linear"."""
    if method == "naive":
        def naive(q, k, v):
            mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device) if causal else None
            return scaled_dot_product_attention(q, k, v, mask=mask)[0]
        return naive
    if method == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if method == "linear":
        return lambda q, k, v: linear_attention(q, k, v, causal=causal)
    raise ValueError(f"unknown attention method {method!r}; choose from {ATTENTION_METHODS}")


def make_qkv(batch: int, n_heads: int, seq_len: int, d_head: int, requires_grad: bool = False, device="cpu",
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def benchmark_attention(method: str, batch: int, n_heads: int, seq_len: int, d_head: int, warmup: int = 1,
                        repeats: int = 3, device="cpu", causal: bool = True, seed: int = 0) -> dict:
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


def training_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                     amp: bool = False):
    """A closure running one training step of a language model whose forward(x, y) returns (logits, loss).

    amp=True runs the forward pass under autocast in the device's reduced precision (helpers.utils.autocast:
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
    def for_mode(cls, mode: str) -> "ProfileSettings":
        """Full settings, or a shorter range with fewer repeats for quick runs."""
        if mode == "full":
            return cls()
        return cls(seq_lens=(64, 128, 256, 512), head_counts=(1, 2, 4, 8), head_seq_len=256, repeats=3,
                   gpt_seq_lens=(64, 256), gpt_tokens_per_step=512, rnn_seq_lens=(32, 64, 128), step_repeats=2)

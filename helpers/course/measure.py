"""One timer (warm-up, then the median), peak memory, log-log slopes, one thread (introduced in 03, 09_profiling).

Timing: run the function a few times to warm up (allocator, thread pool, kernel selection), then time several
repeats with time.perf_counter and report the median, which one slow outlier cannot move. On a GPU the clock
stops only after torch.cuda.synchronize(), because kernels run asynchronously.
Memory on CPU: torch.profiler with profile_memory=True records one event per allocation and per free made by
PyTorch's CPU allocator, each with its size and time stamp. Sorting them by time and summing the sizes gives the
bytes held at every moment; the largest value is the peak the call added on top of what existed before it.
Memory on CUDA: the caching allocator's own counters, torch.cuda.max_memory_allocated, after a reset.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch


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


def synchronize(device) -> None:
    """Wait for queued CUDA or MPS work, so a timer measures it; nothing to do on CPU."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def time_fn(fn, warmup: int = 2, repeats: int = 5, device="cpu") -> Timing:
    """Call fn() warmup times untimed, then time `repeats` calls; return a Timing (use .median).

    On CUDA and MPS the clock stops only when the device has finished the queued work.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
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


def allocation_events(prof) -> list[tuple[int, int, int]]:
    """(time_ns, bytes, address) of every allocation (+) and free (-) a memory profile recorded, in time order."""
    from torch._C._profiler import _EventType

    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr))
        stack.extend(node.children)
    return sorted(events)


def peak_from_events(events: list[tuple[int, int, int]]) -> int:
    """Largest running total of the blocks allocated during the profile (0 if nothing was allocated).

    A free of a block allocated before the profile started (the previous call's gradients, say) is left out: counting
    it would start the total below zero and make the peak depend on what the previous call left behind.
    """
    total, peak, live = 0, 0, {}
    for _, size, address in events:
        if size > 0:
            live[address] = size
            total += size
        elif address in live:
            total -= live.pop(address)
        peak = max(peak, total)
    return peak


PROFILE_TRIES = 3  # CPU memory profiles of one call, at most, until one records allocations


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
    # The profiler now and then records no allocation at all for a call that allocates (seen on CPU runs of notebook
    # 09): an empty record is measured again, up to PROFILE_TRIES times; a call that really allocates nothing gives 0.
    for _ in range(PROFILE_TRIES):
        events = allocation_events(_profile(fn, profile_memory=True))
        if events:
            return peak_from_events(events)
    return 0


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


@contextlib.contextmanager
def one_thread():
    """Run the body with torch on a single CPU thread, then restore the previous thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

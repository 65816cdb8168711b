"""Wall-clock timing with warm-up and a median over repeats (introduced in 03_multi_head_attention)."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Call fn() `warmup` times untimed, then return the median of `repeats` timed calls, in seconds."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def one_thread():
    """Run the body with torch on a single CPU thread, then restore the previous thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

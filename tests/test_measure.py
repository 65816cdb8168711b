"""helpers.course.measure: one timer, peak memory, a log-log slope, one thread."""

import math

import pytest
import torch

from helpers.course.benchmarks import make_qkv
from helpers.course.measure import (
    Timing,
    fit_loglog_slope,
    one_thread,
    op_names,
    peak_from_events,
    peak_memory_bytes,
    time_fn,
)

D64 = dict(dtype=torch.float64)


def test_time_fn_reports_the_median_of_the_repeats():
    calls = []
    timing = time_fn(lambda: calls.append(1), warmup=3, repeats=5)
    assert len(calls) == 8 and len(timing.times) == 5
    assert Timing([3.0, 1.0, 2.0, 100.0, 2.5]).median == 2.5
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)


def test_time_fn_measures_real_work():
    import time

    timing = time_fn(lambda: time.sleep(0.02), warmup=0, repeats=3)
    assert timing.median >= 0.019  # a lower bound only: a busy machine may take longer, never shorter


def test_time_fn_times_exactly_the_calls(monkeypatch):
    import helpers.course.measure as measure

    clock = {"now": 100.0}
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])

    seconds = iter([5.0, 0.25, 0.5, 0.75])  # the warm-up call takes 5 s and must not be counted

    def work():
        clock["now"] += next(seconds)

    timing = time_fn(work, warmup=1, repeats=3)
    assert timing.times == [0.25, 0.5, 0.75] and timing.median == 0.5


def test_peak_memory_counts_live_bytes_not_total_allocations():
    assert peak_memory_bytes(lambda: torch.ones(1024, 1024)) == 4 * 2**20

    def two_then_one():
        a = torch.ones(1024, 1024)
        b = torch.ones(1024, 1024)
        del a
        c = torch.ones(512, 1024)  # fits in the space a left: the peak stays at a + b
        return b, c

    assert peak_memory_bytes(two_then_one) == 8 * 2**20
    assert peak_from_events([(0, 10, 1), (1, 30, 2), (2, -10, 1), (3, 5, 3), (4, -35, 2)]) == 40
    assert peak_from_events([]) == 0
    # a block allocated before the profile (address 9) is freed first: the call's own peak is still 30 + 5
    assert peak_from_events([(0, -50, 9), (1, 30, 2), (2, 5, 3), (3, -30, 2)]) == 35


def test_peak_memory_does_not_depend_on_what_the_previous_call_left_behind():
    """A training step frees the previous step's gradients before it makes its own: the peak must not dip below zero."""
    weight = torch.randn(512, 256, requires_grad=True)  # 0.5 MiB of weights, 0.5 MiB of gradient

    def step():
        weight.grad = None  # frees the gradient the previous call left (allocated before the profile)
        (weight * 2).sum().backward()  # a 0.5 MiB product (freed before backward), then the 0.5 MiB gradient

    step()  # the first gradient now exists
    first = peak_memory_bytes(step)
    again = peak_memory_bytes(step)
    weight.grad = None
    fresh = peak_memory_bytes(step)  # nothing to free first
    assert first == again == fresh >= 2**19  # 0.5 MiB at a time, whatever came before (it measured 20 bytes)


def test_a_memory_profile_that_recorded_nothing_is_taken_again(monkeypatch):
    import helpers.course.measure as measure

    records = iter([[], [], [(0, 100, 1), (1, 50, 2), (2, -100, 1), (3, -50, 2)]])  # two empty profiles, a real one
    monkeypatch.setattr(measure, "_profile", lambda fn, profile_memory: None)
    monkeypatch.setattr(measure, "allocation_events", lambda prof: next(records))
    assert measure.peak_memory_bytes(lambda: None) == 150
    records = iter([[]] * measure.PROFILE_TRIES)  # nothing recorded on every try: nothing was allocated
    assert measure.peak_memory_bytes(lambda: None) == 0


def test_op_names_show_the_kernel_that_ran():
    q, k, v = make_qkv(1, 1, 8, 4)
    names = op_names(lambda: torch.softmax(q @ k.transpose(-2, -1), dim=-1))
    assert "aten::softmax" in names and ("aten::matmul" in names or "aten::bmm" in names)


@pytest.mark.parametrize("slope", [1.0, 2.0, 0.5])
def test_fit_loglog_slope_recovers_a_power_law(slope):
    x = [64, 128, 256, 512, 1024]
    y = [3.0 * v**slope for v in x]
    got, intercept = fit_loglog_slope(x, y)
    assert got == pytest.approx(slope, abs=1e-9) and intercept == pytest.approx(math.log(3.0), abs=1e-9)
    noisy = [v * (1.05 if i % 2 else 0.95) for i, v in enumerate(y)]
    assert fit_loglog_slope(x, noisy)[0] == pytest.approx(slope, abs=0.1)
    with pytest.raises(ValueError):
        fit_loglog_slope([1, 2], [1, 0])


def test_time_fn_warms_up_then_takes_the_median():
    calls = []
    seconds = time_fn(lambda: calls.append(1), repeats=5, warmup=3).median
    assert len(calls) == 8 and 0.0 <= seconds < 0.1
    with pytest.raises(ValueError, match="repeats"):
        time_fn(lambda: None, repeats=0)


def test_one_thread_restores_the_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before

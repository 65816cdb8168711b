"""Profiling helpers: linear attention against its explicit form, timing, peak memory, slope fitting, benchmarks."""
import math

import pytest
import torch

from helpers.attention import MultiHeadAttention
from helpers.attention_variants import (LinearMultiHeadAttention, linear_attention, linear_attention_quadratic,
                                        use_linear_attention)
from helpers.layers import EncoderBlock, TransformerConfig
from helpers.profiling import (ProfileSettings, Timing, attention_fn, benchmark_attention, count_params,
                               fit_loglog_slope, GRULanguageModel, make_qkv, op_names, peak_from_events,
                               peak_memory_bytes, time_fn, training_step_fn)

D64 = dict(dtype=torch.float64)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t", [1, 5, 64, 130])
def test_linear_attention_equals_its_quadratic_form(causal, t):
    q, k, v = (torch.randn(2, 3, t, 8, **D64) for _ in range(3))
    v = torch.randn(2, 3, t, 5, **D64)  # D_v may differ from D
    fast = linear_attention(q, k, v, causal=causal, chunk_size=16)
    torch.testing.assert_close(fast, linear_attention_quadratic(q, k, v, causal=causal), rtol=1e-9, atol=1e-9)
    assert fast.shape == (2, 3, t, 5)


def test_causal_linear_attention_ignores_the_future():
    q, k, v = (torch.randn(1, 2, 40, 8, **D64) for _ in range(3))
    out = linear_attention(q, k, v, causal=True, chunk_size=8)
    k2, v2 = k.clone(), v.clone()
    k2[..., 25:, :] += 3.0
    v2[..., 25:, :] -= 7.0
    out2 = linear_attention(q, k2, v2, causal=True, chunk_size=8)
    torch.testing.assert_close(out[..., :25, :], out2[..., :25, :])
    assert not torch.allclose(out[..., 25:, :], out2[..., 25:, :])


def test_linear_attention_gradients_flow_and_rows_average_values():
    q, k, v = (torch.randn(1, 1, 12, 4, **D64, requires_grad=True) for _ in range(3))
    linear_attention(q, k, v, causal=True, chunk_size=5).sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
    ones = torch.ones(1, 1, 12, 4, **D64)  # weights are positive and normalised: a constant value comes back
    torch.testing.assert_close(linear_attention(q.detach(), k.detach(), ones, causal=True), ones, atol=1e-5, rtol=0)


def test_linear_multi_head_attention_swaps_in_with_the_same_weights():
    block = EncoderBlock(TransformerConfig(d_model=16, n_heads=4, dropout=0.0)).double()
    x = torch.randn(2, 9, 16, **D64)
    before = block(x, causal=True)
    use_linear_attention(block)
    assert isinstance(block.self_attn, LinearMultiHeadAttention)
    after = block(x, causal=True)
    assert after.shape == before.shape and not torch.allclose(after, before)
    mha = block.self_attn
    q, k, v = (mha.split_heads(p(x)) for p in (mha.q_proj, mha.k_proj, mha.v_proj))
    expected = mha.out_proj(mha.merge_heads(linear_attention_quadratic(q, k, v, causal=True)))
    torch.testing.assert_close(mha(x, causal=True)[0], expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(NotImplementedError):
        mha(x, mask=torch.ones(9, 9, dtype=torch.bool))


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
    import helpers.profiling as profiling
    clock = {"now": 100.0}
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: clock["now"])

    def work(seconds=iter([5.0, 0.25, 0.5, 0.75])):  # the warm-up call takes 5 s and must not be counted
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
    assert peak_from_events([(0, 10), (1, 30), (2, -10), (3, 5), (4, -35)]) == 40
    assert peak_from_events([]) == 0


def test_naive_attention_needs_far_more_memory_than_sdpa_at_long_sequences():
    q, k, v = make_qkv(1, 2, 512, 16)
    naive = peak_memory_bytes(lambda: attention_fn("naive")(q, k, v))
    fused = peak_memory_bytes(lambda: attention_fn("sdpa")(q, k, v))
    scores_bytes = 2 * 512 * 512 * 4  # one float32 (H, T, T) matrix
    assert naive >= scores_bytes > 2 * fused


def test_attention_methods_agree_where_they_should():
    q, k, v = make_qkv(2, 2, 33, 8)
    torch.testing.assert_close(attention_fn("naive")(q, k, v), attention_fn("sdpa")(q, k, v), atol=1e-5, rtol=1e-4)
    assert attention_fn("linear")(q, k, v).shape == q.shape
    with pytest.raises(ValueError):
        attention_fn("flash")


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


def test_benchmark_attention_returns_positive_figures():
    row = benchmark_attention("naive", 1, 2, 32, 8, warmup=0, repeats=1)
    assert row["T"] == 32 and row["time_fwd_ms"] > 0 and row["time_fwd_bwd_ms"] > 0
    assert row["peak_fwd_MiB"] > 0 and row["peak_fwd_bwd_MiB"] >= row["peak_fwd_MiB"]


def test_gru_language_model_trains_and_counts_parameters():
    torch.manual_seed(0)
    model = GRULanguageModel(vocab_size=7, d_model=16)
    assert count_params(model) == 7 * 16 + 3 * (2 * 16 * 16 + 2 * 16) + 16 * 7 + 7
    x = torch.randint(7, (4, 10))
    y = x.roll(1, dims=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(x, y)[1].item()
    step = training_step_fn(model, opt, x, y)
    for _ in range(30):
        step()
    assert model(x, y)[1].item() < 0.7 * first


def test_profile_settings_quick_is_smaller():
    full, quick = ProfileSettings.for_mode("full"), ProfileSettings.for_mode("quick")
    assert max(quick.seq_lens) < max(full.seq_lens) and 2048 in full.seq_lens and 1024 in full.seq_lens
    assert all(full.d_model % h == 0 for h in full.head_counts)


def test_multi_head_attention_is_still_the_parent_class():
    assert issubclass(LinearMultiHeadAttention, MultiHeadAttention)

"""Profiling helpers: linear attention against its explicit form, timing, peak memory, slope fitting, benchmarks."""

import pytest
import torch

from helpers.course.benchmarks import (
    GRULanguageModel,
    ProfileSettings,
    attention_fn,
    benchmark_attention,
    count_params,
    make_qkv,
    training_step_fn,
)
from helpers.course.measure import peak_memory_bytes

D64 = dict(dtype=torch.float64)


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

"""Notebook 09's bookkeeping: CSV tables, log-log slopes, figures, summaries, recorded metrics and the report."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from helpers.course import profiling_report as report
from helpers.course import utils
from helpers.course.benchmarks import ATTENTION_METHODS, GRULanguageModel, ProfileSettings, count_params
from helpers.course.metrics import MetricRecorder
from helpers.course.speedups import rounded_p
from helpers.models import GPTConfig

POWERS = {"naive": 2.0, "sdpa": 1.0, "linear": 0.5}  # y = T ** power, so each method's log-log slope is known


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh artifacts folder for this test (COURSE_ARTIFACTS_DIR), so nothing lands in the real one."""
    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def recorded(artifacts_root, mode="quick"):
    return json.loads((artifacts_root / "quick" / "metrics" / "09_profiling.json").read_text())


def sweep(lengths=(64, 128, 256, 512)) -> pd.DataFrame:
    """A fake sequence-length sweep in the notebook's row order (T outer, method inner) with exact power laws."""
    rows = []
    for t in lengths:
        for method in ATTENTION_METHODS:
            p = POWERS[method]
            rows.append(
                {
                    "method": method,
                    "T": t,
                    "time_fwd_ms": 0.5 * t**p,
                    "time_fwd_bwd_ms": 2.0 * t**p,
                    "peak_fwd_MiB": 0.1 * t**p,
                    "peak_fwd_bwd_MiB": 0.3 * t ** (p + 0.25),
                }
            )
    return pd.DataFrame(rows)


def test_save_table_writes_the_rows_as_csv_under_profiling(artifacts):
    rows = [{"T": 64, "method": "naive", "time_fwd_ms": 1.5}, {"T": 128, "method": "naive", "time_fwd_ms": 6.0}]
    table = report.save_table(rows, "toy_sweep", "quick")
    path = artifacts / "quick" / "profiling" / "toy_sweep.csv"
    assert list(table.columns) == ["T", "method", "time_fwd_ms"] and len(table) == 2
    pd.testing.assert_frame_equal(pd.read_csv(path), table)


def test_loglog_slopes_recover_the_power_of_each_method_in_the_order_asked():
    table = sweep()
    slopes = report.loglog_slopes(table, "T", "time_fwd_ms", groups=ATTENTION_METHODS)
    assert list(slopes) == list(ATTENTION_METHODS)
    assert slopes == pytest.approx(POWERS)
    assert list(report.loglog_slopes(table, "T", "time_fwd_ms")) == sorted(ATTENTION_METHODS)  # default: sorted


def test_loglog_slopes_fit_only_the_given_lengths():
    table = sweep()
    table.loc[table["T"] == 64, "time_fwd_ms"] = 1e6  # a fixed cost that would bend the fit at the shortest length
    assert report.loglog_slopes(table, "T", "time_fwd_ms")["naive"] < 0
    fitted = report.loglog_slopes(table, "T", "time_fwd_ms", fit_values=[128, 256, 512])
    assert fitted == pytest.approx({"linear": 0.5, "naive": 2.0, "sdpa": 1.0})


def test_sweep_slopes_and_slope_table():
    slopes = report.sweep_slopes(sweep(), "T", ("time_fwd_ms", "peak_fwd_bwd_MiB"))
    assert list(slopes) == [(m, c) for c in ("time_fwd_ms", "peak_fwd_bwd_MiB") for m in ATTENTION_METHODS]
    assert slopes[("naive", "peak_fwd_bwd_MiB")] == pytest.approx(2.25)
    table = report.slope_table(slopes)
    assert table.index.name == "fitted slope" and list(table.index) == list(ATTENTION_METHODS)
    assert list(table.columns) == ["time_fwd_ms", "peak_fwd_bwd_MiB"]
    assert table.loc["linear", "peak_fwd_bwd_MiB"] == 0.75 and table.loc["sdpa", "time_fwd_ms"] == 1.0


def test_blockwise_table_saves_the_csv_and_fits_forward_memory(artifacts):
    rows = [
        {"T": t, "method": m, "peak_fwd_MiB": c * t**p, "peak_fwd_bwd_MiB": 1.0, "time_fwd_ms": 1.0}
        for t in (128, 256)
        for m, c, p in (("naive", 1e-3, 2), ("blockwise", 0.1, 1), ("sdpa", 0.05, 1))
    ]
    table, slopes = report.blockwise_table(rows, "quick")
    assert (artifacts / "quick" / "profiling" / "blockwise_attention.csv").exists() and len(table) == 6
    assert list(slopes) == ["blockwise", "naive", "sdpa"]  # the order the notebook prints
    assert slopes == pytest.approx({"blockwise": 1.0, "naive": 2.0, "sdpa": 1.0})


def test_sweep_row_reads_the_sweep_and_measures_only_what_is_missing(monkeypatch):
    settings = ProfileSettings.for_mode("quick")
    calls = []

    def fake_benchmark(method, batch, n_heads, seq_len, d_head, warmup, repeats, device):
        calls.append((method, batch, n_heads, seq_len, d_head, warmup, repeats, device))
        return {"method": method, "T": seq_len, "time_fwd_ms": 9.0}

    monkeypatch.setattr(report, "benchmark_attention", fake_benchmark)
    table = sweep()
    assert report.sweep_row(table, "sdpa", 256, settings, "cpu")["time_fwd_ms"] == pytest.approx(0.5 * 256)
    assert calls == []
    row = report.sweep_row(table, "naive", 1024, settings, "cpu")
    assert row["T"] == 1024 and row["time_fwd_ms"] == 9.0
    assert calls == [("naive", 1, 4, 1024, 64, settings.warmup, settings.repeats, "cpu")]


def test_record_sdpa_comparison_writes_the_ratios_and_every_methods_slopes(artifacts):
    slopes = report.sweep_slopes(sweep(), "T", ("time_fwd_bwd_ms", "peak_fwd_bwd_MiB"))
    report.record_sdpa_comparison(MetricRecorder("09_profiling", "quick"), 3.5, 2.0, 12.0, 20.0, slopes, "CPU")
    got = recorded(artifacts)
    assert set(got) == {
        "profiling.sdpa_speedup_T1024",
        "profiling.sdpa_speedup_fwd_T1024",
        "profiling.sdpa_memory_ratio_T2048",
        "profiling.sdpa_memory_ratio_fwd_T2048",
        *(f"profiling.slope_time_fwd_bwd_{m}" for m in ATTENTION_METHODS),
        *(f"profiling.slope_memory_{m}" for m in ATTENTION_METHODS),
    }
    assert got["profiling.sdpa_memory_ratio_T2048"]["value"] == 12.0
    assert got["profiling.sdpa_speedup_T1024"]["unit"] == "x"
    assert got["profiling.sdpa_speedup_T1024"]["description"] == (
        "naive ÷ F.scaled_dot_product_attention time, causal forward + backward, T=1024, CPU"
    )
    assert got["profiling.slope_memory_naive"]["value"] == pytest.approx(2.25)
    assert got["profiling.slope_memory_naive"]["unit"] == ""


def test_throughput_base_config_quick_model_defaults_and_checkpoint(tmp_path, monkeypatch):
    cfg, source = report.throughput_base_config(65, "quick")
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, source) == (64, 4, 2, "a small quick-mode model")
    cfg, source = report.throughput_base_config(65, "full", checkpoint=tmp_path / "missing.pt")
    assert cfg == GPTConfig(vocab_size=65) and source == "GPTConfig defaults"
    saved = GPTConfig(vocab_size=65, block_size=128, d_model=32, n_heads=2, n_layers=1)
    monkeypatch.setattr(report, "load_checkpoint", lambda path, kind: {"config": vars(saved)})
    (tmp_path / "char_gpt.pt").write_bytes(b"")
    cfg, source = report.throughput_base_config(65, "full", checkpoint=tmp_path / "char_gpt.pt")
    assert cfg == saved and source == "notebook 06's checkpoint (char_gpt.pt, trained with block_size=128)"


def test_throughput_table_saves_and_records_tokens_per_second(artifacts):
    rows = [
        {"T": t, "B": 512 // t, "path": p, "params": 1000, "step_ms": 2.0, "tokens_per_s": 256_000.0 + t}
        for t in (64, 256)
        for p in ATTENTION_METHODS
    ]
    table = report.throughput_table(rows, MetricRecorder("09_profiling", "quick"), torch.device("cpu"), "quick")
    assert (artifacts / "quick" / "profiling" / "gpt_throughput.csv").exists() and len(table) == 6
    got = recorded(artifacts)
    assert set(got) == {f"profiling.gpt_tokens_per_s_{p}_T{t}" for t in (64, 256) for p in ATTENTION_METHODS}
    metric = got["profiling.gpt_tokens_per_s_sdpa_T256"]
    assert metric["value"] == 256_256.0 and metric["unit"] == "tokens/s"
    assert metric["description"] == "char-GPT training throughput, sdpa attention, T=256, B=2 (CPU, bf16 autocast)"


def test_closest_gru_width_matches_the_parameter_count():
    target = count_params(GRULanguageModel(65, 40)) + 10
    width, params = report.closest_gru_width(65, target, widths=range(8, 65, 8))
    assert width == 40 and params == count_params(GRULanguageModel(65, 40))


def test_gru_vs_transformer_table_counts_sequential_steps(artifacts):
    step_seconds = {(32, "GRU"): 0.004, (32, "transformer"): 0.002, (64, "GRU"): 0.008, (64, "transformer"): 0.003}
    table = report.gru_vs_transformer_table(step_seconds, batch=8, n_layers=2, mode="quick")
    assert (artifacts / "quick" / "profiling" / "gru_vs_transformer.csv").exists()
    assert list(table.columns) == ["T", "model", "step_ms", "ms_per_1k_tokens", "sequential_steps"]
    assert table["step_ms"].tolist() == pytest.approx([4.0, 2.0, 8.0, 3.0])
    assert table["ms_per_1k_tokens"].tolist() == pytest.approx([1e6 * 0.004 / 256, 1e6 * 0.002 / 256, 15.625, 5.859375])
    assert table["sequential_steps"].tolist() == [32, 2, 64, 2]


def test_plots_are_saved_under_their_names(artifacts):
    table = sweep()
    slopes = report.sweep_slopes(table, "T", ("time_fwd_ms", "peak_fwd_bwd_MiB"))
    labels = {"time_fwd_ms": "forward time (ms)", "peak_fwd_bwd_MiB": "peak memory, forward + backward (MiB)"}
    fig = report.plot_sweep(
        table, "T", slopes, labels, "sequence length T", "a sweep", "09_t_sweep", "quick", [256, 512]
    )
    assert [ax.get_title() for ax in fig.axes] == ["Forward time", "Peak memory, forward + backward"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "naive (slope 2.00)",
        "sdpa (slope 1.00)",
        "linear (slope 0.50)",
    ]
    rnn = pd.DataFrame([{"T": t, "model": m, "step_ms": float(t)} for t in (32, 64) for m in ("GRU", "transformer")])
    report.plot_gru_vs_transformer(rnn, {"GRU": 1.0, "transformer": 1.0}, "09_t_gru", "quick", title="GRU")
    throughput = pd.DataFrame([{"T": 64, "path": p, "tokens_per_s": 1.0} for p in ATTENTION_METHODS])
    report.plot_throughput(throughput, GPTConfig(), "09_t_throughput", "quick")
    plt.close("all")
    for name in ("09_t_sweep", "09_t_gru", "09_t_throughput"):
        assert (artifacts / "quick" / "figures" / f"{name}.png").stat().st_size > 0


def test_speed_up_records_and_summaries(artifacts):
    recorder = MetricRecorder("09_profiling", "quick")
    report.record_bf16(recorder, 1.25, 0.003, 64, "CPU")
    report.record_dropout(recorder, {"torch": 2.0, "fast": 0.5}, 0.1, (8, 64, 64), "CPU")
    report.record_denormal_slowdown(recorder, 12.5, True)
    got = recorded(artifacts)
    assert {k: (m["value"], m["unit"]) for k, m in got.items()} == {
        "profiling.speedup_bf16_step": (1.25, "x"),
        "profiling.bf16_loss_diff": (0.003, "nats/char"),
        "profiling.dropout_torch_ms": (2.0, "ms"),
        "profiling.dropout_fast_ms": (0.5, "ms"),
        "profiling.dropout_fast_dropped_share": (0.1, ""),
        "profiling.denormal_slowdown": (12.5, "x"),
    }
    assert got["profiling.dropout_torch_ms"]["description"] == "nn.Dropout(0.1) forward + backward on (8, 64, 64) (CPU)"
    text = report.dropout_summary({"torch": 2.0, "fast": 0.5}, (8, 64, 64), torch.bfloat16, 5, 7.5, 0.09991)
    assert text.splitlines() == [
        "one dropout layer on (8, 64, 64) (torch.bfloat16), forward + backward: "
        "nn.Dropout 2.00 ms, FastDropout 0.50 ms",
        "nn.Dropout - FastDropout over 5 layers: 7.50 ms per training step",
        f"share of a million elements dropped by FastDropout(0.1): 0.0999 (p rounded to {rounded_p(0.1):.7f})",
    ]
    sqrt_ms = {"usual gradients": 1.0, "tiny gradients": 20.0, "tiny, flushed": 1.25}
    assert report.denormal_summary(sqrt_ms, 16.0, True).splitlines() == [
        "sqrt(g * g) on a million float32 values: "
        "usual gradients 1.00 ms, tiny gradients 20.00 ms, tiny, flushed 1.25 ms",
        "flushing supported: tiny gradients, off / on = 16.00",
    ]
    assert "cannot flush denormals" in report.denormal_summary(sqrt_ms, 1.0, False)


def test_profiling_summary_quotes_this_runs_numbers():
    settings = ProfileSettings.for_mode("quick")
    table = sweep(settings.seq_lens)
    slopes = report.sweep_slopes(table, "T", ("time_fwd_bwd_ms", "peak_fwd_bwd_MiB"))
    throughput = pd.DataFrame(
        [
            {"T": t, "path": p, "tokens_per_s": 1000.0 * (i + 1)}
            for t in settings.gpt_seq_lens
            for i, p in enumerate(ATTENTION_METHODS)
        ]
    )
    text = report.profiling_summary(
        settings,
        table,
        slopes,
        {("naive", "peak_fwd_bwd_MiB"): 0.98, ("sdpa", "peak_fwd_bwd_MiB"): 0.02},
        throughput,
        GPTConfig(d_model=64, n_layers=2),
        memory_ratio=7.25,
        speedup_fwd_bwd=3.5,
        speedup_fwd=2.25,
        gru_params=120_000,
        gpt_params=130_000,
        rnn_slopes={"GRU": 1.02, "transformer": 0.61},
        gru_over_transformer=4.5,
        gpt_layers=2,
    )
    assert "peak memory grows with slope 2.25 on the log-log plot" in text
    assert "At T=2048 the from-scratch path uses 7.2x the fused kernel's peak memory" in text
    assert f"At T=512 the from-scratch path needs {0.3 * 512**2.25:.0f} MiB" in text
    assert "the from-scratch path's peak memory grows with slope 0.98 against H" in text
    assert "T=64: naive 1,000, sdpa 2,000, linear 3,000 tokens/s" in text
    assert "The fastest path is linear at T=64, linear at T=256." in text
    assert "(120,000 and 130,000 parameters, batch 8)" in text
    assert "The GRU needs 128 sequential steps per layer at that length, the transformer 2" in text

"""Tables, figures and recorded metrics of notebook 09 (introduced in 09_profiling).

The notebook keeps what it teaches (the timings, the memory peaks, the loops that measure them, the key ratios);
this module holds the bookkeeping around it: the CSV tables it saves, the log-log slopes and the figures drawn from
them, the metrics it records, the summaries it prints and the report written from this run's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from helpers.course.benchmarks import (
    ATTENTION_METHODS,
    GRULanguageModel,
    ProfileSettings,
    benchmark_attention,
    count_params,
)
from helpers.course.checkpoints import load_checkpoint
from helpers.course.measure import fit_loglog_slope
from helpers.course.metrics import MetricRecorder
from helpers.course.plotting import save_figure
from helpers.course.speedups import rounded_p
from helpers.course.utils import artifacts_dir
from helpers.models import GPTConfig
from helpers.training import autocast_dtype

# ---------------------------------------------------------------- tables and log-log slopes


def profiling_dir(mode: str) -> Path:
    """Return artifacts[/quick]/profiling/, created if missing."""
    path = artifacts_dir(mode) / "profiling"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_table(rows: list[dict], name: str, mode: str) -> pd.DataFrame:
    """Build a table from rows, save it as artifacts[/quick]/profiling/<name>.csv and return it."""
    table = pd.DataFrame(rows)
    table.to_csv(profiling_dir(mode) / f"{name}.csv", index=False)
    return table


def loglog_slopes(
    table: pd.DataFrame,
    x: str,
    y: str,
    by: str = "method",
    groups: Sequence[str] | None = None,
    fit_values: Sequence | None = None,
) -> dict[str, float]:
    """Return the log-log slope of column y against column x for each group of column `by`.

    groups gives the groups and their order (default: every group, sorted); with fit_values, only the rows whose x is
    one of them are fitted.
    """
    if fit_values is not None:
        table = table[table[x].isin(list(fit_values))]
    groups = sorted(table[by].unique()) if groups is None else groups
    slopes = {}
    for group in groups:
        rows = table[table[by] == group]
        slopes[group] = fit_loglog_slope(rows[x], rows[y])[0]
    return slopes


def sweep_slopes(
    table: pd.DataFrame,
    x: str,
    columns: Sequence[str],
    groups: Sequence[str] = ATTENTION_METHODS,
    fit_values: Sequence | None = None,
) -> dict[tuple[str, str], float]:
    """Return the log-log slope of every column against x for every method, keyed (method, column)."""
    return {
        (group, column): slope
        for column in columns
        for group, slope in loglog_slopes(table, x, column, groups=groups, fit_values=fit_values).items()
    }


def slope_table(slopes: Mapping[tuple[str, str], float]) -> pd.DataFrame:
    """Return fitted slopes ((method, quantity) -> slope) as a table: a row per method, a column per quantity."""
    methods = list(dict.fromkeys(method for method, _ in slopes))
    columns = list(dict.fromkeys(column for _, column in slopes))
    return pd.DataFrame({c: {m: round(slopes[(m, c)], 2) for m in methods} for c in columns}).rename_axis(
        "fitted slope"
    )


def _draw_loglog(
    ax: plt.Axes,
    table: pd.DataFrame,
    x: str,
    y: str,
    slopes: Mapping[str, float],
    by: str,
    fit_values: Sequence | None = None,
) -> None:
    """Draw y against x on log-log axes (x in powers of two), one line per group labelled with its slope.

    With fit_values the whole sweep is drawn dashed with hollow markers and the fitted points solid on top.
    """
    for group, slope in slopes.items():
        rows = table[table[by] == group]
        label = f"{group} (slope {slope:.2f})"
        if fit_values is None:
            ax.loglog(rows[x], rows[y], "o-", label=label)
            continue
        fit = rows[rows[x].isin(list(fit_values))]
        (line,) = ax.loglog(rows[x], rows[y], "o--", mfc="none", alpha=0.6)
        ax.loglog(fit[x], fit[y], "o-", color=line.get_color(), label=label)
    ax.set_xscale("log", base=2)


def plot_sweep(
    table: pd.DataFrame,
    x: str,
    slopes: Mapping[tuple[str, str], float],
    labels: Mapping[str, str],
    xlabel: str,
    title: str,
    name: str,
    mode: str,
    fit_values: Sequence | None = None,
    figsize: tuple[float, float] = (15, 4.2),
) -> plt.Figure:
    """Draw each quantity of slopes ((method, quantity) -> slope) against x in its own panel; save as <name>.

    labels gives each quantity's axis label, e.g. "forward time (ms)"; the panel title is the label's first part.
    """
    columns = list(dict.fromkeys(column for _, column in slopes))
    fig, axes = plt.subplots(1, len(columns), figsize=figsize, squeeze=False)
    for ax, column in zip(axes[0], columns):
        column_slopes = {method: slope for (method, c), slope in slopes.items() if c == column}
        _draw_loglog(ax, table, x, column, column_slopes, "method", fit_values)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(labels[column])
        ax.set_title(labels[column].split(" (")[0].capitalize())
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, name, mode)
    return fig


# ---------------------------------------------------------------- tiles: blockwise attention


def blockwise_table(rows: list[dict], mode: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """Save the blockwise comparison as blockwise_attention.csv; return it and each method's forward-memory slope."""
    table = save_table(rows, "blockwise_attention", mode)
    return table, loglog_slopes(table, "T", "peak_fwd_MiB")


# ---------------------------------------------------------------- the sequence-length sweep


def sweep_row(
    by_len: pd.DataFrame, method: str, seq_len: int, settings: ProfileSettings, device: torch.device | str
) -> pd.Series:
    """Return the sweep's row for (method, T), measured now with the sweep's settings if the sweep did not reach T."""
    found = by_len[(by_len.method == method) & (by_len["T"] == seq_len)]
    if len(found):
        return found.iloc[0]
    d_head = settings.d_model // settings.n_heads
    return pd.Series(
        benchmark_attention(
            method, settings.batch, settings.n_heads, seq_len, d_head, settings.warmup, settings.repeats, device
        )
    )


def record_sdpa_comparison(
    recorder: MetricRecorder,
    speedup_fwd_bwd: float,
    speedup_fwd: float,
    memory_ratio: float,
    memory_ratio_fwd: float,
    slopes: Mapping[tuple[str, str], float],
    device_name: str,
) -> None:
    """Record naive ÷ fused time at T=1024 and peak memory at T=2048, and each method's fitted slopes."""
    sdpa = "naive ÷ F.scaled_dot_product_attention"
    for name, value, what in [
        ("sdpa_speedup_T1024", speedup_fwd_bwd, f"{sdpa} time, causal forward + backward, T=1024"),
        ("sdpa_speedup_fwd_T1024", speedup_fwd, f"{sdpa} time, causal forward only, T=1024"),
        ("sdpa_memory_ratio_T2048", memory_ratio, f"{sdpa} peak memory, causal forward + backward, T=2048"),
        ("sdpa_memory_ratio_fwd_T2048", memory_ratio_fwd, f"{sdpa} peak memory, causal forward only, T=2048"),
    ]:
        recorder.record(f"profiling.{name}", value, "x", f"{what}, {device_name}")
    for method in ATTENTION_METHODS:
        recorder.record(
            f"profiling.slope_time_fwd_bwd_{method}",
            slopes[(method, "time_fwd_bwd_ms")],
            "",
            f"log-log slope of {method} attention forward + backward time against T (longest lengths)",
        )
        recorder.record(
            f"profiling.slope_memory_{method}",
            slopes[(method, "peak_fwd_bwd_MiB")],
            "",
            f"log-log slope of {method} attention peak memory against T (longest lengths)",
        )


# ---------------------------------------------------------------- the char-GPT's training throughput


def throughput_base_config(vocab_size: int, mode: str, checkpoint: Path | None = None) -> tuple[GPTConfig, str]:
    """Return the char-GPT sizes to time and where they come from.

    A small model in quick mode; otherwise notebook 06's checkpoint (artifacts/checkpoints/char_gpt.pt by default)
    when it exists, else GPTConfig's defaults.
    """
    if mode == "quick":
        return GPTConfig(vocab_size=vocab_size, d_model=64, n_heads=4, n_layers=2), "a small quick-mode model"
    checkpoint = artifacts_dir("full") / "checkpoints" / "char_gpt.pt" if checkpoint is None else checkpoint
    if not checkpoint.exists():
        return GPTConfig(vocab_size=vocab_size), "GPTConfig defaults"
    base = GPTConfig(**load_checkpoint(checkpoint, kind="char-gpt")["config"])
    return base, f"notebook 06's checkpoint ({checkpoint.name}, trained with block_size={base.block_size})"


def throughput_table(rows: list[dict], recorder: MetricRecorder, device: torch.device | str, mode: str) -> pd.DataFrame:
    """Save the throughput runs as gpt_throughput.csv, record each run's tokens per second and return the table."""
    table = save_table(rows, "gpt_throughput", mode)
    device = torch.device(device)
    amp_label = "bf16 autocast" if autocast_dtype(device) is not None else "float32, no autocast"
    for _, r in table.iterrows():
        recorder.record(
            f"profiling.gpt_tokens_per_s_{r['path']}_T{r['T']}",
            r["tokens_per_s"],
            "tokens/s",
            f"char-GPT training throughput, {r['path']} attention, T={r['T']}, B={r['B']} "
            f"({device.type.upper()}, {amp_label})",
        )
    return table


def plot_throughput(throughput: pd.DataFrame, base: GPTConfig, name: str, mode: str) -> plt.Figure:
    """Draw tokens per second by context length and attention path as bars, save the figure as <name> and return it."""
    fig, ax = plt.subplots(figsize=(7, 4))
    pivot = throughput.pivot(index="T", columns="path", values="tokens_per_s")[list(ATTENTION_METHODS)]
    pivot.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("context length T (tokens per step fixed)")
    ax.set_ylabel("training throughput (tokens/s)")
    ax.set_title(f"char-GPT training throughput by attention path (d_model={base.d_model}, {base.n_layers} layers)")
    fig.tight_layout()
    save_figure(fig, name, mode)
    return fig


# ---------------------------------------------------------------- a GRU against a transformer


def closest_gru_width(vocab_size: int, n_params: int, widths: Sequence[int] = range(64, 513, 16)) -> tuple[int, int]:
    """Return the one-layer GRU width whose parameter count is closest to n_params, and that count."""
    width = min(widths, key=lambda w: abs(count_params(GRULanguageModel(vocab_size, w)) - n_params))
    return width, count_params(GRULanguageModel(vocab_size, width))


def gru_vs_transformer_table(
    step_seconds: Mapping[tuple[int, str], float], batch: int, n_layers: int, mode: str
) -> pd.DataFrame:
    """Tabulate median step times ((T, model) -> seconds), save them as gru_vs_transformer.csv and return the table.

    Beside the step time it gives the time per 1,000 tokens and the sequential steps, which are counted, not
    measured: the GRU's T steps each wait for the one before, the transformer's n_layers do not depend on T.
    """
    rows = [
        {
            "T": seq_len,
            "model": model,
            "step_ms": 1e3 * seconds,
            "ms_per_1k_tokens": 1e6 * seconds / (batch * seq_len),
            "sequential_steps": seq_len if model == "GRU" else n_layers,
        }
        for (seq_len, model), seconds in step_seconds.items()
    ]
    return save_table(rows, "gru_vs_transformer", mode)


def plot_gru_vs_transformer(
    table: pd.DataFrame, slopes: Mapping[str, float], name: str, mode: str, title: str
) -> plt.Figure:
    """Draw each model's step time against T on log-log axes, save the figure as <name> and return it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _draw_loglog(ax, table, "T", "step_ms", slopes, "model")
    ax.set(xlabel="sequence length T", ylabel="time per training step (ms, median)", title=title)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, name, mode)
    return fig


# ---------------------------------------------------------------- opt-in speed-ups


def record_bf16(recorder: MetricRecorder, speedup: float, loss_diff: float, d_model: int, device_name: str) -> None:
    """Record the float32 ÷ bf16-autocast step-time ratio and how far autocast moved the loss of one batch."""
    recorder.record(
        "profiling.speedup_bf16_step",
        speedup,
        "x",
        f"float32 ÷ bf16-autocast training-step time, char-GPT d_model={d_model} ({device_name})",
    )
    recorder.record(
        "profiling.bf16_loss_diff",
        loss_diff,
        "nats/char",
        "absolute difference of the float32 and bf16-autocast loss of one batch, same fresh weights",
    )


def record_dropout(
    recorder: MetricRecorder,
    drop_ms: Mapping[str, float],
    dropped: float,
    shape: tuple[int, ...],
    device_name: str,
    p: float = 0.1,
) -> None:
    """Record the time of nn.Dropout and FastDropout (drop_ms keys "torch", "fast") and FastDropout's dropped share."""
    for key, layer in (("torch", "nn.Dropout"), ("fast", "FastDropout")):
        recorder.record(
            f"profiling.dropout_{key}_ms",
            drop_ms[key],
            "ms",
            f"{layer}({p}) forward + backward on {shape} ({device_name})",
        )
    recorder.record(
        "profiling.dropout_fast_dropped_share", dropped, "", f"share of 1e6 elements FastDropout({p}) zeroed"
    )


def dropout_summary(
    drop_ms: Mapping[str, float],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    n_layers: int,
    saved_ms: float,
    dropped: float,
    p: float = 0.1,
) -> str:
    """Return the dropout comparison in three lines: one layer's times, the saving per step, the share dropped."""
    return "\n".join(
        [
            f"one dropout layer on {shape} ({dtype}), forward + backward: nn.Dropout {drop_ms['torch']:.2f} ms, "
            f"FastDropout {drop_ms['fast']:.2f} ms",
            f"nn.Dropout - FastDropout over {n_layers} layers: {saved_ms:.2f} ms per training step",
            f"share of a million elements dropped by FastDropout({p}): {dropped:.4f} (p rounded to {rounded_p(p):.7f})",
        ]
    )


def record_denormal_slowdown(recorder: MetricRecorder, slowdown: float, supported: bool) -> None:
    """Record how much slower sqrt(g * g) on tiny gradients runs with flushing off than on."""
    recorder.record(
        "profiling.denormal_slowdown",
        slowdown,
        "x",
        f"sqrt(g * g) on 1e6 float32 gradients of 1e-20, flushing off ÷ on (CPU; flushing supported: {supported})",
    )


def denormal_summary(sqrt_ms: Mapping[str, float], slowdown: float, supported: bool) -> str:
    """Return the square-root timings in milliseconds and what flushing denormals changed."""
    timings = "sqrt(g * g) on a million float32 values: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sqrt_ms.items())
    if supported:
        return f"{timings}\nflushing supported: tiny gradients, off / on = {slowdown:.2f}"
    return (
        f"{timings}\nflush_denormal returned False: this CPU cannot flush denormals, "
        "so both tiny-gradient timings did the same work"
    )


# ---------------------------------------------------------------- the report


def profiling_summary(
    settings: ProfileSettings,
    by_len: pd.DataFrame,
    slopes: Mapping[tuple[str, str], float],
    head_slopes: Mapping[tuple[str, str], float],
    throughput: pd.DataFrame,
    base: GPTConfig,
    *,
    memory_ratio: float,
    speedup_fwd_bwd: float,
    speedup_fwd: float,
    gru_params: int,
    gpt_params: int,
    rnn_slopes: Mapping[str, float],
    gru_over_transformer: float,
    gpt_layers: int,
) -> str:
    """Return the closing report of this run's attention, throughput and GRU measurements as Markdown."""
    largest, max_len = max(settings.seq_lens), max(settings.rnn_seq_lens)
    big = by_len[by_len["T"] == largest].set_index("method")
    tp = throughput.set_index(["T", "path"])["tokens_per_s"]
    fastest = {t: tp[t].idxmax() for t in settings.gpt_seq_lens}
    lines = [
        f"**Attention against sequence length** (causal, B={settings.batch}, H={settings.n_heads}, "
        f"d_model={settings.d_model}, T = {settings.seq_lens[0]} … {largest}, median of {settings.repeats} after "
        "warm-up).",
        f"The from-scratch attention's peak memory grows with slope {slopes[('naive', 'peak_fwd_bwd_MiB')]:.2f} on "
        f"the log-log plot (quadratic is 2), the fused kernel's with slope {slopes[('sdpa', 'peak_fwd_bwd_MiB')]:.2f} "
        f"and linear attention's with slope {slopes[('linear', 'peak_fwd_bwd_MiB')]:.2f}.",
        f"At T={largest} the from-scratch path needs {big.loc['naive', 'peak_fwd_bwd_MiB']:.0f} MiB for a forward + "
        f"backward pass, the fused kernel {big.loc['sdpa', 'peak_fwd_bwd_MiB']:.1f} MiB and linear attention "
        f"{big.loc['linear', 'peak_fwd_bwd_MiB']:.1f} MiB.",
        f"At T=2048 the from-scratch path uses {memory_ratio:.1f}x the fused kernel's peak memory; "
        f"at T=1024 it is {speedup_fwd_bwd:.1f}x slower for forward + backward ({speedup_fwd:.1f}x for the forward "
        "pass alone).",
        f"Forward + backward time grows with slope {slopes[('naive', 'time_fwd_bwd_ms')]:.2f} (from scratch), "
        f"{slopes[('sdpa', 'time_fwd_bwd_ms')]:.2f} (fused) and {slopes[('linear', 'time_fwd_bwd_ms')]:.2f} (linear) "
        "over the longest lengths.",
        "",
        f"**Heads at fixed d_model** (T={settings.head_seq_len}): from {settings.head_counts[0]} to "
        f"{settings.head_counts[-1]} heads, the from-scratch path's peak memory grows with slope "
        f"{head_slopes[('naive', 'peak_fwd_bwd_MiB')]:.2f} against H and the fused kernel's with slope "
        f"{head_slopes[('sdpa', 'peak_fwd_bwd_MiB')]:.2f}.",
        "",
        f"**char-GPT training throughput** (d_model={base.d_model}, {base.n_layers} layers, "
        f"{settings.gpt_tokens_per_step} tokens per step): "
        + "; ".join(
            f"T={t}: " + ", ".join(f"{p} {tp[(t, p)]:,.0f}" for p in ATTENTION_METHODS) + " tokens/s"
            for t in settings.gpt_seq_lens
        )
        + ".",
        "The fastest path is " + ", ".join(f"{fastest[t]} at T={t}" for t in settings.gpt_seq_lens) + ".",
        "",
        f"**GRU against transformer** ({gru_params:,} and {gpt_params:,} parameters, batch {settings.rnn_batch}): "
        f"training-step time grows with slope {rnn_slopes['GRU']:.2f} for the GRU and "
        f"{rnn_slopes['transformer']:.2f} for the transformer over T = {settings.rnn_seq_lens[0]} … {max_len}; "
        f"at T={max_len} the GRU step takes {gru_over_transformer:.2f}x the transformer step. The GRU needs "
        f"{max_len} sequential steps per layer at that length, the transformer {gpt_layers} (one per layer, "
        "whatever T is).",
    ]
    return "\n".join(lines)

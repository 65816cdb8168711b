"""Tables, figures and recorded metrics of notebook 10 (introduced in 10_experiments).

The notebook keeps what it teaches (which setting changes, the seeded runs, the two language-model objectives);
this module holds the bookkeeping around it: the tables built from the runs, the figures, the metrics it records
and the closing table of key figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from helpers.course.experiments import ExperimentResult, result_rows, spread
from helpers.course.metrics import MetricRecorder
from helpers.course.plotting import save_figure

# ---------------------------------------------------------------- section 2: Pre-LN against Post-LN


def ln_tables(ln_runs: Mapping[tuple[bool, float], list[ExperimentResult]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return one row per run ((norm_first, lr) -> runs) and the accuracy and failed runs per block and rate.

    A run counts as failed when its validation accuracy ends below 0.5.
    """
    ln_df = pd.DataFrame(result_rows([r for runs in ln_runs.values() for r in runs], "norm_first", "lr"))
    ln_df["block"] = ln_df["norm_first"].map({True: "Pre-LN", False: "Post-LN"})
    ln_df["failed"] = ln_df["val_acc"] < 0.5
    ln_table = (
        ln_df.groupby(["block", "lr"])
        .agg(
            val_acc_mean=("val_acc", "mean"),
            val_acc_min=("val_acc", "min"),
            val_acc_max=("val_acc", "max"),
            failed_runs=("failed", "sum"),
            runs=("failed", "size"),
        )
        .round(3)
    )
    return ln_df, ln_table


def record_ln_failures(recorder: MetricRecorder, ln_table: pd.DataFrame) -> None:
    """Record the failed runs of each block and learning rate (section 2's six-layer runs without warm-up)."""
    for block, lr in ln_table.index:
        recorder.record(
            f"experiments.{block.lower().replace('-', '')}_failed_lr{lr:g}",
            ln_table.loc[(block, lr), "failed_runs"],
            "runs",
            f"{block} 6-layer runs ending below 0.5 validation accuracy at lr={lr:g}, no warm-up",
        )


def plot_pre_post_ln(
    ln_df: pd.DataFrame, ln_runs: Mapping[tuple[bool, float], list[ExperimentResult]], name: str, mode: str
) -> plt.Figure:
    """Draw accuracy against learning rate and the first seed's loss curves at the largest rate; save as <name>."""
    lrs = sorted({lr for _, lr in ln_runs})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for norm_first, label in ((True, "Pre-LN"), (False, "Post-LN")):
        sub = ln_df[ln_df.norm_first == norm_first].groupby("lr")["val_acc"]
        axes[0].errorbar(
            lrs, sub.mean(), yerr=[sub.mean() - sub.min(), sub.max() - sub.mean()], marker="o", capsize=4, label=label
        )
        first = ln_runs[(norm_first, max(lrs))][0]
        axes[1].plot(
            pd.Series(first.losses).rolling(10, min_periods=1).mean(), label=f"{label}, seed {first.config.seed}"
        )
    axes[0].set_xscale("log")
    axes[0].set_xlabel("learning rate (no warm-up)")
    axes[0].set_ylabel("validation per-token accuracy")
    axes[0].set_title("Six-layer encoder: accuracy against learning rate")
    axes[0].legend()
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("training loss (moving average of 10)")
    axes[1].set_title(f"Training loss at lr={max(lrs):g}")
    axes[1].legend()
    fig.tight_layout()
    save_figure(fig, name, mode)
    return fig


# ---------------------------------------------------------------- section 5: layer-wise learning-rate decay


def finetune_tables(ft_runs: Mapping[tuple[str, float, int], ExperimentResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return one row per fine-tuning run ((start, layer decay, seed) -> result) and the spread per start and decay."""
    ft_df = pd.DataFrame(
        [
            {"start": start, "layer_decay": decay, "seed": seed, **r.metrics}
            for (start, decay, seed), r in ft_runs.items()
        ]
    )
    ft_table = ft_df.groupby(["start", "layer_decay"])[["train_acc", "val_acc", "val_loss"]].agg(spread)
    return ft_df, ft_table


def record_finetune(recorder: MetricRecorder, ft_df: pd.DataFrame) -> None:
    """Record the mean validation accuracy of each start and decay (section 5: descending sort, 128 sequences)."""
    for (start_from, decay), row in ft_df.groupby(["start", "layer_decay"]).mean(numeric_only=True).iterrows():
        tag = "scratch" if start_from == "from scratch" else f"decay{decay:g}"
        recorder.record(
            f"experiments.finetune_{tag}_val_acc",
            row["val_acc"],
            "",
            f"sort-descending validation accuracy after fine-tuning on 128 sequences ({start_from}, "
            f"layer decay {decay:g})",
        )


# ---------------------------------------------------------------- section 7: encoder-only against decoder-only


def families_table(fam_curves: Mapping[str, list[dict]]) -> pd.DataFrame:
    """Return each family's last accuracy on the hidden character, with the rest visible and with the past only."""
    return pd.DataFrame(
        {
            family: {"rest of the window visible": curve[-1]["both"], "only the past visible": curve[-1]["left"]}
            for family, curve in fam_curves.items()
        }
    ).T


def record_families(recorder: MetricRecorder, fam_curves: Mapping[str, list[dict]]) -> None:
    """Record the masked and the causal model's last accuracies (section 7: 16th character of 2,000 windows)."""
    for family, key in zip(fam_curves, ("masked_lm", "causal_lm")):
        for ctx, label in (("both", "both_sides"), ("left", "past_only")):
            recorder.record(
                f"experiments.{key}_acc_{label}",
                fam_curves[family][-1][ctx],
                "",
                f"accuracy on the 16th character of 2,000 validation windows, {family}, {label.replace('_', ' ')}",
            )


# ---------------------------------------------------------------- summary


def glance_table(
    pe_runs: Mapping[str, list[ExperimentResult]],
    ln_table: pd.DataFrame,
    lrs: Sequence[float],
    n_ln_seeds: int,
    *,
    head_acc: Mapping[int, float],
    dropout_gap: pd.Series,
    finetune_acc: Mapping[float, float],
    scratch_acc: float,
    fam_table: pd.DataFrame,
    res_df: pd.DataFrame,
) -> pd.DataFrame:
    """Return the key figure of every experiment in one table: experiment, figure, value."""

    def pe_mean(pe: str, t: int) -> float:
        return sum(r.metrics[f"acc_T{t}"] for r in pe_runs[pe]) / len(pe_runs[pe])

    best_h, worst_h = max(head_acc, key=head_acc.get), min(head_acc, key=head_acc.get)
    failed = {block: int(ln_table.loc[(block, max(lrs)), "failed_runs"]) for block in ("Pre-LN", "Post-LN")}
    decays = list(finetune_acc)
    glance = [
        *(
            ("positions", f"accuracy at T=8 / T=16, {label}", f"{pe_mean(pe, 8):.2f} / {pe_mean(pe, 16):.2f}")
            for pe, label in (
                ("none", "none"),
                ("sinusoidal", "sinusoidal"),
                ("learned", "learned"),
                ("rope", "rotary"),
            )
        ),
        (
            "normalisation",
            f"failed runs at lr={max(lrs):g}, Pre-LN / Post-LN",
            f"{failed['Pre-LN']} / {failed['Post-LN']} of {n_ln_seeds}",
        ),
        (
            "heads",
            "best / worst head count (accuracy)",
            f"{best_h} ({head_acc[best_h]:.2f}) / {worst_h} ({head_acc[worst_h]:.2f})",
        ),
        (
            "dropout",
            "loss gap at dropout " + " / ".join(f"{p:g}" for p in dropout_gap.index),
            " / ".join(f"{gap:.2f}" for gap in dropout_gap),
        ),
        (
            "layer-wise decay",
            "fine-tuned accuracy at decay " + " / ".join(f"{d:g}" for d in decays) + " / scratch",
            " / ".join(f"{finetune_acc[d]:.2f}" for d in decays) + f" / {scratch_acc:.2f}",
        ),
        (
            "model families",
            "hidden-character accuracy, rest / past visible, masked LM",
            f"{fam_table.iloc[0, 0]:.2f} / {fam_table.iloc[0, 1]:.2f}",
        ),
        (
            "model families",
            "hidden-character accuracy, rest / past visible, next-character LM",
            f"{fam_table.iloc[1, 0]:.2f} / {fam_table.iloc[1, 1]:.2f}",
        ),
        (
            "residual connections",
            "accuracy, 2 / 8 layers, residual on / off",
            " / ".join(
                f"{res_df[(res_df.n_layers == d) & (res_df.residual == r)].val_acc.mean():.2f}"
                for d in (2, 8)
                for r in (True, False)
            ),
        ),
    ]
    return pd.DataFrame(glance, columns=["experiment", "figure", "value"])

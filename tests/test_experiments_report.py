"""Notebook 10's bookkeeping: tables built from runs, the Pre-LN/Post-LN figure, recorded metrics, the summary table."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from helpers.course import experiments_report as report
from helpers.course import utils
from helpers.course.experiments import ExperimentConfig, ExperimentResult
from helpers.course.metrics import MetricRecorder

LRS = (1e-3, 3e-3, 1e-2)


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh artifacts folder for this test (COURSE_ARTIFACTS_DIR), so nothing lands in the real one."""
    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def recorded(artifacts_root):
    return json.loads((artifacts_root / "quick" / "metrics" / "10_experiments.json").read_text())


def result(cfg: ExperimentConfig, **metrics) -> ExperimentResult:
    """A run that never trained: the given final metrics and a short falling loss curve."""
    return ExperimentResult(cfg, losses=[2.0 - 0.1 * i for i in range(12)], metrics=metrics)


def ln_runs(post_ln_accs=(0.2, 0.9)) -> dict:
    """Two seeds per (norm_first, lr); Post-LN at the largest rate gets post_ln_accs, every other run 0.95."""
    runs = {}
    for norm_first in (True, False):
        for lr in LRS:
            accs = post_ln_accs if (not norm_first and lr == max(LRS)) else (0.95, 0.95)
            runs[(norm_first, lr)] = [
                result(ExperimentConfig(n_layers=6, norm_first=norm_first, lr=lr, seed=s), val_acc=a, val_loss=0.1)
                for s, a in enumerate(accs)
            ]
    return runs


def test_ln_tables_count_failed_runs_per_block_and_rate():
    ln_df, ln_table = report.ln_tables(ln_runs())
    assert len(ln_df) == 12 and set(ln_df["block"]) == {"Pre-LN", "Post-LN"}
    assert ln_df["failed"].sum() == 1
    assert list(ln_table.columns) == ["val_acc_mean", "val_acc_min", "val_acc_max", "failed_runs", "runs"]
    assert ln_table.loc[("Post-LN", 1e-2), "failed_runs"] == 1 and ln_table.loc[("Post-LN", 1e-2), "runs"] == 2
    assert ln_table.loc[("Post-LN", 1e-2), "val_acc_mean"] == 0.55
    assert ln_table.loc[("Pre-LN", 1e-2), "failed_runs"] == 0


def test_record_ln_failures_names_each_block_and_rate(artifacts):
    _, ln_table = report.ln_tables(ln_runs())
    report.record_ln_failures(MetricRecorder("10_experiments", "quick"), ln_table)
    got = recorded(artifacts)
    assert set(got) == {f"experiments.{b}_failed_lr{lr:g}" for b in ("preln", "postln") for lr in LRS}
    metric = got["experiments.postln_failed_lr0.01"]
    assert (metric["value"], metric["unit"]) == (1.0, "runs")
    assert metric["description"] == "Post-LN 6-layer runs ending below 0.5 validation accuracy at lr=0.01, no warm-up"


def test_plot_pre_post_ln_draws_both_blocks_and_saves(artifacts):
    runs = ln_runs()
    ln_df, _ = report.ln_tables(runs)
    fig = report.plot_pre_post_ln(ln_df, runs, "10_t_ln", "quick")
    assert fig.axes[1].get_title() == "Training loss at lr=0.01"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["Pre-LN, seed 0", "Post-LN, seed 0"]
    plt.close(fig)
    assert (artifacts / "quick" / "figures" / "10_t_ln.png").stat().st_size > 0


def finetune_runs() -> dict:
    runs = {}
    for seed in (0, 1):
        for decay, acc in ((1.0, 0.8), (0.5, 0.6), (0.2, 0.4)):
            cfg = ExperimentConfig(task="sort_desc", layer_decay=decay, seed=seed)
            runs[("pre-trained", decay, seed)] = result(cfg, train_acc=acc, val_acc=acc + 0.1 * seed, val_loss=1.0)
        cfg = ExperimentConfig(task="sort_desc", seed=seed)
        runs[("from scratch", 1.0, seed)] = result(cfg, train_acc=0.7, val_acc=0.5, val_loss=1.5)
    return runs


def test_finetune_tables_and_records(artifacts):
    ft_df, ft_table = report.finetune_tables(finetune_runs())
    assert list(ft_df.columns[:3]) == ["start", "layer_decay", "seed"] and len(ft_df) == 8
    assert list(ft_table.columns) == ["train_acc", "val_acc", "val_loss"]
    assert ft_table.loc[("pre-trained", 1.0), "val_acc"] == "0.85 [0.80–0.90]"
    assert ft_table.loc[("from scratch", 1.0), "val_acc"] == "0.50 [0.50–0.50]"
    report.record_finetune(MetricRecorder("10_experiments", "quick"), ft_df)
    got = recorded(artifacts)
    assert {k: m["value"] for k, m in got.items()} == pytest.approx(
        {
            "experiments.finetune_decay1_val_acc": 0.85,
            "experiments.finetune_decay0.5_val_acc": 0.65,
            "experiments.finetune_decay0.2_val_acc": 0.45,
            "experiments.finetune_scratch_val_acc": 0.5,
        }
    )
    assert got["experiments.finetune_decay0.5_val_acc"]["description"] == (
        "sort-descending validation accuracy after fine-tuning on 128 sequences (pre-trained, layer decay 0.5)"
    )


FAM_CURVES = {
    "encoder-only (masked LM)": [{"step": 10, "both": 0.2, "left": 0.1}, {"step": 20, "both": 0.45, "left": 0.15}],
    "decoder-only (next character)": [{"step": 10, "both": 0.25, "left": 0.25}, {"step": 20, "both": 0.3, "left": 0.3}],
}


def test_families_table_and_records(artifacts):
    table = report.families_table(FAM_CURVES)
    assert list(table.index) == list(FAM_CURVES)
    assert table.loc["encoder-only (masked LM)"].tolist() == [0.45, 0.15]
    report.record_families(MetricRecorder("10_experiments", "quick"), FAM_CURVES)
    got = recorded(artifacts)
    assert {k: m["value"] for k, m in got.items()} == {
        "experiments.masked_lm_acc_both_sides": 0.45,
        "experiments.masked_lm_acc_past_only": 0.15,
        "experiments.causal_lm_acc_both_sides": 0.3,
        "experiments.causal_lm_acc_past_only": 0.3,
    }
    assert got["experiments.masked_lm_acc_past_only"]["description"] == (
        "accuracy on the 16th character of 2,000 validation windows, encoder-only (masked LM), past only"
    )


def test_glance_table_collects_one_figure_per_experiment():
    pe_runs = {
        pe: [result(ExperimentConfig(positional=pe, seed=s), acc_T8=a8 + 0.02 * s, acc_T16=a16) for s in (0, 1)]
        for pe, a8, a16 in (
            ("none", 0.3, 0.2),
            ("sinusoidal", 0.97, 0.18),
            ("learned", 0.98, 0.16),
            ("rope", 0.99, 0.5),
        )
    }
    _, ln_table = report.ln_tables(ln_runs(post_ln_accs=(0.2, 0.3)))
    res_df = pd.DataFrame(
        [{"n_layers": d, "residual": r, "val_acc": 0.9 if r else 0.3} for d in (2, 8) for r in (True, False)]
    )
    table = report.glance_table(
        pe_runs,
        ln_table,
        LRS,
        2,
        head_acc={1: 0.94, 4: 0.98, 16: 0.96},
        dropout_gap=pd.Series({0.0: 0.3, 0.1: 0.23, 0.3: 0.2}),
        finetune_acc={1.0: 0.85, 0.5: 0.65, 0.2: 0.45},
        scratch_acc=0.5,
        fam_table=report.families_table(FAM_CURVES),
        res_df=res_df,
    )
    assert list(table.columns) == ["experiment", "figure", "value"] and len(table) == 11
    values = dict(zip(table["figure"], table["value"]))
    assert values["accuracy at T=8 / T=16, rotary"] == "1.00 / 0.50"
    assert values["failed runs at lr=0.01, Pre-LN / Post-LN"] == "0 / 2 of 2"
    assert values["best / worst head count (accuracy)"] == "4 (0.98) / 1 (0.94)"
    assert values["loss gap at dropout 0 / 0.1 / 0.3"] == "0.30 / 0.23 / 0.20"
    assert values["fine-tuned accuracy at decay 1 / 0.5 / 0.2 / scratch"] == "0.85 / 0.65 / 0.45 / 0.50"
    assert values["hidden-character accuracy, rest / past visible, masked LM"] == "0.45 / 0.15"
    assert values["accuracy, 2 / 8 layers, residual on / off"] == "0.90 / 0.30 / 0.90 / 0.30"

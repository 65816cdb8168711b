"""The tables, figures and run bookkeeping of notebooks 06, 07 and 11 (helpers/course/gpt_report.py)."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from helpers.course import gpt_report, utils
from helpers.course.datasets import CharDataset, split_data, word_set
from helpers.course.metrics import MetricRecorder
from helpers.course.trainer import Trainer
from helpers.decoding import generate_text
from helpers.models import GPT, GPTConfig
from helpers.tokenizers import CharTokenizer
from helpers.training import TrainConfig

TEXT = "ROMEO:\nO, she doth teach the torches to burn bright!\nJULIET:\nGood night, good night.\n" * 40
CFG = TrainConfig(max_steps=4, batch_size=4, lr=3e-3, warmup_steps=1, eval_interval=2, eval_windows=4, seed=3)


@pytest.fixture
def ds():
    tok = CharTokenizer(sorted(set(TEXT)))
    train, val = split_data(torch.tensor(tok.encode(TEXT)))
    return CharDataset(TEXT, tok, train, val)


def tiny_gpt(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=16, d_model=16, n_heads=2, n_layers=1, dropout=0.0))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def fake_log(seconds=(0.0, 60.5, 121.0, 180.25)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "step": 10 * i,
                "train_seconds": s,
                "lr": 1e-3 / (i + 1),
                "train_loss": 3.0 - 0.123456 * i,
                "val_loss": 3.1 - 0.2 * i,
                "val_se": 0.01,
                "tokens": 100 * i,
            }
            for i, s in enumerate(seconds)
        ]
    )


# ---------------------------------------------------------------- a run: load, resume, save


def test_a_saved_run_writes_its_logs_and_loads_back_with_its_meta(ds, tmp_path, capsys):
    tok = ds.tokenizer
    model = tiny_gpt(tok.vocab_size)
    trainer = Trainer(model, ds.train, ds.val, CFG, 16, extra={"snapshots": []})
    known = word_set(tok.decode(ds.train))

    def on_eval(trainer, row):
        if row["step"] == 0:
            gpt_report.sample_snapshot(trainer, tok, "initialisation", known, "\n", 20, seed=1)

    trainer.run(on_eval=on_eval)
    end = gpt_report.sample_snapshot(trainer, tok, "end", known, "\n", 20, seed=1)
    assert [s["label"] for s in trainer.extra["snapshots"]] == ["initialisation", "end"]
    assert end["step"] == 4 and end["val_loss"] == trainer.log[-1]["val_loss"]
    assert end["text"] == generate_text(model, tok, "\n", 20, seed=1, temperature=0.8)  # the same seeded sample
    assert 0.0 <= end["word_share"] <= 1.0

    final_path = tmp_path / "checkpoints" / "char_gpt.pt"
    meta = gpt_report.save_run(trainer, tok, final_path, tmp_path / "logs", snapshots=trainer.extra["snapshots"])
    assert list(meta) == ["train_config", "log", "snapshots", "summary"]
    assert meta["summary"] == {
        "steps": 4,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": trainer.eval_seconds,
        "tokens": trainer.log[-1]["tokens"],
        "val_loss": trainer.log[-1]["val_loss"],
        "val_se": trainer.log[-1]["val_se"],
    }
    assert (tmp_path / "logs" / "char_gpt_log.csv").exists()
    assert json.loads((tmp_path / "logs" / "char_gpt_log.json").read_text())["steps"] == 4
    pd.testing.assert_frame_equal(
        gpt_report.read_log(tmp_path / "logs" / "char_gpt_log.json"), pd.DataFrame(trainer.log)
    )
    assert gpt_report.read_log(tmp_path / "logs" / "missing.json") is None

    capsys.readouterr()
    loaded, loaded_meta = gpt_report.load_run(final_path, "cpu")
    seconds = f"{trainer.train_seconds:.0f}"
    assert capsys.readouterr().out == f"loaded {utils.relative(final_path)}: trained 4 steps in {seconds} s\n"
    assert loaded_meta["summary"] == meta["summary"] and loaded_meta["snapshots"] == meta["snapshots"]
    assert TrainConfig(**loaded_meta["train_config"]) == trainer.cfg
    idx = torch.tensor([tok.encode("ROMEO:\nO, she")])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(idx)[0], model(idx)[0], atol=2e-2)  # float16 weights back as float32

    text = gpt_report.describe_run(meta["summary"], final_path)
    size = final_path.stat().st_size / 1e6
    assert text.splitlines() == [
        f"4 steps, {meta['summary']['tokens']:,} training tokens, {trainer.train_seconds:.1f} s of training "
        f"(+ {trainer.eval_seconds:.1f} s of evaluation, not counted)",
        f"saved {utils.relative(final_path)} ({size:.1f} MB)",
    ]


def test_resume_run_continues_the_unfinished_run_and_says_where(ds, tmp_path, capsys):
    trainer = Trainer(tiny_gpt(ds.tokenizer.vocab_size), ds.train, ds.val, CFG, 16, extra={"snapshots": ["kept"]})
    trainer.run(steps=2)
    state = trainer.save(tmp_path / "state.pt")
    resumed = gpt_report.resume_run(state, tiny_gpt(ds.tokenizer.vocab_size), ds)
    assert capsys.readouterr().out.endswith(f"resuming the unfinished run in {utils.relative(state)} at step 2\n")
    assert resumed.step == 2 and resumed.extra == {"snapshots": ["kept"]}
    assert [row["val_loss"] for row in resumed.log] == [row["val_loss"] for row in trainer.log]
    resumed.run()
    trainer.run()
    assert resumed.losses == trainer.losses  # the same steps as the run that never stopped


def test_load_or_stand_in_loads_the_checkpoint_or_trains_a_stand_in_in_quick_mode_only(ds, tmp_path, monkeypatch):
    missing = tmp_path / "char_gpt.pt"
    with pytest.raises(FileNotFoundError, match="python run_all.py --only 06"):
        gpt_report.load_or_stand_in(missing, "full", "cpu")

    runs = []

    class FakeTrainer:
        def __init__(self, model, train, val, cfg, block_size):
            runs.append((model, cfg, block_size))

        def run(self):
            runs.append("ran")

    monkeypatch.setattr(gpt_report, "load_dataset", lambda: ds)
    monkeypatch.setattr(gpt_report, "Trainer", FakeTrainer)
    model, tok = gpt_report.load_or_stand_in(missing, "quick", "cpu")
    assert tok is ds.tokenizer and model.cfg.block_size == 64 and model.cfg.d_model == 64
    assert runs[0][1] == TrainConfig(max_steps=150, lr=3e-3, warmup_steps=15, eval_interval=150, eval_windows=50)
    assert runs[0][0] is model and runs[0][2] == 64 and runs[1] == "ran"

    monkeypatch.undo()
    trainer = Trainer(tiny_gpt(ds.tokenizer.vocab_size), ds.train, ds.val, CFG, 16)
    trainer.run()
    gpt_report.save_run(trainer, ds.tokenizer, missing, tmp_path / "logs")
    loaded, tok = gpt_report.load_or_stand_in(missing, "full", "cpu")
    assert tok.chars == ds.tokenizer.chars and loaded.cfg == trainer.model.cfg


# ---------------------------------------------------------------- the evaluation log


def test_val_at_and_the_log_table():
    log_df = fake_log()
    assert gpt_report.val_at(log_df, 120.0)["step"] == 20
    assert gpt_report.val_at(log_df, 60.5)["step"] == 10  # at or after
    assert gpt_report.val_at(log_df, 200.0) is None
    lines = gpt_report.log_table(log_df).splitlines()
    assert lines[0].split() == ["step", "train_seconds", "lr", "train_loss", "val_loss", "val_se"]
    assert [float(v) for v in lines[2].split()] == [10, 60.5, 0.0005, 2.8765, 2.9, 0.01]  # rounded to 4 decimals


def test_modern_results_puts_notebook_06_beside_the_modern_run():
    summary = {"steps": 1234, "tokens": 5678901}
    course = fake_log((0.0, 130.0))
    text = gpt_report.modern_results(fake_log(), summary, course)
    assert text.splitlines()[-4:] == [
        "",
        "final validation loss 2.5000 ± 0.0100 after 180.2 s, 1,234 steps, 5,678,901 training characters",
        "validation loss 2.7000 at 121.0 s",
        "notebook 06's GPT: 2.9000 at the end, 2.9000 at 130.0 s",
    ]
    short = gpt_report.modern_results(fake_log((0.0, 60.0)), summary, None).splitlines()
    assert short[-1].startswith("final validation loss 2.9000") and "notebook 06" not in "\n".join(short)


# ---------------------------------------------------------------- notebook 06


def test_head_patterns_reads_distances_and_newline_rows():
    line = "ab\ncd"  # the newline at 2; the second line has 2 rows
    T = len(line)
    first = torch.zeros(2, T, T)
    first[0] = torch.eye(T)  # head 0: the character itself
    first[1, 0, 0] = 1.0
    first[1, torch.arange(1, T), torch.arange(0, T - 1)] = 1.0  # head 1: one place back
    last = torch.zeros(2, T, T)
    last[0, 3:, 2] = 1.0  # head 0: both rows of the second line on the newline
    last[1, 3:, 0] = 1.0
    assert gpt_report.head_patterns(first, last, line).splitlines() == [
        "block 0, mean weight on the character d places back (d = 0: the character itself):",
        "  head 0: d=0: 1.00  d=1: 0.00  d=2: 0.00  d=3: 0.00",
        "  head 1: d=0: 0.20  d=1: 1.00  d=2: 0.00  d=3: 0.00",
        "last block, rows of the second line (2 of them) whose largest weight is on the newline:",
        "  head 0: 2  head 1: 0",
    ]


def test_the_figures_of_notebook_06():
    fig = gpt_report.plot_loss_curves(fake_log(), uniform=4.17, bigram=2.5)
    left, right = fig.axes
    assert len(left.lines) == 4 and left.get_title() == "Loss against optimiser steps"
    assert list(left.lines[0].get_xdata()) == [10, 20, 30]  # the training loss has no value at step 0
    assert [t.get_text() for t in right.get_legend().get_texts()][-1] == "target 1.50"
    assert right.get_ylim() == (1.3, 3.0)

    sim = torch.eye(4)
    fig = gpt_report.plot_position_similarity(sim, {1: 0.5, 2: -0.25, 3: 0.0})
    assert fig.axes[1].get_xscale() == "log" and list(fig.axes[1].lines[0].get_ydata()) == [0.5, -0.25, 0.0]


# ---------------------------------------------------------------- notebook 11


def test_the_figures_of_notebook_11():
    fig = gpt_report.plot_singular_values(torch.tensor([1.0, 0.1]), torch.tensor([1.0, 0.9]), (192, 768))
    assert fig.axes[0].get_title() == "Newton–Schulz on a 192 × 768 matrix" and fig.axes[0].get_yscale() == "log"

    log_df, course = fake_log(), fake_log((0.0, 300.0))
    with_targets = gpt_report.plot_against_course(log_df, course, targets=True).axes[0]
    labels = [t.get_text() for t in with_targets.get_legend().get_texts()]
    assert labels == [
        "notebook 06's GPT, AdamW",
        "modern GPT, Muon + AdamW",
        "target at 10 min: 1.45",
        "target at 120 s: 1.65",
    ]
    plain = gpt_report.plot_against_course(log_df, None, targets=False).axes[0]
    assert [t.get_text() for t in plain.get_legend().get_texts()] == ["modern GPT, Muon + AdamW"]


def ablation_frames():
    ablations = pd.DataFrame(
        {"run": ["baseline", "baseline", "rope", "muon"], "seed": [0, 1, 0, 0], "val at 120 s": [1.9, 1.8, 1.81, 1.7]}
    )
    order = ["baseline", "rmsnorm", "rope", "muon"]
    ablations["run"] = pd.Categorical(ablations["run"], order, ordered=True)
    means = ablations.groupby("run", observed=True)["val at 120 s"].agg(["mean", "min", "max", "count"])
    return ablations, means, order


def test_the_ablation_figure_and_reading():
    ablations, means, order = ablation_frames()
    base_mean = 1.85
    ax = gpt_report.plot_ablations(means, base_mean).axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.0, -0.04, -0.15]
    assert len(ax.lines) == 2  # the baseline's range over its two seeds, and the zero line
    assert gpt_report.ablation_reading(means, ablations, order, base_mean) == (
        "**Reading.** The baseline reaches 1.850 after 120 s. rope -0.040; muon -0.150 (nats/char against the "
        "baseline). The best run is muon at 1.700. Seed spread where measured: baseline: 1.800 to 1.900 over 2 seeds."
    )


def gpu_run(name: str, val: float) -> dict:
    log = [
        {"train_seconds": 0.0, "val_loss": 4.2},
        {"train_seconds": 30.4, "val_loss": 1.44},
        {"train_seconds": 61.0, "val_loss": val},
    ]
    return {
        "run": name,
        "name": "NVIDIA H100",
        "n_params": 1000,
        "steps": 5000,
        "train_seconds": 101.83,
        "ms_per_step": 20.36,
        "tokens_per_second": 804657.5,
        "val_loss": val,
        "log": log,
    }


def test_the_gpu_table_figure_and_metrics(tmp_path, monkeypatch):
    runs = [gpu_run("nanogpt_course", 1.46939), gpu_run("nb06_modern", 1.5)]
    table = gpt_report.gpu_table(runs)
    assert table.iloc[0].to_dict() == {
        "run": "nanogpt_course",
        "device": "NVIDIA H100",
        "parameters": 1000,
        "steps": 5000,
        "train s": 101.8,
        "ms per step": 20.4,
        "tokens per s": 804658.0,
        "final val": 1.4694,
        "best val": 1.44,
        "best at s": 30.0,
    }
    left, right = gpt_report.plot_gpu_runs(runs).axes
    assert [line.get_label() for line in left.lines] == ["nanogpt_course", "nanoGPT's reported 1.4697"]
    assert [line.get_label() for line in right.lines] == ["nb06_modern"]

    monkeypatch.setenv(utils.ARTIFACTS_ENV, str(tmp_path))
    metrics = MetricRecorder("11_modern_gpt", "quick", fresh=True)
    gpt_report.record_gpu_runs(metrics, runs)
    recorded = json.loads((tmp_path / "quick" / "metrics" / "11_modern_gpt.json").read_text())
    assert sorted(recorded) == [
        "gpu_h100.nanogpt_course.tokens_per_second",
        "gpu_h100.nanogpt_course.val_loss",
        "gpu_h100.nb06_modern.tokens_per_second",
        "gpu_h100.nb06_modern.val_loss",
    ]
    assert recorded["gpu_h100.nanogpt_course.val_loss"] == {
        "value": 1.46939,
        "unit": "nats/char",
        "notebook": "11_modern_gpt",
        "mode": "quick",
        "description": "recorded on NVIDIA H100 by scripts/gpu_runs.py: validation loss after 5000 steps",
    }
    assert recorded["gpu_h100.nb06_modern.tokens_per_second"]["unit"] == "characters/s"


DDP_LOG = """# a header
## run 1
$ OMP_NUM_THREADS=1 python train_gpt.py --max-steps 150
step   150/150 | train 2.8468 | val 2.4482 | lr 1.0e-04 | 58.0 s training
/tmp/one.pt holds step 150 of 150 (58.0 s of training)
$ OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 train_gpt.py --max-steps 150
step   150/150 | train 2.8468 | val 2.4482 | lr 1.0e-04 | 31.3 s training
## run 2
$ OMP_NUM_THREADS=1 python train_gpt.py --max-steps 150
step   150/150 | train 2.8470 | val 2.4482 | lr 1.0e-04 | 55.4 s training
"""


def test_the_ddp_log_is_read_into_one_row_per_setting():
    summary = gpt_report.ddp_summary(DDP_LOG)
    assert list(summary.index) == ["1 process(es) x 1 thread(s)", "2 process(es) x 1 thread(s)"]
    one = summary.loc["1 process(es) x 1 thread(s)"]
    assert (one["runs"], one["seconds"], one["losses"]) == (2, "58.0 / 55.4", [2.8468, 2.847])
    assert one["median"] == pytest.approx(56.7)
    assert gpt_report.ddp_commands(DDP_LOG) == [
        "OMP_NUM_THREADS=1 python",
        "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2",
    ]


def test_the_committed_ddp_log_gives_the_figures_notebook_11_reads():
    text = (utils.PROJECT_ROOT / "artifacts" / "tuning" / "ddp_1_vs_2_processes.log").read_text()
    summary = gpt_report.ddp_summary(text)
    assert summary.loc["2 process(es) x 1 thread(s)", "seconds"] == "31.3 / 33.1"
    assert summary.loc["1 process(es) x 2 thread(s)", "seconds"] == "31.2 / 36.2"
    assert list(summary["runs"]) == [2, 2, 2]

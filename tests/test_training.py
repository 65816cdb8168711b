"""The training loop: schedule, loss going down, exact resume, evaluation and logs."""

import csv
import math
from dataclasses import replace

import pytest
import torch

from helpers.course.checkpoints import load_checkpoint
from helpers.course.datasets import load_dataset, synthetic_batch
from helpers.course.scoring import evaluate_lm
from helpers.course.trainer import Trainer, resume_trainer
from helpers.decoding import greedy_decode
from helpers.evaluation import sequence_accuracy
from helpers.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from helpers.optim import warmup_cosine
from helpers.training import TrainConfig, train, translation_loss


@pytest.fixture(scope="module")
def data():
    return load_dataset()


def tiny_model(vocab_size, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=32, d_model=48, n_heads=4, n_layers=2, dropout=dropout))


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, 10, 110, min_ratio=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # halfway through the decay: 0.1 + 0.9 * 0.5
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_loss_decreases_on_a_small_run(data):
    model = tiny_model(data.tokenizer.vocab_size)
    cfg = TrainConfig(max_steps=150, batch_size=16, lr=3e-3, warmup_steps=10, eval_interval=75, eval_windows=32)
    trainer = Trainer(model, data.train, data.val, cfg, block_size=32)
    log = trainer.run()
    val = [row["val_loss"] for row in log]
    assert [row["step"] for row in log] == [0, 75, 150]
    assert val[0] > val[1] > val[2]
    assert val[0] == pytest.approx(math.log(65), abs=0.05) and val[2] < 2.9
    first, last = trainer.losses[:10], trainer.losses[-10:]
    assert sum(last) / 10 < sum(first) / 10 - 1.0


def test_interrupted_and_resumed_run_matches_uninterrupted(data, tmp_path):
    cfg = TrainConfig(
        max_steps=12, batch_size=4, grad_accum=2, lr=2e-3, warmup_steps=3, eval_interval=4, eval_windows=8, seed=5
    )
    vocab = data.tokenizer.vocab_size
    straight = Trainer(tiny_model(vocab, dropout=0.1), data.train, data.val, cfg, block_size=32)
    straight.run()

    first = Trainer(
        tiny_model(vocab, dropout=0.1),
        data.train,
        data.val,
        cfg,
        block_size=32,
        extra={"tokenizer": data.tokenizer.to_dict()},
    )
    first.run(steps=7)
    path = first.save(tmp_path / "state.pt")
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed = resume_trainer(path, tiny_model(vocab, dropout=0.1, seed=99), data.train, data.val)
    assert resumed.step == 7 and resumed.extra["tokenizer"] == data.tokenizer.to_dict()
    resumed.run()

    assert resumed.losses == straight.losses  # bit for bit
    assert [r["val_loss"] for r in resumed.log] == [r["val_loss"] for r in straight.log]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    state = load_checkpoint(path)  # weights_only=True
    assert set(state) == {"kind", "model", "config", "tokenizer", "meta"} and state["kind"] == "training-state"
    assert set(state["meta"]) >= {"optimizer", "scheduler", "step", "rng", "extra"}
    assert state["meta"]["extra"]["tokenizer"] == data.tokenizer.to_dict()  # what the caller keeps comes back


def test_evaluate_full_split_and_standard_error(data):
    model = tiny_model(data.tokenizer.vocab_size)
    loss, se = evaluate_lm(model, data.val[:3300], block_size=32, batch_size=40)
    assert loss == pytest.approx(math.log(65), abs=0.05)
    assert 0 < se < 0.01


def test_time_limit_and_logs(data, tmp_path):
    cfg = TrainConfig(max_steps=1000, batch_size=2, warmup_steps=1, eval_interval=500, eval_windows=4, time_limit=0.0)
    trainer = Trainer(tiny_model(data.tokenizer.vocab_size), data.train, data.val, cfg, block_size=32)
    trainer.run()
    assert trainer.step == 1 and len(trainer.log) == 2  # evaluated at the start and where it stopped
    trainer.write_logs(tmp_path / "log.csv", tmp_path / "log.json")
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert (tmp_path / "log.json").exists()


def test_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(max_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="time_budget"):
        TrainConfig(max_steps=10, warmup_steps=2, time_budget=60.0)


class SteadyClock:
    """A stand-in for the time module whose perf_counter advances `tick` seconds per call."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_fits_the_schedule_to_the_measured_step_time(data, monkeypatch):
    import helpers.course.trainer as training

    monkeypatch.setattr(training, "time", SteadyClock(0.005))  # two readings per step: each step "takes" 5 ms
    cfg = TrainConfig(
        max_steps=100_000,
        batch_size=2,
        lr=1e-3,
        warmup_steps=8,
        min_lr_ratio=0.1,
        eval_interval=100_000,
        eval_windows=4,
        time_budget=1.0,
    )
    trainer = Trainer(tiny_model(data.tokenizer.vocab_size), data.train, data.val, cfg, block_size=32)
    trainer.run()
    assert 195 <= trainer.cfg.max_steps <= 201  # 1 s of budget at 5 ms per step, fitted from the warmup's timings
    assert trainer.step == trainer.cfg.max_steps  # the run ends where the schedule ends ...
    assert trainer._budget_fit["refits_left"] == 0 and trainer._budget_fit["refit_step"] is None  # all refits done
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(1e-4)  # ... at the bottom of the cosine
    assert trainer.state_dict()["config"]["max_steps"] == trainer.cfg.max_steps  # a resume keeps it


def test_time_budget_fit_survives_a_resume(data, tmp_path):
    cfg = TrainConfig(
        max_steps=100_000, batch_size=2, warmup_steps=8, eval_interval=100_000, eval_windows=4, time_budget=1.0
    )
    vocab = data.tokenizer.vocab_size
    first = Trainer(tiny_model(vocab), data.train, data.val, cfg, block_size=32)
    first.run(steps=10)  # past the first fit at the end of warmup
    assert first.cfg.max_steps < 100_000 and first._budget_fit["refit_step"] > 10
    resumed = resume_trainer(first.save(tmp_path / "state.pt"), tiny_model(vocab), data.train, data.val)
    assert resumed.cfg.max_steps == first.cfg.max_steps
    assert resumed._budget_fit == first._budget_fit  # the refits still happen after a resume


def test_copy_task_is_learned_quickly():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = Seq2SeqConfig(12, 12, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=64, dropout=0.0, max_len=16)
    model = Seq2Seq(cfg)
    batches = iter(lambda: synthetic_batch("copy", 32, 8, 2, 6, gen), None)
    cfg = TrainConfig(max_steps=250, lr=3e-3, warmup_steps=20, min_lr_ratio=0.05, beta2=0.98)
    history = train(model, lambda: next(batches), translation_loss, cfg, log=lambda *_: None)
    assert history["steps"] == 250 and history["loss"][-1] < history["loss"][0] / 4
    src, tgt = synthetic_batch("copy", 100, 8, 2, 6, torch.Generator().manual_seed(1))
    assert sequence_accuracy(greedy_decode(model, src, 8), tgt) >= 0.9


def test_a_failing_compile_falls_back_to_eager_with_one_line_and_trains_the_same(data, monkeypatch, capsys):
    import helpers.course.trainer as trainer_module

    class NoCompiler(torch.nn.Module):  # what torch.compile gives: a module that compiles at its first call
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            raise RuntimeError("Compiler: cc is not found\nmore lines of the compiler's log")

    cfg = TrainConfig(max_steps=6, batch_size=2, lr=1e-3, warmup_steps=2, eval_interval=100, eval_windows=2)
    torch.manual_seed(0)
    eager = Trainer(tiny_model(data.tokenizer.vocab_size), data.train, data.val, cfg, block_size=32)
    eager.run()
    monkeypatch.setattr(trainer_module.torch, "compile", NoCompiler)
    torch.manual_seed(0)
    fallback = Trainer(tiny_model(data.tokenizer.vocab_size), data.train, data.val, replace(cfg, compile=True), 32)
    fallback.run()
    out = capsys.readouterr().out
    assert "torch.compile failed (RuntimeError: Compiler: cc is not found); training in eager mode\n" in out
    assert "more lines" not in out  # one line, not the compiler's log
    assert fallback.compiled is False and eager.compiled is None
    assert fallback.losses == eager.losses  # the failed attempt took no step and drew no extra batch

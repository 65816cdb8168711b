"""Experiment helpers: the toy task generator, the toy encoder, layer-wise learning rates and a tiny seeded run."""

import pytest
import torch

from helpers.course.experiments import (
    CharLM,
    ExperimentConfig,
    ToyEncoder,
    causal_lm_batch,
    layerwise_lr_groups,
    make_task_batch,
    masked_lm_batch,
    predict_hidden_character,
    run_experiment,
    run_seeds,
)
from helpers.layers import TransformerConfig
from helpers.training import IGNORE


def test_sort_task_targets_are_the_sorted_inputs():
    gen = torch.Generator().manual_seed(0)
    x, y = make_task_batch("sort", 50, 9, n_symbols=10, generator=gen)
    assert x.shape == y.shape == (50, 9) and x.min() >= 0 and x.max() <= 9
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        assert row_y == sorted(row_x)
    _, y_desc = make_task_batch("sort_desc", 50, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y_desc, y.flip(dims=[1]))
    with pytest.raises(ValueError):
        make_task_batch("reverse", 2, 3)


def test_task_batches_are_seeded():
    a = make_task_batch("sort", 4, 6, generator=torch.Generator().manual_seed(3))
    b = make_task_batch("sort", 4, 6, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(u, w) for u, w in zip(a, b))


@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned"])
def test_toy_encoder_shapes_and_position_sensitivity(positional):
    torch.manual_seed(0)
    model = ToyEncoder(TransformerConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0), 10, positional, 32).eval()
    x = torch.randint(10, (3, 7))
    logits = model(x)
    assert logits.shape == (3, 7, 10)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    permuted = model(x[:, perm])  # without positions, self-attention is permutation-equivariant
    assert torch.allclose(permuted, logits[:, perm], atol=1e-5) == (positional == "none")


def test_layerwise_lr_groups_decay_from_the_head_down():
    model = ToyEncoder(TransformerConfig(d_model=16, n_heads=2, n_layers=3, dropout=0.0), 10, "learned", 16)
    groups = layerwise_lr_groups(model, lr=1.0, decay=0.5)
    assert [g["lr"] for g in groups] == [1.0, 0.125, 0.25, 0.5, 0.0625]
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    assert n_grouped == sum(p.numel() for p in model.parameters())
    assert [g["lr"] for g in layerwise_lr_groups(model, 0.1, 1.0)] == [0.1] * 5


def test_tiny_experiment_learns_and_is_reproducible():
    cfg = ExperimentConfig(
        seq_len=5, d_model=32, n_heads=2, steps=120, batch_size=32, lr=3e-3, eval_size=200, eval_lens=(5, 7)
    )
    first, again = run_experiment(cfg), run_experiment(cfg)
    assert first.losses == again.losses and first.metrics == again.metrics
    assert sum(first.losses[-10:]) / 10 < 0.6 * sum(first.losses[:10]) / 10
    assert first.metrics["val_acc"] > 0.3 and not first.diverged  # chance is about 0.1
    assert {"acc_T5", "acc_T7", "val_loss", "val_seq_acc"} <= set(first.metrics)


def test_fixed_training_set_reports_train_accuracy_and_seeds_differ():
    cfg = ExperimentConfig(seq_len=4, d_model=16, n_heads=2, steps=30, batch_size=16, train_size=64, eval_size=100)
    runs = run_seeds(cfg, [0, 1])
    assert "train_acc" in runs[0].metrics and runs[0].losses != runs[1].losses
    assert runs[0].metrics["val_loss"] != runs[1].metrics["val_loss"]


def test_divergence_is_detected():
    cfg = ExperimentConfig(
        seq_len=4, d_model=16, n_heads=2, steps=20, batch_size=16, lr=50.0, eval_size=50, norm_first=False, n_layers=2
    )
    assert run_experiment(cfg).diverged


def test_residual_switch_reaches_the_encoder():
    from helpers.course.experiments import ExperimentConfig, ToyEncoder

    cfg = ExperimentConfig(n_layers=2, residual=False)
    assert cfg.transformer_config().residual is False
    torch.manual_seed(0)
    plain = ToyEncoder(cfg.transformer_config(), cfg.n_symbols)
    torch.manual_seed(0)
    with_res = ToyEncoder(ExperimentConfig(n_layers=2).transformer_config(), cfg.n_symbols)
    x = torch.randint(0, 10, (3, 8))
    assert not torch.allclose(plain.eval()(x), with_res.eval()(x)), "same weights, different wiring: outputs differ"


def test_masked_and_causal_lm_batches():
    data = torch.arange(1000) % 50
    x, y = masked_lm_batch(data, 64, 32, mask_id=50, fraction=0.15, generator=torch.Generator().manual_seed(0))
    hidden = x == 50
    assert x.shape == y.shape == (64, 32) and 0.10 < hidden.float().mean() < 0.20
    assert (y[~hidden] == IGNORE).all() and (y[hidden] != IGNORE).all()  # targets exactly where characters are hidden
    xc, yc = causal_lm_batch(data, 4, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(yc[:, :-1], xc[:, 1:])  # the target is the next character


def test_char_lm_causal_model_ignores_the_future_and_the_masked_one_does_not():
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0)
    x = torch.randint(10, (2, 12))
    later = x.clone()
    later[:, 8:] = (later[:, 8:] + 1) % 10  # change only positions 8..11
    causal, masked = CharLM(cfg, 10, 12, causal=True).eval(), CharLM(cfg, 10, 12, causal=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(causal(x)[:, :8], causal(later)[:, :8])
        assert not torch.allclose(masked(x)[:, :8], masked(later)[:, :8])


def test_predict_hidden_character_contexts_and_errors():
    torch.manual_seed(0)
    model = CharLM(TransformerConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0), 10, 12, causal=False)
    windows = torch.randint(10, (20, 12))
    for ctx in ("both", "left"):
        assert 0.0 <= predict_hidden_character(model, windows, 6, ctx) <= 1.0
    with pytest.raises(ValueError, match="context"):
        predict_hidden_character(model, windows, 6, "right")
    with pytest.raises(ValueError, match="position"):
        predict_hidden_character(model, windows, 0, "both")

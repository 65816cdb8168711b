"""helpers.course.checkpoints: one layout, atomic save that skips unchanged files, safe load, 16-bit weights."""

import pytest
import torch

from builders import tiny_seq2seq
from helpers.course.checkpoints import (
    average_states,
    load_checkpoint,
    model_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)


def test_average_states_is_the_mean():
    a, b = tiny_seq2seq().state_dict(), {k: v + 2.0 for k, v in tiny_seq2seq().state_dict().items()}
    avg = average_states([a, b])
    torch.testing.assert_close(avg["lm_head.bias"], a["lm_head.bias"] + 1.0)


def test_the_committed_char_gpt_keeps_its_validation_loss_with_16_bit_weights():
    from helpers.course.checkpoints import load_char_gpt
    from helpers.course.datasets import load_dataset
    from helpers.course.scoring import evaluate_lm
    from helpers.course.utils import PROJECT_ROOT

    path = PROJECT_ROOT / "artifacts" / "checkpoints" / "char_gpt.pt"
    ckpt = load_checkpoint(path, kind="char-gpt")
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    model, tokenizer = load_char_gpt(path)
    ds = load_dataset()
    assert tokenizer.chars == ds.tokenizer.chars
    val_loss, _ = evaluate_lm(model, ds.val, model.cfg.block_size)  # the whole validation split, in float32
    recorded = ckpt["meta"]["summary"]["val_loss"]  # measured with the float32 weights at the end of training
    assert abs(val_loss - recorded) < 0.002


def test_saving_the_same_checkpoint_again_leaves_the_file_alone(tmp_path):
    model = tiny_seq2seq()
    path = save_checkpoint(model_checkpoint(model, {"vocab": ["a"]}), tmp_path / "m.pt")
    before = path.stat()
    again = save_checkpoint(model_checkpoint(model, {"vocab": ["a"]}), path)
    assert again == path and path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    with torch.no_grad():
        model.lm_head.bias.add_(1.0)
    save_checkpoint(model_checkpoint(model, {"vocab": ["a"]}), path)
    assert path.stat().st_ino != before.st_ino  # changed weights: a new file was renamed into place


def test_compact_weights_round_trip_and_refuse_values_float16_cannot_hold():
    model = tiny_seq2seq().float()
    ckpt = model_checkpoint(model, {"vocab": ["a"]})
    assert set(ckpt) == {"kind", "model", "config", "tokenizer", "meta"} and "lm_head.weight" not in ckpt["model"]
    rebuilt = model_from_checkpoint(ckpt)
    assert rebuilt.lm_head.weight is rebuilt.tgt_embed.weight and rebuilt.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(rebuilt.src_embed.weight, model.src_embed.weight, rtol=1e-3, atol=1e-4)
    with torch.no_grad():
        model.lm_head.bias[0] = 1e6
    with pytest.raises(ValueError, match="lm_head.bias has values beyond float16"):
        model_checkpoint(model, {"vocab": ["a"]})

"""The GPT model: shapes, causality, tied head, initial loss, KV-cache forward and optimiser groups."""

import math

import pytest
import torch

from builders import tiny_seq2seq
from helpers.course.checkpoints import model_checkpoint, model_from_checkpoint
from helpers.models import GPT, GPTConfig
from helpers.optim import make_adamw
from helpers.tokenizers import BOS_ID, EOS_ID, PAD_ID, CharTokenizer
from helpers.training import seq2seq_loss


def tiny(**kw):
    cfg = dict(vocab_size=11, block_size=16, d_model=32, n_heads=4, n_layers=2)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_shapes_and_initial_loss_near_uniform():
    model = tiny(vocab_size=65)
    idx, targets = torch.randint(65, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 65)
    assert abs(loss.item() - math.log(65)) < 0.05  # small init: close to the uniform guess


def test_head_is_tied_and_parameters_are_counted_once():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight
    c, v, t, f, layers = 32, 11, 16, 128, 2
    per_block = 4 * (c * c + c) + (c * f + f) + (f * c + c) + 2 * 2 * c
    expected = v * c + t * c + layers * per_block + 2 * c
    assert model.num_params() == expected
    assert model.num_params(include_positions=False) == expected - t * c


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny()
    idx = torch.randint(11, (1, 10))
    changed = idx.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:], atol=1e-3)


def test_fused_and_from_scratch_attention_agree():
    fast = tiny(use_sdpa=True)
    slow = tiny(use_sdpa=False)
    slow.load_state_dict(fast.state_dict())
    idx = torch.randint(11, (2, 16))
    assert torch.allclose(fast(idx)[0], slow(idx)[0], atol=1e-5)


def test_cached_forward_matches_full_forward():
    model = tiny().eval()
    idx = torch.randint(11, (2, 12))
    full, _ = model(idx)
    cache = model.new_cache()
    parts = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, i : i + 1], cache=cache)[0] for i in range(5, 12)]
    assert model.cache_length(cache) == 12
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_too_long_input_raises():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_config_validation():
    with pytest.raises(ValueError):
        GPTConfig(d_model=30, n_heads=4)
    assert GPTConfig(d_model=8, n_heads=2).d_ff == 32


def test_adamw_groups_put_tied_embedding_in_no_decay_once():
    model = tiny()
    opt = make_adamw(model, 1e-3, weight_decay=0.1)
    decay, no_decay = (g["params"] for g in opt.param_groups)
    ids = [id(p) for p in decay + no_decay]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.tok_emb.weight for p in no_decay)
    assert all(p.dim() == 2 for p in decay) and all(p is not model.tok_emb.weight for p in decay)
    assert any(p is model.blocks[0].ff.linear1.weight for p in decay)


def test_checkpoint_round_trip_with_16_bit_weights_and_the_tied_head_stored_once():
    model = tiny()
    ckpt = model_checkpoint(model, CharTokenizer("abcdefghijk"))
    assert "lm_head.weight" not in ckpt["model"] and ckpt["model"]["tok_emb.weight"].dtype == torch.float16
    rebuilt = model_from_checkpoint(ckpt)
    assert rebuilt.lm_head.weight is rebuilt.tok_emb.weight
    assert rebuilt.tok_emb.weight.dtype == torch.float32
    assert torch.allclose(rebuilt.tok_emb.weight, model.tok_emb.weight, rtol=1e-2, atol=1e-3)


def test_shapes_and_tied_embeddings():
    model = tiny_seq2seq()
    src, tgt = torch.randint(4, 13, (3, 5)), torch.randint(4, 11, (3, 6))
    assert model(src, tgt).shape == (3, 6, 11)
    assert model.lm_head.weight is model.tgt_embed.weight
    assert tiny_seq2seq(tie_embeddings=False).lm_head.weight is not tiny_seq2seq(tie_embeddings=False).tgt_embed.weight


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_source_padding_never_changes_any_output(use_sdpa):
    model = tiny_seq2seq(use_sdpa=use_sdpa)
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 4, 5, 6]])
    with torch.no_grad():
        ref = model(src, tgt)
        for n_pad in (1, 3):
            padded = torch.cat([src, torch.full((1, n_pad), PAD_ID)], dim=1)
            torch.testing.assert_close(model(padded, tgt), ref, rtol=1e-12, atol=1e-12)
            memory, mask = model.encode(padded)
            torch.testing.assert_close(memory[:, :4], model.encode(src)[0], rtol=1e-12, atol=1e-12)


def test_target_padding_never_changes_real_positions_and_batching_is_exact():
    model = tiny_seq2seq()
    src = torch.tensor([[5, 6, 7, EOS_ID, PAD_ID], [8, 9, 10, 11, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 4, 5, PAD_ID, PAD_ID], [BOS_ID, 6, 7, 8, 9]])
    with torch.no_grad():
        batched = model(src, tgt)
        alone0 = model(src[:1, :4], tgt[:1, :3])
        alone1 = model(src[1:], tgt[1:])
    torch.testing.assert_close(batched[0, :3], alone0[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(batched[1], alone1[0], rtol=1e-12, atol=1e-12)


def test_padding_changes_outputs_when_the_source_mask_is_removed():
    # The check above can fail: without the padding mask, pads are attended to and the outputs move.
    model = tiny_seq2seq()
    src, padded = torch.tensor([[5, 6, EOS_ID]]), torch.tensor([[5, 6, EOS_ID, PAD_ID, PAD_ID]])
    with torch.no_grad():
        x, xp = model.embed(model.src_embed, src), model.embed(model.src_embed, padded)
        assert not torch.allclose(model.encoder(xp)[:, :3], model.encoder(x), atol=1e-6)


def test_future_target_tokens_do_not_change_earlier_logits():
    model = tiny_seq2seq()
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    a, b = torch.tensor([[BOS_ID, 4, 5, 6]]), torch.tensor([[BOS_ID, 4, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(model(src, a)[:, :2], model(src, b)[:, :2], rtol=1e-12, atol=1e-12)


def test_loss_ignores_padding_and_unmasked_loss_differs():
    logits = torch.randn(2, 4, 11, dtype=torch.float64)
    tgt = torch.tensor([[4, 5, EOS_ID, PAD_ID], [6, EOS_ID, PAD_ID, PAD_ID]])
    real = tgt != PAD_ID
    by_hand = -torch.log_softmax(logits, -1).gather(-1, tgt[..., None])[..., 0][real].mean()
    torch.testing.assert_close(seq2seq_loss(logits, tgt), by_hand)
    assert not torch.isclose(seq2seq_loss(logits, tgt, ignore_padding=False), by_hand)
    changed = logits.clone()
    changed[tgt == PAD_ID] = 100.0 * torch.randn_like(changed[tgt == PAD_ID])
    torch.testing.assert_close(seq2seq_loss(changed, tgt), by_hand)  # padded positions contribute nothing
    assert seq2seq_loss(logits, tgt, label_smoothing=0.1) != seq2seq_loss(logits, tgt)

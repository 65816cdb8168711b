"""The GPT model: shapes, causality, tied head, initial loss, KV-cache forward and optimiser groups."""
import math

import pytest
import torch

from helpers.models import GPT, GPTConfig, gpt_from_checkpoint
from helpers.training import make_adamw


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
    parts = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, i:i + 1], cache=cache)[0] for i in range(5, 12)]
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


def test_checkpoint_round_trip_with_bf16_weights_and_untied_key_dropped():
    model = tiny()
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    rebuilt = gpt_from_checkpoint({"model_config": model.config_dict(), "model": state})
    assert rebuilt.lm_head.weight is rebuilt.tok_emb.weight
    assert rebuilt.tok_emb.weight.dtype == torch.float32
    assert torch.allclose(rebuilt.tok_emb.weight, model.tok_emb.weight, rtol=1e-2, atol=1e-3)

"""Rotary position embedding (RoPE): the rotation, its relative-position property and its use inside attention."""

import math

import pytest
import torch

from helpers.attention import MultiHeadAttention
from helpers.course.experiments import ExperimentConfig, ToyEncoder, run_experiment
from helpers.layers import DecoderBlock, EncoderBlock, TransformerConfig
from helpers.models import GPTBlock
from helpers.positional import (
    RotaryEmbedding,
    apply_rotary,
    make_positional,
    rotary_frequencies,
    rotary_table,
)

D64 = dict(dtype=torch.float64)


def complex_reference(x: torch.Tensor, offset: int, base: float = 10000.0) -> torch.Tensor:
    """RoPE written as complex multiplication: pair (2i, 2i+1) is z_i, multiplied by exp(j * pos * base^(-2i/D))."""
    t, d = x.shape[-2], x.shape[-1]
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())  # (..., T, D/2) complex
    exponents = torch.linspace(0.0, 1.0 - 2.0 / d, d // 2, **D64)  # 2i / D for i = 0..D/2-1
    theta = torch.exp(-math.log(base) * exponents)  # (D/2,)
    angles = torch.outer(torch.arange(t, **D64) + offset, theta)  # (T, D/2)
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).reshape(x.shape)


def rotated_score(q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> float:
    """Dot product of q rotated to position m with k rotated to position n (q, k: (D,))."""
    qm = apply_rotary(q.view(1, 1, 1, -1), offset=m)
    kn = apply_rotary(k.view(1, 1, 1, -1), offset=n)
    return (qm * kn).sum().item()


# ---------------------------------------------------------------- the rotation itself


def test_score_depends_only_on_relative_position():
    q, k = torch.randn(16, **D64), torch.randn(16, **D64)
    for delta in (0, 3, -5):
        pairs = [(m, m - delta) for m in (7, 12, 40, 1000) if m - delta >= 0]
        scores = [rotated_score(q, k, m, n) for m, n in pairs]
        for s in scores[1:]:
            assert s == pytest.approx(scores[0], abs=1e-10)
    different = [rotated_score(q, k, 10, 10 - delta) for delta in (0, 1, 2, 5, -3)]
    gaps = [abs(a - b) for i, a in enumerate(different) for b in different[i + 1 :]]
    assert min(gaps) > 1e-4  # the offset changes the score


def test_score_matrix_of_a_rotated_sequence_is_toeplitz():
    q, k = torch.randn(8, **D64), torch.randn(8, **D64)
    t = 9
    qs = apply_rotary(q.expand(1, 1, t, 8), offset=4)  # the same vector at positions 4..12
    ks = apply_rotary(k.expand(1, 1, t, 8), offset=4)
    scores = (qs @ ks.transpose(-2, -1))[0, 0]  # (T, T)
    for i in range(1, t):
        for j in range(1, t):
            assert scores[i, j].item() == pytest.approx(scores[i - 1, j - 1].item(), abs=1e-10)
    assert not torch.allclose(scores[0, 1], scores[1, 0])


@pytest.mark.parametrize("offset", [0, 5, 1234])
def test_matches_complex_reference(offset):
    x = torch.randn(2, 3, 7, 8, **D64)
    expected = complex_reference(x, offset)
    torch.testing.assert_close(apply_rotary(x, offset=offset), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(RotaryEmbedding(8)(x, offset=offset), expected, rtol=0, atol=1e-12)


def test_other_base_matches_reference():
    x = torch.randn(1, 2, 5, 6, **D64)
    torch.testing.assert_close(apply_rotary(x, 3, base=500.0), complex_reference(x, 3, base=500.0), rtol=0, atol=1e-12)


def test_frequencies_and_convention():
    theta = rotary_frequencies(8)
    assert theta.dtype == torch.float64 and theta.shape == (4,)
    torch.testing.assert_close(theta, torch.tensor([1.0, 0.1, 0.01, 0.001], **D64), rtol=1e-14, atol=0)
    x = torch.zeros(1, 1, 3, 4, **D64)
    x[..., 0] = 1.0  # the unit vector along dimension 0: position p turns it by p radians towards dimension 1
    out = apply_rotary(x)
    torch.testing.assert_close(out[0, 0, :, 0], torch.cos(torch.arange(3, **D64)))
    torch.testing.assert_close(out[0, 0, :, 1], torch.sin(torch.arange(3, **D64)))
    assert torch.all(out[..., 2:] == 0)  # the other pair is untouched
    cos, sin = rotary_table(3, 4, offset=2)
    torch.testing.assert_close(cos[:, 0], torch.cos(torch.arange(2, 5, **D64)))
    torch.testing.assert_close(sin[:, 1], torch.sin(0.01 * torch.arange(2, 5, **D64)))


def test_rotation_preserves_norms_of_every_pair():
    x = torch.randn(2, 3, 11, 10, **D64)
    out = apply_rotary(x, offset=17)
    pair_norms = lambda t: t.reshape(*t.shape[:-1], -1, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norms(out), pair_norms(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=1e-12)


def test_position_zero_is_the_identity():
    x = torch.randn(2, 3, 1, 8, **D64)
    assert torch.equal(apply_rotary(x), x)
    assert torch.equal(RotaryEmbedding(8)(x), x)
    assert not torch.allclose(apply_rotary(x, offset=1), x)


def test_odd_head_dimension_raises():
    with pytest.raises(ValueError, match="even head dimension"):
        apply_rotary(torch.randn(1, 2, 3, 5))
    with pytest.raises(ValueError, match="even head dimension"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="even"):
        MultiHeadAttention(12, 4, rope=True)  # d_head = 3
    with pytest.raises(ValueError, match="d_head .* must be even"):
        TransformerConfig(d_model=12, n_heads=4, rope=True)
    with pytest.raises(ValueError, match="offset"):
        apply_rotary(torch.randn(1, 1, 2, 4), offset=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtype_is_preserved(dtype):
    x = torch.randn(2, 2, 6, 8).to(dtype)
    for out in (apply_rotary(x, offset=3), RotaryEmbedding(8)(x, offset=3)):
        assert out.dtype == dtype
        expected = complex_reference(x.double(), 3).to(dtype)
        tol = 1e-12 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 2e-2)
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


def test_table_grows_and_stays_out_of_the_state_dict():
    emb = RotaryEmbedding(8, max_len=4)
    assert emb.cos.shape == (4, 4)
    x = torch.randn(1, 2, 10, 8, **D64)
    torch.testing.assert_close(emb(x, offset=3), complex_reference(x, 3), rtol=0, atol=1e-12)
    assert emb.cos.shape[0] >= 13
    assert emb.state_dict() == {} and len(list(emb.parameters())) == 0


def test_double_after_a_float_table_is_recomputed_in_float64():
    emb = RotaryEmbedding(8)
    emb(torch.randn(1, 1, 1000, 8))  # a float32 table, long enough for what follows
    emb.double()  # casts the buffers to float64 without adding precision
    x = torch.randn(1, 1, 50, 8, **D64)
    torch.testing.assert_close(emb(x, offset=900), complex_reference(x, 900), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- inside attention


def _pair(use_sdpa: bool = False) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    """A plain and a rope attention with the same weights (float64, eval mode)."""
    plain = MultiHeadAttention(16, 4, use_sdpa=use_sdpa).double().eval()
    rope = MultiHeadAttention(16, 4, use_sdpa=use_sdpa, rope=True).double().eval()
    rope.load_state_dict(plain.state_dict())  # strict: the rotary table is not in the state_dict
    return plain, rope


def test_rope_attention_is_not_permutation_equivariant():
    plain, rope = _pair()
    x = torch.randn(2, 6, 16, **D64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(plain(x[:, perm])[0], plain(x)[0][:, perm])  # no positions: equivariant
    diff = (rope(x[:, perm])[0] - rope(x)[0][:, perm]).abs().max()
    assert diff > 1e-3
    assert (rope(x)[0] - plain(x)[0]).abs().max() > 1e-3


def test_rope_attention_rotates_queries_and_keys_but_not_values():
    _, rope = _pair()
    x = torch.randn(2, 5, 16, **D64)
    q = apply_rotary(rope.split_heads(rope.q_proj(x)))  # (B, H, T, D)
    k = apply_rotary(rope.split_heads(rope.k_proj(x)))
    v = rope.split_heads(rope.v_proj(x))
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(rope.d_head), dim=-1)  # (B, H, T, T)
    expected = rope.out_proj(rope.merge_heads(w @ v))
    out, weights = rope(x, need_weights=True)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_kv_cached_decode_equals_full_causal_pass(use_sdpa):
    _, rope = _pair(use_sdpa)
    x = torch.randn(2, 9, 16, **D64)
    full, _ = rope(x, causal=True)
    cache = {}
    steps = [rope(x[:, :4], causal=True, cache=cache)[0]]  # a prompt of 4, then one token at a time
    steps += [rope(x[:, t : t + 1], causal=True, cache=cache)[0] for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-12)
    assert cache["k"].shape == (2, 4, 9, 4)


def test_shifting_every_position_changes_nothing():
    _, rope = _pair()
    x = torch.randn(2, 5, 16, **D64)
    cache = {}
    rope(torch.randn(2, 7, 16, **D64), cache=cache)  # 7 cached positions: x now sits at positions 7..11
    hide_cached = torch.arange(12) >= 7  # (T_k,): the new tokens see only each other
    shifted, _ = rope(x, mask=hide_cached.expand(2, 1, 5, 12), cache=cache)
    torch.testing.assert_close(shifted, rope(x)[0], rtol=1e-10, atol=1e-12)  # only relative positions matter


def test_rope_is_refused_in_cross_attention():
    _, rope = _pair()
    with pytest.raises(ValueError, match="self-attention only"):
        rope(torch.randn(1, 3, 16, **D64), context=torch.randn(1, 4, 16, **D64))


@pytest.mark.parametrize("causal", [False, True])
def test_from_scratch_path_equals_sdpa_path_with_rope(causal):
    slow = MultiHeadAttention(16, 4, rope=True).double().eval()
    fast = MultiHeadAttention(16, 4, use_sdpa=True, rope=True).double().eval()
    fast.load_state_dict(slow.state_dict())
    x = torch.randn(2, 7, 16, **D64)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False  # padding at the end of the second sequence
    for kwargs in ({}, {"mask": mask}):
        torch.testing.assert_close(
            fast(x, causal=causal, **kwargs)[0], slow(x, causal=causal, **kwargs)[0], rtol=1e-10, atol=1e-12
        )


def test_gpt_block_with_rope_decodes_with_a_cache():
    block = GPTBlock(TransformerConfig(d_model=16, n_heads=2, dropout=0.0, rope=True)).double().eval()
    x = torch.randn(2, 6, 16, **D64)
    full = block(x)
    cache = {}
    steps = [block(x[:, :2], cache=cache)] + [block(x[:, t : t + 1], cache=cache) for t in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-12)


def test_decoder_block_rotates_self_attention_only_and_decodes_with_a_cache():
    block = DecoderBlock(TransformerConfig(d_model=16, n_heads=2, dropout=0.0, rope=True)).double().eval()
    assert block.self_attn.rotary is not None and block.cross_attn.rotary is None
    x, memory = torch.randn(2, 5, 16, **D64), torch.randn(2, 8, 16, **D64)
    full = block(x, memory)
    cache = {}
    steps = [block(x[:, t : t + 1], memory, cache=cache) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- configs, checkpoints and the toy encoder

ENCODER_BLOCK_KEYS = {
    *(f"norms.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")),
    *(f"self_attn.{n}_proj.{p}" for n in ("q", "k", "v", "out") for p in ("weight", "bias")),
    *(f"ff.linear{i}.{p}" for i in (1, 2) for p in ("weight", "bias")),
}


def test_state_dict_keys_do_not_change_with_rope():
    off = EncoderBlock(TransformerConfig(d_model=16, n_heads=2))
    on = EncoderBlock(TransformerConfig(d_model=16, n_heads=2, rope=True))
    assert set(off.state_dict()) == ENCODER_BLOCK_KEYS  # the keys the course always had
    assert list(on.state_dict()) == list(off.state_dict())
    on.load_state_dict(off.state_dict())  # strict, both ways
    off.load_state_dict(on.state_dict())
    dec_off = DecoderBlock(TransformerConfig(d_model=16, n_heads=2))
    dec_on = DecoderBlock(TransformerConfig(d_model=16, n_heads=2, rope=True))
    assert list(dec_on.state_dict()) == list(dec_off.state_dict())
    assert TransformerConfig().rope is False and off.self_attn.rotary is None


def test_make_positional_explains_that_rope_lives_in_attention():
    with pytest.raises(ValueError, match="inside attention"):
        make_positional("rope", 8, 10)
    with pytest.raises(ValueError, match="unknown positional"):
        make_positional("rotary-ish", 8, 10)


def test_experiment_config_sets_rope_only_for_rope():
    assert ExperimentConfig(positional="rope").transformer_config().rope is True
    for kind in ("sinusoidal", "learned", "none"):
        assert ExperimentConfig(positional=kind).transformer_config().rope is False


def test_toy_encoder_with_rope_adds_nothing_to_embeddings_but_sees_positions():
    model = ToyEncoder(TransformerConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0), 10, "rope", 8).eval()
    assert model.pos is None
    assert all(layer.self_attn.rotary is not None for layer in model.encoder.layers)
    blind = ToyEncoder(TransformerConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.0), 10, "none", 8).eval()
    assert set(model.state_dict()) == set(blind.state_dict())
    x = torch.randint(10, (3, 7))
    perm = torch.tensor([6, 2, 0, 4, 1, 5, 3])
    with torch.no_grad():
        assert (model(x[:, perm]) - model(x)[:, perm]).abs().max() > 1e-4
        assert model(torch.randint(10, (2, 20))).shape == (2, 20, 10)  # longer than max_len: no table limit


def test_toy_encoder_with_rope_learns_to_sort_and_runs_on_longer_sequences():
    cfg = ExperimentConfig(
        positional="rope", seq_len=8, steps=150, d_model=32, n_heads=4, eval_size=200, eval_lens=(16,), lr=3e-3
    )
    result = run_experiment(cfg)
    blind = run_experiment(ExperimentConfig(**{**cfg.__dict__, "positional": "none"}))
    assert len(result.losses) == 150 and all(math.isfinite(v) for v in result.losses)
    assert result.metrics["train_loss"] < 0.6 * result.losses[0]
    assert result.metrics["val_loss"] < blind.metrics["val_loss"] - 0.5  # positions help a position-blind model
    assert 0.0 <= result.metrics["acc_T16"] <= 1.0


def test_linear_attention_keeps_the_rotary_positions():
    from helpers.attention_variants import LinearMultiHeadAttention, use_linear_attention

    torch.manual_seed(0)
    block = EncoderBlock(TransformerConfig(d_model=16, n_heads=2, dropout=0.0, rope=True))
    use_linear_attention(block)
    assert isinstance(block.self_attn, LinearMultiHeadAttention) and block.self_attn.rotary is not None
    x = torch.randn(1, 6, 16)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    # Without positions attention is permutation-equivariant; with rotary positions it is not.
    assert not torch.allclose(block(x)[:, perm], block(x[:, perm]), atol=1e-5)


def test_the_rotary_table_is_the_obvious_double_loop():
    """cos and sin of p * base^(-2i/D), position by position and pair by pair, as the derivation writes them."""
    d_head, base, offset, length = 6, 10000.0, 5, 7
    cos, sin = rotary_table(length, d_head, base, offset)
    for t in range(length):
        for i in range(d_head // 2):
            angle = (offset + t) * base ** (-2 * i / d_head)
            assert cos[t, i].item() == pytest.approx(math.cos(angle), abs=1e-12)
            assert sin[t, i].item() == pytest.approx(math.sin(angle), abs=1e-12)


def test_the_cached_rotary_module_equals_the_plain_function_at_every_offset():
    emb = RotaryEmbedding(8)  # its table grows as longer positions are asked for, and is reused
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    for offset in (0, 1, 7, 3, 40, 2):
        assert torch.equal(emb(x, offset=offset), apply_rotary(x, offset=offset))

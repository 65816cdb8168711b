"""Sampling strategies, input validation and the KV cache."""

import pytest
import torch

from builders import brute_force_best, tiny_seq2seq
from helpers.decoding import (
    beam_search,
    check_sampling_args,
    generate,
    generate_text,
    greedy_decode,
    next_token_probs,
    pick_next,
    strip_after_eos,
    top_k_filter,
    top_p_filter,
)
from helpers.models import GPT, GPTConfig
from helpers.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer

TEXT = "to be or not to be, that is the question\n"


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(set(TEXT)), block_size=24, d_model=32, n_heads=4, n_layers=2)).eval()


@pytest.fixture
def tok():
    return CharTokenizer.from_text(TEXT)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    assert torch.isfinite(top_p_filter(logits, 0.45)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.79)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(top_p_filter(logits, 0.85)).tolist() == [[True, True, False, True]]
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    cold, warm = next_token_probs(logits, 0.5), next_token_probs(logits, 2.0)
    assert cold[0, 0] > next_token_probs(logits)[0, 0] > warm[0, 0]
    assert torch.allclose(cold.sum(), torch.tensor(1.0))


def test_greedy_is_argmax_and_sampling_respects_filters():
    logits = torch.tensor([[0.1, 2.0, 1.9, -1.0]])
    assert pick_next(logits, greedy=True).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {pick_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 2}


def test_same_seed_same_text_and_different_seed_different_text(model, tok):
    a = generate_text(model, tok, "to be", 40, seed=1)
    b = generate_text(model, tok, "to be", 40, seed=1)
    c = generate_text(model, tok, "to be", 40, seed=2)
    assert a == b and a != c
    assert a.startswith("to be") and len(a) == 45


@pytest.mark.parametrize("kwargs", [dict(greedy=True), dict(temperature=0.8, top_k=5, top_p=0.9)])
def test_cache_gives_the_same_logits_and_tokens(model, kwargs):
    idx = torch.randint(model.cfg.vocab_size, (2, 5))
    out = {}
    for use_cache in (False, True):
        g = torch.Generator().manual_seed(3)
        out[use_cache] = generate(model, idx, 19, use_cache=use_cache, generator=g, return_logits=True, **kwargs)
    (tok_a, logits_a), (tok_b, logits_b) = out[False], out[True]
    assert logits_a.shape == (2, 19, model.cfg.vocab_size)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert torch.equal(tok_a, tok_b)


def test_cache_beyond_block_size_matches_until_full_and_keeps_going(model):
    idx = torch.randint(model.cfg.vocab_size, (1, 4))
    plain = generate(model, idx, 60, greedy=True, use_cache=False)
    cached = generate(model, idx, 60, greedy=True, use_cache=True)
    assert cached.shape == plain.shape == (1, 64)
    assert torch.equal(cached[:, :25], plain[:, :25])  # identical while the context fits in block_size


def test_bad_inputs_raise_value_error(model, tok):
    with pytest.raises(ValueError, match="non-empty"):
        generate_text(model, tok, "", 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_text(model, tok, "ROMEO!", 5)
    for kwargs in [
        dict(temperature=0.0),
        dict(temperature=-1.0),
        dict(top_k=0),
        dict(top_k=model.cfg.vocab_size + 1),
        dict(top_p=0.0),
        dict(top_p=1.5),
    ]:
        with pytest.raises(ValueError):
            generate_text(model, tok, "to", 5, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), -1)
    with pytest.raises(ValueError, match="token ids"):
        generate(model, torch.full((1, 2), 99), 1)
    check_sampling_args(10, 1.0, 10, 1.0)  # the edges of the valid ranges are accepted


def test_long_prompt_is_cropped_to_block_size(model, tok):
    prompt = TEXT * 2  # 82 characters, block_size is 24
    out = generate_text(model, tok, prompt, 10, greedy=True)
    assert out.startswith(prompt) and len(out) == len(prompt) + 10
    assert out == prompt + generate_text(model, tok, prompt[-24:], 10, greedy=True)[24:]


@pytest.mark.parametrize(
    "kwargs", [dict(greedy=True), dict(temperature=0.8, top_k=5, top_p=0.9, seed=4), dict(seed=1, use_cache=False)]
)
def test_streamed_tokens_equal_generate_text(model, tok, kwargs):
    from helpers.decoding import prompt_ids

    kwargs = dict(kwargs)
    seed = kwargs.pop("seed", None)
    pieces = []
    idx, generator = prompt_ids(model, tok, "to be", seed)
    generate(model, idx, 60, generator=generator, on_token=lambda ids: pieces.append(tok.decode(ids[0])), **kwargs)
    assert len(pieces) == 60 and all(len(p) == 1 for p in pieces)  # 60 > block_size: the cache is rebuilt
    assert "to be" + "".join(pieces) == generate_text(model, tok, "to be", 60, seed=seed, **kwargs)


def test_endless_generation_stops_when_the_listener_stops_and_restores_the_mode(model, tok):
    from helpers.decoding import prompt_ids

    class Enough(Exception):
        pass

    pieces = []

    def listen(ids):
        pieces.append(tok.decode(ids[0]))
        assert model.training is False  # generating in eval mode
        if len(pieces) == 30:
            raise Enough

    model.train()
    idx, generator = prompt_ids(model, tok, "to be", 2)
    with pytest.raises(Enough):
        generate(model, idx, None, generator=generator, on_token=listen)
    assert model.training is True
    assert "to be" + "".join(pieces) == generate_text(model, tok, "to be", 30, seed=2)


def test_cached_greedy_equals_full_recomputation():
    model = tiny_seq2seq()
    src = torch.tensor([[5, 6, 7, EOS_ID, PAD_ID], [8, 9, 10, 11, EOS_ID]])
    out = greedy_decode(model, src, max_len=7)
    with torch.no_grad():  # recompute each step from scratch, without caches
        seq = torch.full((2, 1), BOS_ID)
        for _ in range(out.shape[1]):
            seq = torch.cat([seq, model(src, seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    for row, ref in zip(strip_after_eos(out), strip_after_eos(seq[:, 1:])):
        assert row == ref


def test_beam_width_one_equals_greedy():
    model = tiny_seq2seq(tgt_vocab_size=9)
    src = torch.randint(4, 13, (6, 7))
    src[:, -1] = EOS_ID
    src[2, 4:] = torch.tensor([EOS_ID, PAD_ID, PAD_ID])
    greedy = greedy_decode(model, src, max_len=12)
    for alpha in (0.0, 1.0):
        assert strip_after_eos(beam_search(model, src, beam=1, alpha=alpha, max_len=12)) == strip_after_eos(greedy)


def test_wide_beam_finds_the_best_sequence_and_scores_are_sorted():
    model = tiny_seq2seq(tgt_vocab_size=6)  # specials + two words
    with torch.no_grad():
        for never in (PAD_ID, BOS_ID, UNK_ID):  # leave two words and <eos>
            model.lm_head.bias[never] -= 50.0
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    # 64 beams keep every candidate up to 5 tokens (at most 15 finished + 16 * 3 live): the search is exhaustive
    seqs, scores = beam_search(model, src, beam=64, alpha=0.6, max_len=5, return_all=True)
    finite = scores[torch.isfinite(scores)]
    assert torch.all(finite[:-1] >= finite[1:])
    best, best_score = brute_force_best(model, src, 5, 0.6)
    finished = [i for i in range(64) if EOS_ID in seqs[0, i].tolist()]  # best first, as the scores are sorted
    assert strip_after_eos(seqs[:, finished[0]])[0] == best
    assert scores[0, finished[0]].item() == pytest.approx(best_score, abs=1e-6)
    assert scores[0, 0].item() >= best_score - 1e-6

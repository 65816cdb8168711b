"""The encoder-decoder: padding never changes an output, the masked loss, caching, greedy vs beam, the synthetic task."""
import pytest
import torch

from helpers.seq2seq import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, Seq2Seq, Seq2SeqConfig, TrainConfig, average_states, beam_search,
                             greedy_decode, length_penalty, seq2seq_loss, sequence_accuracy, strip_after_eos,
                             synthetic_batch, train_seq2seq)


def tiny(**kw):
    base = dict(src_vocab_size=13, tgt_vocab_size=11, d_model=16, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=32,
                dropout=0.0, max_len=24)
    base.update(kw)
    torch.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(**base)).double().eval()


def test_shapes_and_tied_embeddings():
    model = tiny()
    src, tgt = torch.randint(4, 13, (3, 5)), torch.randint(4, 11, (3, 6))
    assert model(src, tgt).shape == (3, 6, 11)
    assert model.generator.weight is model.tgt_embed.weight
    assert tiny(tie_embeddings=False).generator.weight is not tiny(tie_embeddings=False).tgt_embed.weight


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_source_padding_never_changes_any_output(use_sdpa):
    model = tiny(use_sdpa=use_sdpa)
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
    model = tiny()
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
    model = tiny()
    src, padded = torch.tensor([[5, 6, EOS_ID]]), torch.tensor([[5, 6, EOS_ID, PAD_ID, PAD_ID]])
    with torch.no_grad():
        x, xp = model.embed(model.src_embed, src), model.embed(model.src_embed, padded)
        assert not torch.allclose(model.encoder(xp)[:, :3], model.encoder(x), atol=1e-6)


def test_future_target_tokens_do_not_change_earlier_logits():
    model = tiny()
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


def test_cached_greedy_equals_full_recomputation():
    model = tiny()
    src = torch.tensor([[5, 6, 7, EOS_ID, PAD_ID], [8, 9, 10, 11, EOS_ID]])
    out = greedy_decode(model, src, max_len=7)
    with torch.no_grad():  # recompute each step from scratch, without caches
        seq = torch.full((2, 1), BOS_ID)
        for _ in range(out.shape[1]):
            seq = torch.cat([seq, model(src, seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    for row, ref in zip(strip_after_eos(out), strip_after_eos(seq[:, 1:])):
        assert row == ref


def test_beam_width_one_equals_greedy():
    model = tiny(tgt_vocab_size=9)
    src = torch.randint(4, 13, (6, 7))
    src[:, -1] = EOS_ID
    src[2, 4:] = torch.tensor([EOS_ID, PAD_ID, PAD_ID])
    greedy = greedy_decode(model, src, max_len=12)
    for alpha in (0.0, 1.0):
        assert strip_after_eos(beam_search(model, src, beam=1, alpha=alpha, max_len=12)) == strip_after_eos(greedy)


def brute_force_best(model, src, max_len, alpha):
    """Score every sequence over a 2-word vocabulary (+ <eos>) up to max_len tokens; return the best."""
    import itertools

    best, best_score = None, -float("inf")
    with torch.no_grad():
        for n in range(max_len):
            for words in itertools.product([4, 5], repeat=n):
                seq = list(words) + [EOS_ID]
                logp = torch.log_softmax(model(src, torch.tensor([[BOS_ID] + seq[:-1]])), -1)[0]
                score = sum(logp[i, t].item() for i, t in enumerate(seq)) / length_penalty(torch.tensor(len(seq)), alpha).item()
                if score > best_score:
                    best, best_score = seq[:-1], score
    return best, best_score


def test_wide_beam_finds_the_best_sequence_and_scores_are_sorted():
    model = tiny(tgt_vocab_size=6)  # specials + two words
    with torch.no_grad():
        for never in (PAD_ID, BOS_ID, UNK_ID):  # leave two words and <eos>
            model.generator.bias[never] -= 50.0
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


def test_synthetic_batches_and_sequence_accuracy():
    gen = torch.Generator().manual_seed(0)
    src, tgt = synthetic_batch("reverse", 4, n_symbols=5, min_len=2, max_len=5, generator=gen)
    for s, t in zip(strip_after_eos(src), strip_after_eos(tgt[:, 1:])):
        assert t == s[::-1] and all(4 <= x < 9 for x in s)
    assert sequence_accuracy(tgt[:, 1:], tgt) == 1.0
    wrong = tgt[:, 1:].clone()
    wrong[0, 0] = 4 if wrong[0, 0] != 4 else 5
    assert sequence_accuracy(wrong, tgt) == 0.75


def test_copy_task_is_learned_quickly():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = Seq2SeqConfig(12, 12, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=64, dropout=0.0, max_len=16)
    model = Seq2Seq(cfg)
    batches = iter(lambda: synthetic_batch("copy", 32, 8, 2, 6, gen), None)
    train_seq2seq(model, batches, TrainConfig(steps=250, lr=3e-3, warmup=20), log=lambda *_: None)
    src, tgt = synthetic_batch("copy", 100, 8, 2, 6, torch.Generator().manual_seed(1))
    assert sequence_accuracy(greedy_decode(model, src, 8), tgt) >= 0.9


def test_average_states_is_the_mean():
    a, b = tiny().state_dict(), {k: v + 2.0 for k, v in tiny().state_dict().items()}
    avg = average_states([a, b])
    torch.testing.assert_close(avg["generator.bias"], a["generator.bias"] + 1.0)

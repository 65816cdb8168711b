"""Encoder-decoder transformer, masked loss, training loop, greedy and beam search, synthetic tasks (introduced in 08_translation)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import padding_mask
from helpers.dropout import Dropout
from helpers.layers import Decoder, Encoder, TransformerConfig
from helpers.positional import SinusoidalPositionalEncoding
from helpers.training import make_adamw, warmup_cosine

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3  # the same ids as helpers.translation's vocabularies


@dataclass
class Seq2SeqConfig:
    """Sizes of an encoder-decoder transformer."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 128  # width of every token vector
    n_heads: int = 4  # attention heads per layer
    n_enc_layers: int = 2  # encoder blocks
    n_dec_layers: int = 2  # decoder blocks
    d_ff: int = 512  # feed-forward hidden width
    dropout: float = 0.1  # dropout on embeddings, attention weights, sublayer outputs and in the FFN
    max_len: int = 64  # longest source or target sequence (positions)
    tie_embeddings: bool = True  # the output projection reuses the target embedding matrix
    norm_first: bool = True  # Pre-LN blocks
    use_sdpa: bool = False  # PyTorch's fused attention kernel for training speed (proven equal in 05's tests)

    def block_config(self, n_layers: int) -> TransformerConfig:
        """The helpers.layers configuration for a stack of n_layers blocks."""
        return TransformerConfig(d_model=self.d_model, n_heads=self.n_heads, n_layers=n_layers, d_ff=self.d_ff,
                                 dropout=self.dropout, norm_first=self.norm_first, use_sdpa=self.use_sdpa)


class Seq2Seq(nn.Module):
    """Embeddings * sqrt(d_model) + sinusoidal positions -> Encoder; Decoder with cross-attention -> vocabulary logits."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.pos = SinusoidalPositionalEncoding(cfg.d_model, cfg.max_len)
        self.drop = Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.block_config(cfg.n_enc_layers))
        self.decoder = Decoder(cfg.block_config(cfg.n_dec_layers))
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)
        if cfg.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=cfg.d_model ** -0.5)  # after the sqrt(d_model) scale: unit variance
            with torch.no_grad():
                emb.weight[PAD_ID].zero_()

    def embed(self, table: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, C): scaled embeddings plus positions offset..offset+T-1, then dropout."""
        return self.drop(self.pos(table(ids) * math.sqrt(self.cfg.d_model), offset=offset))

    def encode(self, src: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, C) and the source padding mask (B, 1, 1, S)."""
        src_mask = padding_mask(src, PAD_ID)
        return self.encoder(self.embed(self.src_embed, src), mask=src_mask, need_weights=need_weights), src_mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, caches: list[dict] | None = None,
               offset: int = 0, need_weights: bool = False) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V); causal + target padding masks, cross-attention under src_mask."""
        tgt_mask = padding_mask(tgt_in, PAD_ID) if caches is None else None  # (B, 1, 1, T); the blocks add causality
        h = self.decoder(self.embed(self.tgt_embed, tgt_in, offset), memory, tgt_mask=tgt_mask, memory_mask=src_mask,
                         need_weights=need_weights, caches=caches)
        return self.generator(h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) = <bos> y_1 ... -> logits (B, T, V) predicting y_1 ... <eos>."""
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    @torch.no_grad()
    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor) -> list[torch.Tensor]:
        """Per decoder layer, the cross-attention weights (B, H, T, S) for a teacher-forced target (on the model's device)."""
        device = model_device(self)
        src, tgt_in = src.to(device), tgt_in.to(device)
        memory, src_mask = self.encode(src)
        self.decode(tgt_in, memory, src_mask, need_weights=True)
        return [layer.attn_weights["cross"] for layer in self.decoder.layers]


def seq2seq_loss(logits: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0,
                 ignore_padding: bool = True) -> torch.Tensor:
    """Mean token cross-entropy of logits (B, T, V) against tgt_out (B, T), skipping <pad> positions by default."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                           ignore_index=PAD_ID if ignore_padding else -100, label_smoothing=label_smoothing)


# ---------------------------------------------------------------- decoding


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


def _new_caches(model: Seq2Seq) -> list[dict]:
    """One empty key/value cache per decoder layer."""
    return [{} for _ in model.decoder.layers]


def _reorder_caches(caches: list[dict], index: torch.Tensor) -> None:
    """Keep the cached keys and values of the rows in `index` (beam search picks new parents each step)."""
    for cache in caches:
        for part in cache.values():
            for name in ("k", "v"):
                if name in part:
                    part[name] = part[name].index_select(0, index)


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src: torch.Tensor, max_len: int = 40) -> torch.Tensor:
    """Pick the most likely next token until every row has produced <eos>; returns (B, <= max_len) ids without <bos>.

    src is moved to the model's device; the output ids are on that device.
    """
    model.eval()
    src = src.to(model_device(model))
    max_len = min(max_len, model.cfg.max_len)
    memory, src_mask = model.encode(src)
    b = src.shape[0]
    caches = _new_caches(model)
    token = torch.full((b, 1), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    out = []
    for t in range(max_len):
        logits = model.decode(token, memory, src_mask, caches=caches, offset=t)[:, -1]  # (B, V): only the new position
        token = logits.argmax(-1).masked_fill(done, PAD_ID)[:, None]  # (B, 1)
        out.append(token)
        done |= token[:, 0] == EOS_ID
        if done.all():
            break
    return torch.cat(out, dim=1)


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT length normalisation ((5 + length) / 6) ** alpha; alpha = 0 ranks by total log-probability."""
    return ((5.0 + length.float()) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model: Seq2Seq, src: torch.Tensor, beam: int = 4, alpha: float = 0.6, max_len: int = 40,
                return_all: bool = False):
    """Batched beam search: keep the `beam` best hypotheses per sentence, ranked by log-prob / length_penalty.

    A hypothesis that produced <eos> is frozen (it extends only with <pad> at no cost) and keeps competing.
    Returns (B, T) ids of the best hypothesis per sentence, or with return_all the (B, beam, T) hypotheses and
    their normalised scores (B, beam), best first. src is moved to the model's device; the outputs are on that device.
    """
    model.eval()
    src = src.to(model_device(model))
    max_len = min(max_len, model.cfg.max_len)
    b, k = src.shape[0], beam
    memory, src_mask = model.encode(src)
    memory = memory.repeat_interleave(k, dim=0)  # (B, S, C) -> (B*K, S, C)
    src_mask = src_mask.repeat_interleave(k, dim=0)
    caches = _new_caches(model)
    dev = src.device
    seqs = torch.full((b * k, 1), BOS_ID, dtype=torch.long, device=dev)
    logp_sum = torch.zeros(b, k, device=dev)
    logp_sum[:, 1:] = float("-inf")  # all beams start identical: keep one so the first step does not repeat it
    lengths = torch.zeros(b, k, dtype=torch.long, device=dev)
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    for t in range(max_len):
        logits = model.decode(seqs[:, -1:], memory, src_mask, caches=caches, offset=t)[:, -1]  # (B*K, V)
        logp = torch.log_softmax(logits.float(), dim=-1).view(b, k, -1)  # (B, K, V)
        v = logp.shape[-1]
        frozen = torch.full_like(logp, float("-inf"))
        frozen[..., PAD_ID] = 0.0
        logp = torch.where(finished[..., None], frozen, logp)
        cand = (logp_sum[..., None] + logp).view(b, k * v)  # (B, K*V) total log-probs of every extension
        cand_len = (lengths + (~finished).long())[..., None].expand(b, k, v).reshape(b, k * v)
        ranked = cand / length_penalty(cand_len, alpha)
        ranked = ranked.masked_fill(torch.isneginf(cand), float("-inf"))
        _, top = ranked.topk(k, dim=-1)  # (B, K)
        parent, token = top // v, top % v
        logp_sum = cand.gather(1, top)
        lengths = cand_len.gather(1, top)
        finished = finished.gather(1, parent) | (token == EOS_ID)
        rows = (parent + torch.arange(b, device=dev)[:, None] * k).view(-1)  # (B*K,) rows of the parents
        seqs = torch.cat([seqs.index_select(0, rows), token.view(-1, 1)], dim=1)
        _reorder_caches(caches, rows)
        if finished.all():
            break
    scores = logp_sum / length_penalty(lengths, alpha)
    scores, order = scores.sort(dim=-1, descending=True)
    seqs = seqs[:, 1:].view(b, k, -1).gather(1, order[..., None].expand(b, k, seqs.shape[1] - 1))
    return (seqs, scores) if return_all else seqs[:, 0]


def strip_after_eos(ids: torch.Tensor) -> list[list[int]]:
    """(B, T) decoder output -> id lists without <eos> and what follows it."""
    out = []
    for row in ids.tolist():
        out.append(row[:row.index(EOS_ID)] if EOS_ID in row else [i for i in row if i != PAD_ID])
    return out


# ---------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Optimisation settings for train_seq2seq."""

    steps: int = 1000  # optimiser steps
    lr: float = 1e-3  # peak learning rate
    warmup: int = 100  # linear warmup steps, then cosine decay
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    label_smoothing: float = 0.0  # spread this much target probability over the whole vocabulary
    grad_clip: float = 1.0  # clip the gradient norm
    min_lr_ratio: float = 0.05  # the cosine decays to lr * min_lr_ratio
    max_seconds: float | None = None  # stop early when the time budget is spent


def train_seq2seq(model: Seq2Seq, batches, cfg: TrainConfig, eval_every: int | None = None, evaluate=None,
                  log=print, device: torch.device | str | None = None) -> dict:
    """Teacher-forced training with AdamW and warmup + cosine; returns the loss history and timing.

    batches yields (src (B, S), tgt (B, T)) with tgt = <bos> ... <eos>; evaluate(step) -> dict is called
    every eval_every steps (and at the end), in eval mode, and its results are kept in history["evals"].
    Each batch is moved to `device` (default: the model's device), where the model must already be.
    """
    device = model_device(model) if device is None else torch.device(device)
    opt = make_adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.warmup, cfg.steps, cfg.min_lr_ratio))
    history = {"step": [], "loss": [], "evals": []}
    start, train_seconds = time.perf_counter(), 0.0
    tic = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        model.train()
        src, tgt = next(batches)
        src, tgt = src.to(device), tgt.to(device)
        logits = model(src, tgt[:, :-1])  # teacher forcing: the input is the target shifted right
        loss = seq2seq_loss(logits, tgt[:, 1:], cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        out_of_time = cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == cfg.steps or out_of_time):
            train_seconds += time.perf_counter() - tic
            result = dict(evaluate(step), step=step)
            history["evals"].append(result)
            log(f"step {step:5d}  loss {sum(history['loss'][-eval_every:]) / min(eval_every, step):.3f}  " +
                "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items() if k != "step"))
            tic = time.perf_counter()
        if out_of_time:
            break
    train_seconds += time.perf_counter() - tic
    history["train_seconds"] = train_seconds
    history["wall_seconds"] = time.perf_counter() - start
    return history


def average_states(states: list[dict]) -> dict:
    """Element-wise mean of several state_dicts of the same model (checkpoint averaging)."""
    return {name: torch.stack([s[name].float() for s in states]).mean(0).to(states[0][name].dtype) for name in states[0]}


def state_snapshot(model: nn.Module) -> dict:
    """A detached copy of a model's parameters and buffers."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- synthetic task


def synthetic_batch(task: str, batch_size: int, n_symbols: int, min_len: int, max_len: int,
                    generator: torch.Generator, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbol sequences (ids 4..3+n_symbols) and their copy or reverse, padded: src (B, S), tgt (B, T).

    The numbers are drawn on the CPU with `generator` (the same batch on every device), then moved to `device`.
    """
    if task not in ("copy", "reverse"):
        raise ValueError(f"task must be 'copy' or 'reverse', got {task!r}")
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    src = torch.full((batch_size, max_len + 1), PAD_ID, dtype=torch.long)
    tgt = torch.full((batch_size, max_len + 2), PAD_ID, dtype=torch.long)
    tgt[:, 0] = BOS_ID
    for i, n in enumerate(lengths.tolist()):
        seq = torch.randint(4, 4 + n_symbols, (n,), generator=generator)
        out = seq if task == "copy" else seq.flip(0)
        src[i, :n], src[i, n] = seq, EOS_ID
        tgt[i, 1:n + 1], tgt[i, n + 1] = out, EOS_ID
    return (src, tgt) if device is None else (src.to(device), tgt.to(device))


def sequence_accuracy(pred: torch.Tensor, tgt: torch.Tensor) -> float:
    """Fraction of rows whose decoded ids (up to <eos>) equal the target's (tgt = <bos> ... <eos> <pad>...)."""
    want = strip_after_eos(tgt[:, 1:])
    got = strip_after_eos(pred)
    return sum(g == w for g, w in zip(got, want)) / len(want)


def config_dict(cfg) -> dict:
    """A dataclass as a plain dict, for checkpoints."""
    return asdict(cfg)

"""Toy tasks, a small encoder model and seeded runs for controlled ablations (introduced in 10_experiments)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import causal_mask
from helpers.course.datasets import get_batch
from helpers.course.speedups import use_speedups
from helpers.course.utils import set_seed
from helpers.decoding import model_device
from helpers.layers import Encoder, TransformerConfig
from helpers.positional import ATTENTION_POSITIONAL_ENCODINGS, make_positional
from helpers.training import IGNORE, TrainConfig, token_loss, train

TASKS = ("sort", "sort_desc")


def make_task_batch(
    task: str,
    batch: int,
    seq_len: int,
    n_symbols: int = 10,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random digit sequences x (B, T) and their targets y (B, T): x sorted ascending ("sort") or descending.

    The digits are drawn on the CPU (the same batch on every device), then moved to `device` when one is given.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    x = torch.randint(n_symbols, (batch, seq_len), generator=generator)  # (B, T)
    y = x.sort(dim=1, descending=(task == "sort_desc")).values  # position i holds the i-th smallest (or largest)
    return (x, y) if device is None else (x.to(device), y.to(device))


class ToyEncoder(nn.Module):
    """Token embedding + positional encoding ("sinusoidal", "learned", "rope", "none") + Encoder + a per-position head.

    "rope" adds nothing to the embeddings: the encoder's self-attention rotates queries and keys (cfg.rope=True).
    """

    def __init__(self, cfg: TransformerConfig, n_symbols: int, positional: str = "sinusoidal", max_len: int = 64):
        super().__init__()
        if positional == "rope" and not cfg.rope:
            cfg = replace(cfg, rope=True)
        self.d_model = cfg.d_model
        self.embed = nn.Embedding(n_symbols, cfg.d_model)
        in_attention = positional == "none" or positional in ATTENTION_POSITIONAL_ENCODINGS
        self.pos = None if in_attention else make_positional(positional, cfg.d_model, max_len)
        self.encoder = Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, n_symbols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) token ids -> logits (B, T, n_symbols)."""
        h = self.embed(x) * math.sqrt(self.d_model)  # (B, T) -> (B, T, C)
        if self.pos is not None:
            h = self.pos(h)
        return self.head(self.encoder(h))  # (B, T, C) -> (B, T, n_symbols)


@dataclass
class ExperimentConfig:
    """One controlled run: task, model, optimiser and training length."""

    task: str = "sort"  # "sort" or "sort_desc"
    seq_len: int = 8  # training sequence length
    n_symbols: int = 10  # digits 0..9
    d_model: int = 64  # token-vector width
    n_heads: int = 4  # attention heads
    n_layers: int = 1  # encoder blocks
    d_ff: int | None = None  # FFN width; None means 4 * d_model
    dropout: float = 0.0  # dropout in every block
    norm_first: bool = True  # Pre-LN (True) or Post-LN (False)
    residual: bool = True  # residual connections around every sublayer (False: the sum drops its input)
    positional: str = "sinusoidal"  # "sinusoidal", "learned", "rope" (rotary, inside attention) or "none"
    max_len: int = 64  # longest sequence the positional encoding covers
    lr: float = 1e-3  # peak learning rate of Adam
    warmup_steps: int = 0  # linear warm-up steps (0: the full rate from the first step)
    layer_decay: float = 1.0  # layer-wise learning-rate decay factor (1.0: the same rate everywhere)
    weight_decay: float = 0.0  # AdamW weight decay
    steps: int = 600  # optimiser steps
    batch_size: int = 64  # sequences per step
    train_size: int | None = None  # a fixed training set of this many sequences (None: fresh data every step)
    eval_size: int = 1000  # validation sequences
    eval_lens: tuple = ()  # extra sequence lengths to evaluate on after training
    seed: int = 0  # seeds the model, the data and the batch order

    def transformer_config(self) -> TransformerConfig:
        """The TransformerConfig of the encoder stack."""
        return TransformerConfig(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            norm_first=self.norm_first,
            residual=self.residual,
            rope=self.positional == "rope",
        )


@dataclass
class ExperimentResult:
    """What a run measured: the training-loss curve and the final train/validation figures."""

    config: ExperimentConfig
    losses: list[float] = field(default_factory=list)  # training loss at every step
    metrics: dict = field(default_factory=dict)  # train_loss, val_loss, val_acc, val_seq_acc, acc_T<n>, ...
    model: nn.Module | None = None

    @property
    def diverged(self) -> bool:
        """True when the loss became NaN or infinite, or ended above where it started (nothing learnt)."""
        finite = all(math.isfinite(v) for v in self.losses)
        return not finite or self.metrics.get("train_loss", math.inf) >= self.losses[0]


def layerwise_lr_groups(model: ToyEncoder, lr: float, decay: float) -> list[dict]:
    """Parameter groups with lr * decay^depth: the head gets lr, each lower block one more factor, embeddings least."""
    blocks = list(model.encoder.layers)
    n = len(blocks)
    groups = [{"params": list(model.head.parameters()) + list(model.encoder.norm.parameters()), "lr": lr}]
    for i, block in enumerate(blocks):  # block n-1 sits just below the head
        groups.append({"params": list(block.parameters()), "lr": lr * decay ** (n - i)})
    low = list(model.embed.parameters()) + (list(model.pos.parameters()) if model.pos is not None else [])
    groups.append({"params": low, "lr": lr * decay ** (n + 1)})
    seen = {id(p) for g in groups for p in g["params"]}
    missing = [name for name, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"parameters left out of the groups: {missing}")
    return [g for g in groups if g["params"]]


@torch.no_grad()
def task_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Loss, per-token accuracy and whole-sequence accuracy of a model on (x, y), moved to the model's device."""
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    was_training = model.training
    model.eval()
    logits = model(x)  # (N, T, n_symbols)
    model.train(was_training)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    correct = logits.argmax(dim=-1) == y  # (N, T)
    return {"loss": loss, "acc": correct.float().mean().item(), "seq_acc": correct.all(dim=1).float().mean().item()}


def run_experiment(
    cfg: ExperimentConfig,
    init_state: dict | None = None,
    keep_model: bool = False,
    device: torch.device | str | None = None,
) -> ExperimentResult:
    """Train a ToyEncoder as cfg says (seeded) on `device` (default CPU) and return its loss curve and final metrics.

    The weights are initialised and every batch is drawn on the CPU with seeded generators, then moved to `device`,
    so the data and the starting point are the same on every device.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    set_seed(cfg.seed)
    model = ToyEncoder(cfg.transformer_config(), cfg.n_symbols, cfg.positional, cfg.max_len)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    data_gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    val_x, val_y = make_task_batch(cfg.task, cfg.eval_size, cfg.seq_len, cfg.n_symbols, data_gen, device)
    train_x = train_y = None
    if cfg.train_size is not None:
        train_x, train_y = make_task_batch(cfg.task, cfg.train_size, cfg.seq_len, cfg.n_symbols, data_gen, device)
    groups = layerwise_lr_groups(model, cfg.lr, cfg.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_gen = torch.Generator().manual_seed(20_000 + cfg.seed)

    def next_batch():
        if train_x is None:
            return make_task_batch(cfg.task, cfg.batch_size, cfg.seq_len, cfg.n_symbols, batch_gen, device)
        idx = torch.randint(cfg.train_size, (cfg.batch_size,), generator=batch_gen).to(device)
        return train_x[idx], train_y[idx]

    # Linear warm-up, then the same rate to the end (min_lr_ratio=1.0); no clipping, as in the 2017 setups.
    train_cfg = TrainConfig(
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        min_lr_ratio=1.0,
        weight_decay=cfg.weight_decay,
        grad_clip=0.0,
        seed=cfg.seed,
    )
    use_speedups(model, train_cfg)
    history = train(model, next_batch, token_loss, train_cfg, optimizer=optimizer)
    result = ExperimentResult(cfg, losses=history["loss"])
    fit_x, fit_y = (train_x, train_y) if train_x is not None else (val_x[:0], val_y[:0])
    train_eval = task_scores(model, fit_x, fit_y) if train_x is not None else None
    val = task_scores(model, val_x, val_y)
    tail = [v for v in result.losses[-20:] if math.isfinite(v)]
    result.metrics = {
        "train_loss": train_eval["loss"] if train_eval else (sum(tail) / len(tail) if tail else math.inf),
        "val_loss": val["loss"],
        "val_acc": val["acc"],
        "val_seq_acc": val["seq_acc"],
    }
    if train_eval:
        result.metrics["train_acc"] = train_eval["acc"]
    for t in cfg.eval_lens:
        x, y = make_task_batch(
            cfg.task, cfg.eval_size, t, cfg.n_symbols, torch.Generator().manual_seed(30_000 + t), device
        )
        result.metrics[f"acc_T{t}"] = task_scores(model, x, y)["acc"]
    if keep_model:
        result.model = model
    return result


def run_seeds(cfg: ExperimentConfig, seeds, **kwargs) -> list[ExperimentResult]:
    """Run the same configuration once per seed (kwargs, such as device=, go to run_experiment)."""
    return [run_experiment(replace(cfg, seed=s), **kwargs) for s in seeds]


def result_rows(results: list[ExperimentResult], *fields: str) -> list[dict]:
    """One dict per run: the named config fields, the seed and every metric (for a pandas DataFrame)."""
    return [{**{f: getattr(r.config, f) for f in fields}, "seed": r.config.seed, **r.metrics} for r in results]


def spread(values) -> str:
    """Format numbers as "mean [min–max]" (just the number when there is one)."""
    values = list(values)
    mean = sum(values) / len(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} [{min(values):.2f}–{max(values):.2f}]"


# ---------------------------------------------------------------- encoder-only against decoder-only (10_experiments §7)


class CharLM(nn.Module):
    """Characters -> per-position logits through the course's Encoder: bidirectional (BERT-style) or causal (GPT-style).

    The embedding has one extra id, `mask_id` = vocab_size, that stands for a hidden character in masked-LM inputs.
    """

    def __init__(self, cfg: TransformerConfig, vocab_size: int, block_size: int, causal: bool):
        super().__init__()
        self.causal, self.mask_id, self.vocab_size = causal, vocab_size, vocab_size
        self.embed = nn.Embedding(vocab_size + 1, cfg.d_model)
        self.pos = make_positional("learned", cfg.d_model, block_size)
        self.encoder = Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T) ids -> logits (B, T, vocab_size); a causal model lets position t see positions 0..t only."""
        mask = causal_mask(x.shape[1], device=x.device) if self.causal else None
        return self.head(self.encoder(self.pos(self.embed(x)), mask=mask))  # (B, T) -> (B, T, C) -> (B, T, V)


def masked_lm_batch(
    data: torch.Tensor, batch: int, seq_len: int, mask_id: int, fraction: float = 0.15, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows x (B, T) with `fraction` of positions replaced by mask_id; y (B, T): the hidden ids, IGNORE elsewhere.

    BERT also leaves some chosen positions unchanged or swaps in a random token; here every chosen position is hidden.
    """
    text = get_batch(data, batch, seq_len + 1, generator)[0][:, :-1]  # (B, T), drawn as causal_lm_batch draws
    hidden = torch.rand(text.shape, generator=generator) < fraction  # (B, T) bool
    return text.masked_fill(hidden, mask_id), text.masked_fill(~hidden, IGNORE)


def causal_lm_batch(data: torch.Tensor, batch: int, seq_len: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows x (B, T) and the next character at every position, y (B, T)."""
    w = get_batch(data, batch, seq_len + 1, generator)[0]  # (B, T + 1) windows
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def predict_hidden_character(model: CharLM, windows: torch.Tensor, position: int, context: str) -> float:
    """Accuracy of predicting windows[:, position] (windows: (N, T) ids) from the context a model is given.

    context "both": every other character is visible (a masked-LM model sees both sides; a causal model only ever
    uses the left side). context "left": the characters from `position` on are hidden, so only the past is known.
    A causal model predicts the character at `position` from its output at `position - 1`.
    """
    if context not in ("both", "left"):
        raise ValueError(f"context must be 'both' or 'left', got {context!r}")
    if not 1 <= position < windows.shape[1]:
        raise ValueError(f"position must be in 1..{windows.shape[1] - 1}, got {position}")
    model.eval()
    target = windows[:, position]  # (N,)
    if model.causal:
        pred = model(windows[:, :position])[:, -1].argmax(-1)  # the next character after the visible past
    else:
        x = windows.clone()
        if context == "both":
            x[:, position] = model.mask_id
        else:
            x[:, position:] = model.mask_id
        pred = model(x)[:, position].argmax(-1)
    return (pred == target).float().mean().item()

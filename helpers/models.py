"""A decoder-only GPT assembled from the course's blocks (introduced in 06_char_gpt)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.dropout import Dropout
from helpers.layers import EncoderBlock, TransformerConfig
from helpers.positional import LearnedPositionalEmbedding


@dataclass
class GPTConfig:
    """Sizes of a GPT language model."""

    vocab_size: int = 65  # number of distinct tokens (characters for Tiny Shakespeare)
    block_size: int = 256  # longest context the model accepts
    d_model: int = 256  # width of every token vector
    n_heads: int = 4  # attention heads per layer; d_head = d_model // n_heads
    n_layers: int = 4  # number of blocks
    d_ff: int | None = None  # FFN hidden width; None means 4 * d_model
    dropout: float = 0.0  # dropout on embeddings and sublayer outputs (the residual branches)
    attn_dropout: float | None = None  # dropout on attention weights; None means `dropout`
    ffn_dropout: float | None = None  # dropout inside the FFN; None means `dropout` (both are slow on CPU)
    bias: bool = True  # biases in linear layers and LayerNorms
    use_sdpa: bool = True  # fused attention kernel for training and scoring (proven equal by the tests)

    def __post_init__(self):
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        for name in ("vocab_size", "block_size", "d_model", "n_heads", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    def block_config(self) -> TransformerConfig:
        """The TransformerConfig of one Pre-LN block with a GELU feed-forward network."""
        return TransformerConfig(d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
                                 dropout=self.dropout, attn_dropout=self.attn_dropout, ffn_dropout=self.ffn_dropout,
                                 norm_first=True, activation="gelu", bias=self.bias,
                                 use_sdpa=self.use_sdpa)


class GPT(nn.Module):
    """Token + learned position embeddings, causal Pre-LN blocks, a final LayerNorm and a tied LM head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        block_cfg = cfg.block_config()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = LearnedPositionalEmbedding(cfg.d_model, cfg.block_size)
        self.drop = Dropout(cfg.dropout)
        # A decoder-only block is an encoder block called with causal=True: no cross-attention.
        self.blocks = nn.ModuleList(EncoderBlock(block_cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying: one (vocab_size, d_model) matrix for both
        self.apply(self._init_weights)
        # Residual projections start smaller so the residual stream's variance does not grow with depth (GPT-2).
        for block in self.blocks:
            for proj in (block.self_attn.out_proj, block.ff.linear2):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Normal(0, 0.02) for linear and embedding weights, zeros for biases, ones for LayerNorm gains."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, include_positions: bool = True) -> int:
        """Count trainable parameters once each (the tied head is not counted twice)."""
        n = sum(p.numel() for p in self.parameters())
        return n if include_positions else n - self.pos_emb.embedding.weight.numel()

    def new_cache(self) -> list[dict]:
        """An empty KV cache: one dict per block, filled by forward(..., cache=...)."""
        return [{} for _ in self.blocks]

    @staticmethod
    def cache_length(cache: list[dict] | None) -> int:
        """Number of positions already held in a KV cache."""
        if not cache or "k" not in cache[0]:
            return 0
        return cache[0]["k"].shape[2]  # k: (B, H, T_cached, D)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: list[dict] | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab_size) and, given targets (B, T), the mean cross-entropy loss.

        With a cache (from new_cache), idx holds only the new tokens: their positions continue after the cached
        ones, and each block appends its new keys and values to its dict.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        offset = self.cache_length(cache)
        if offset + idx.shape[1] > self.cfg.block_size:
            raise ValueError(f"{offset + idx.shape[1]} positions exceed block_size={self.cfg.block_size}; "
                             f"crop the context to the last {self.cfg.block_size} tokens")
        x = self.drop(self.pos_emb(self.tok_emb(idx), offset=offset))  # (B, T) -> (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, need_weights=need_weights, cache=None if cache is None else cache[i])
        logits = self.lm_head(self.norm(x))  # (B, T, C) -> (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return logits, loss

    def attention_weights(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Run idx (B, T) through the model and return each block's attention weights (B, H, T, T)."""
        self.forward(idx, need_weights=True)
        return [block.attn_weights["self"] for block in self.blocks]

    def config_dict(self) -> dict:
        """The config as a plain dict (for checkpoints)."""
        return asdict(self.cfg)


def _first_line(err: Exception) -> str:
    """A short form of an exception for a one-line message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def gpt_from_checkpoint(ckpt: dict, source: Path | str | None = None) -> GPT:
    """Rebuild a GPT from a checkpoint dict holding "model_config" and "model" (bf16 weights become float32).

    Content that does not make a GPT (missing keys, a bad config, weights of the wrong shape) raises
    helpers.training.CheckpointError naming `source` (the file it came from).
    """
    from helpers.training import CheckpointError

    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        state.setdefault("lm_head.weight", state["tok_emb.weight"])  # the tied head may be stored once
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"{source or 'the checkpoint'} does not hold a usable char-GPT "
                              f"({_first_line(err)})") from None
    return model


def load_char_gpt(path: Path | str, device: torch.device | str | None = None):
    """Load the char-GPT checkpoint of notebook 06: (model in eval mode on `device`, its CharTokenizer).

    Every problem with the file, including a checkpoint of another kind, is a CheckpointError naming it.
    """
    from helpers.shakespeare import CharTokenizer
    from helpers.training import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path, kind="char-gpt")
    model = gpt_from_checkpoint(ckpt, source=path)
    try:
        tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} does not hold a usable character tokenizer ({_first_line(err)})") from None
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise CheckpointError(f"{path} is inconsistent: its tokenizer has {tokenizer.vocab_size} characters, "
                              f"its model {model.cfg.vocab_size}")
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer

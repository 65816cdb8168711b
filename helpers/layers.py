"""Feed-forward network, encoder and decoder blocks and their stacks (introduced in 05_transformer_block)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from helpers.attention import MultiHeadAttention

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


@dataclass
class TransformerConfig:
    """Sizes and choices shared by encoder and decoder stacks."""

    d_model: int = 128  # width of every token vector
    n_heads: int = 4  # attention heads per layer; d_head = d_model // n_heads
    n_layers: int = 2  # blocks in a stack
    d_ff: int | None = None  # hidden width of the feed-forward network; None means 4 * d_model
    dropout: float = 0.1  # dropout on attention weights, sublayer outputs and inside the FFN
    attn_dropout: float | None = None  # dropout on attention weights; None means `dropout`
    ffn_dropout: float | None = None  # dropout inside the FFN (after the activation); None means `dropout`
    norm_first: bool = True  # Pre-LN (True) or Post-LN (False, as in the 2017 paper)
    residual: bool = True  # residual connections; switch off only to study gradient flow
    activation: str = "gelu"  # "gelu" or "relu"
    bias: bool = True  # biases in the linear layers
    use_sdpa: bool = False  # use PyTorch's fused attention kernel (proven equal by the tests)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon
    rope: bool = False  # rotary position embedding (RoPE) on queries and keys of self-attention; needs an even d_head

    def __post_init__(self):
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.attn_dropout is None:
            self.attn_dropout = self.dropout
        if self.ffn_dropout is None:
            self.ffn_dropout = self.dropout
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("d_model", "n_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ValueError(f"n_layers must be 0 or more, got {self.n_layers}")
        for name in ("dropout", "attn_dropout", "ffn_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.rope and (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError(
                f"rope rotates pairs of dimensions: d_head = d_model // n_heads = {self.d_model // self.n_heads} "
                f"must be even"
            )


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model)."""

    def __init__(
        self, d_model: int, d_ff: int | None = None, dropout: float = 0.0, activation: str = "gelu", bias: bool = True
    ):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, d_ff) -> (B, T, C)."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class _Sublayers(nn.Module):
    """Wrap sublayers with residual connections and Pre-LN or Post-LN normalisation."""

    SUBLAYERS: tuple[str, ...] = ()  # the sublayers' names, in order; norms[i] and drops[i] belong to SUBLAYERS[i]

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        n = len(self.SUBLAYERS)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias) for _ in range(n))
        self.drops = nn.ModuleList(nn.Dropout(cfg.dropout) for _ in range(n))
        self.attn_weights: dict[str, torch.Tensor] = {}

    def sublayer(self, name: str, x: torch.Tensor, fn) -> torch.Tensor:
        """Pre-LN: x + f(LN(x)); Post-LN: LN(x + f(x)); without residual the sum drops its x."""
        i = self.SUBLAYERS.index(name)
        norm, drop, res = self.norms[i], self.drops[i], self.cfg.residual
        if self.cfg.norm_first:
            y = drop(fn(norm(x)))
            return x + y if res else y
        y = drop(fn(x))
        return norm(x + y if res else y)


class EncoderBlock(_Sublayers):
    """Self-attention then feed-forward, each wrapped in a residual connection and LayerNorm."""

    SUBLAYERS = ("self_attn", "ff")

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.self_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_heads, cfg.attn_dropout, cfg.bias, cfg.use_sdpa, rope=cfg.rope
        )
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.ffn_dropout, cfg.activation, cfg.bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: dict | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); weights land in self.attn_weights["self"] when need_weights."""

        def attend(h):
            out, w = self.self_attn(h, mask=mask, causal=causal, need_weights=need_weights, cache=cache)
            if need_weights:
                self.attn_weights["self"] = w.detach()
            return out

        x = self.sublayer("self_attn", x, attend)
        return self.sublayer("ff", x, self.ff)


class DecoderBlock(_Sublayers):
    """Masked self-attention, cross-attention to the encoder output, then feed-forward."""

    SUBLAYERS = ("self_attn", "cross_attn", "ff")

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.self_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_heads, cfg.attn_dropout, cfg.bias, cfg.use_sdpa, rope=cfg.rope
        )
        # No rope in cross-attention: its queries (target) and keys (encoder output) come from different sequences,
        # so a relative position between them means nothing.
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout, cfg.bias, cfg.use_sdpa)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.ffn_dropout, cfg.activation, cfg.bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        causal: bool = True,
        need_weights: bool = False,
        cache: dict | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C), memory: (B, S, C) -> (B, T, C); cache holds {"self": {...}, "cross": {...}} while decoding."""
        cache_self = cache.setdefault("self", {}) if cache is not None else None
        cache_cross = cache.setdefault("cross", {}) if cache is not None else None

        def self_attend(h):
            out, w = self.self_attn(h, mask=tgt_mask, causal=causal, need_weights=need_weights, cache=cache_self)
            if need_weights:
                self.attn_weights["self"] = w.detach()
            return out

        def cross_attend(h):
            out, w = self.cross_attn(h, context=memory, mask=memory_mask, need_weights=need_weights, cache=cache_cross)
            if need_weights:
                self.attn_weights["cross"] = w.detach()
            return out

        x = self.sublayer("self_attn", x, self_attend)
        x = self.sublayer("cross_attn", x, cross_attend)
        return self.sublayer("ff", x, self.ff)


class Encoder(nn.Module):
    """A stack of encoder blocks, with a final LayerNorm when the blocks are Pre-LN."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = (
            nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias) if cfg.norm_first else nn.Identity()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False) -> torch.Tensor:
        """x: (B, S, C) -> (B, S, C)."""
        for layer in self.layers:
            x = layer(x, mask=mask, need_weights=need_weights)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of decoder blocks, with a final LayerNorm when the blocks are Pre-LN."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = (
            nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps, bias=cfg.bias) if cfg.norm_first else nn.Identity()
        )

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        caches: list[dict] | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C), memory: (B, S, C) -> (B, T, C); `caches` holds one dict per layer while decoding."""
        for i, layer in enumerate(self.layers):
            cache = caches[i] if caches is not None else None
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, need_weights=need_weights, cache=cache)
        return self.norm(x)

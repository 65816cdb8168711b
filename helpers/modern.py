"""A modern GPT, one switch per post-2019 change (introduced in 11_modern_gpt).

What the decoder-only recipe changed after GPT-2 (2019), as in LLaMA (2023) and its successors, one switch each:
    norm            "layernorm" -> "rmsnorm"   rescale by the root mean square: no centring, no bias (RMSNorm)
    ffn             "gelu" -> "swiglu"         a gated feed-forward network with three matrices (SwiGLU)
    positions       "learned" -> "rope"        rotate queries and keys inside attention (helpers.positional)
    qk_norm         False -> True              RMSNorm on each head's queries and keys before RoPE (QKNormAttention)
    bias            True -> False              no biases in the linear layers and norms
    tie_embeddings  True -> False              a separate LM-head matrix
With every switch at its 2019 setting ModernGPT is helpers.models.GPT: the same parameter names, the same logits.
Muon, the optimiser notebook 11 trains it with, is in helpers.optim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import MultiHeadAttention
from helpers.layers import TransformerConfig
from helpers.models import GPT, GPTBlock, GPTConfig

# ---------------------------------------------------------------- RMSNorm (Zhang & Sennrich 2019)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g over the last dimension: LayerNorm without the mean and without a bias."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))  # the gain g: (d,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) -> (..., d), computed in float32 or wider and returned in x's dtype."""
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        inv_rms = torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., d) -> (..., 1)
        return (h * inv_rms * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        """Show d and eps when the module is printed."""
        return f"{self.weight.shape[0]}, eps={self.eps}"


# ---------------------------------------------------------------- SwiGLU feed-forward network (Shazeer 2020)


def swiglu_hidden(d_model: int, multiple_of: int = 8) -> int:
    """SwiGLU's default hidden width: 2/3 of 4 * d_model, rounded up to a multiple of `multiple_of`."""
    return multiple_of * math.ceil(8 * d_model / (3 * multiple_of))


class SwiGLU(nn.Module):
    """Gated feed-forward network linear2(silu(linear1 x) * linear3 x), without biases.

    Three (d_model, d_ff) matrices where the GELU MLP has two, so the default d_ff = swiglu_hidden(d_model), about
    8/3 d_model, gives 3 * d_model * d_ff ~ 8 d_model^2 parameters: those of a 4 * d_model GELU MLP without biases.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        d_ff = swiglu_hidden(d_model) if d_ff is None else d_ff
        self.linear1 = nn.Linear(d_model, d_ff, bias=False)  # W1: the gate, through SiLU
        self.linear3 = nn.Linear(d_model, d_ff, bias=False)  # W3: the values the gate scales
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=False)  # W2: back to d_model (the residual projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> two (B, T, d_ff) -> their gated product -> (B, T, C)."""
        return self.linear2(self.dropout(F.silu(self.linear1(x)) * self.linear3(x)))


# ---------------------------------------------------------------- QK-norm (Dehghani et al. 2023, OLMo 2, Gemma 3)


class HeadNormLinear(nn.Linear):
    """A (d_model -> d_model) projection whose output is RMS-normalised head by head, over each head's D dimensions."""

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, eps: float = 1e-6):
        super().__init__(d_model, d_model, bias=bias)
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm = RMSNorm(d_model // n_heads, eps)  # one gain (D,) shared by all heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, H, D), normalised over D -> (B, T, C): each head's vector has norm sqrt(D) * gain."""
        return self.norm(super().forward(x).unflatten(-1, (self.n_heads, -1))).flatten(-2)


class QKNormAttention(MultiHeadAttention):
    """MultiHeadAttention with QK-norm: RMSNorm on each head's queries and keys, before RoPE and the dot product.

    With unit gains every q and k has norm sqrt(D), so |q . k| / sqrt(D) <= sqrt(D): the scores cannot grow without
    bound, a cause of loss spikes at high learning rates. Only q_proj and k_proj change (to HeadNormLinear); RoPE, the
    KV cache (it stores normalised, rotated keys), masks and the fused use_sdpa path are MultiHeadAttention's own.
    """

    def __init__(self, d_model: int, n_heads: int, *args, eps: float = 1e-6, **kwargs):
        """MultiHeadAttention's arguments (dropout, bias, use_sdpa, rope), and eps for the q and k norms."""
        super().__init__(d_model, n_heads, *args, **kwargs)
        bias = self.q_proj.bias is not None
        self.q_proj = HeadNormLinear(d_model, n_heads, bias, eps)
        self.k_proj = HeadNormLinear(d_model, n_heads, bias, eps)


# ---------------------------------------------------------------- the model


NORMS = ("layernorm", "rmsnorm")
FFNS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")
MODERN = dict(norm="rmsnorm", ffn="swiglu", positions="rope", qk_norm=True, bias=False, tie_embeddings=False)


@dataclass
class ModernGPTConfig(GPTConfig):
    """GPTConfig plus one switch per modern change; the defaults are GPT-2's, MODERN holds the modern settings.

    Build each ablation from its switches (ModernGPTConfig(**sizes, ffn="swiglu")), not with dataclasses.replace on
    a built config: d_ff is resolved when the config is made, to 4 * d_model for "gelu", swiglu_hidden for "swiglu".
    """

    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm", in every block and before the LM head
    ffn: str = "gelu"  # "gelu" (Linear, GELU, Linear) or "swiglu" (SwiGLU, never with biases)
    positions: str = "learned"  # "learned" (added to the token embeddings) or "rope" (rotates q and k in attention)
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (QKNormAttention)
    tie_embeddings: bool = True  # the LM head reuses the token-embedding matrix
    # bias (from GPTConfig) is the sixth switch: biases in the attention projections, the GELU MLP and LayerNorms

    def __post_init__(self):
        for name, choices in (("norm", NORMS), ("ffn", FFNS), ("positions", POSITIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.ffn == "swiglu" and self.d_ff is None:
            self.d_ff = swiglu_hidden(self.d_model)
        super().__post_init__()

    @classmethod
    def modern(cls, **kwargs) -> ModernGPTConfig:
        """A config with every switch at its modern setting (MODERN); kwargs give the sizes or override a switch."""
        return cls(**{**MODERN, **kwargs})

    def block_config(self) -> TransformerConfig:
        """GPTConfig's block config, with RoPE in self-attention when positions == "rope"."""
        return replace(super().block_config(), rope=self.positions == "rope")


class ModernBlock(GPTBlock):
    """A causal Pre-norm block whose norms, feed-forward network and attention follow a ModernGPTConfig's switches.

    It starts as GPTBlock (LayerNorms, GELU MLP, MultiHeadAttention, with RoPE when positions == "rope"), and each
    switch that is on replaces one part; the parts no switch touches keep GPTBlock's parameter names.
    """

    def __init__(self, cfg: ModernGPTConfig):
        block_cfg = cfg.block_config()
        super().__init__(block_cfg)
        if cfg.norm == "rmsnorm":
            self.norms = nn.ModuleList(RMSNorm(cfg.d_model) for _ in self.SUBLAYERS)
        if cfg.ffn == "swiglu":
            self.ff = SwiGLU(cfg.d_model, cfg.d_ff, block_cfg.ffn_dropout)
        if cfg.qk_norm:
            self.self_attn = QKNormAttention(
                cfg.d_model, cfg.n_heads, block_cfg.attn_dropout, cfg.bias, cfg.use_sdpa, rope=block_cfg.rope
            )


class NoPositions(nn.Module):
    """The position embedding of a RoPE model: nothing is added to the tokens, positions act inside attention."""

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, T, C) -> x, unchanged whatever the offset."""
        return x


class ModernGPT(GPT):
    """GPT whose parts follow the switches of a ModernGPTConfig.

    Forward, the KV cache (new_cache, cache_length), attention_weights and so the course's training and sampling code
    are GPT's own; only the parts are different. Its checkpoints are "char-gpt" checkpoints whose config holds the
    switches (helpers.course.checkpoints).
    """

    def __init__(self, cfg: ModernGPTConfig):
        super().__init__(cfg)  # the 2019 GPT; each switch that is on replaces one of its parts
        self.blocks = nn.ModuleList(ModernBlock(cfg) for _ in range(cfg.n_layers))
        if cfg.positions == "rope":
            self.pos_emb = NoPositions()
        if cfg.norm == "rmsnorm":
            self.norm = RMSNorm(cfg.d_model)
        if not cfg.tie_embeddings:
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # GPT's initialisation again, now that the parts are in place (norm gains stay at one).
        self.apply(self._init_weights)
        for block in self.blocks:
            for proj in (block.self_attn.out_proj, block.ff.linear2):  # residual projections: GPT-2's smaller std
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    def num_params(self, include_positions: bool = True) -> int:
        """Count trainable parameters once each; a RoPE model has no position parameters to leave out."""
        return super().num_params(include_positions or self.cfg.positions == "rope")

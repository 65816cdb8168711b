"""A modern GPT, one switch per post-2019 change, and the Muon optimiser (for a modern-GPT notebook, 11_modern_gpt).

What the decoder-only recipe changed after GPT-2 (2019), as in LLaMA (2023) and its successors, one switch each:
    norm            "layernorm" -> "rmsnorm"   rescale by the root mean square: no centring, no bias (RMSNorm)
    ffn             "gelu" -> "swiglu"         a gated feed-forward network with three matrices (SwiGLU)
    positions       "learned" -> "rope"        rotate queries and keys inside attention (helpers.positional)
    qk_norm         False -> True              RMSNorm on each head's queries and keys before RoPE (QKNormAttention)
    bias            True -> False              no biases in the linear layers and norms
    tie_embeddings  True -> False              a separate LM-head matrix
With every switch at its 2019 setting ModernGPT is helpers.models.GPT: the same parameter names, the same logits.
Muon (newton_schulz, Muon, make_muon_adamw) trains the blocks' weight matrices with orthogonalised updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import MultiHeadAttention
from helpers.checkpoints import compact_state, make_checkpoint
from helpers.layers import TransformerConfig
from helpers.models import GPT, GPTBlock, GPTConfig, _rebuild
from helpers.tokenizers import CharTokenizer

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
    are GPT's own; only the parts are different. Checkpoints are "char-gpt" checkpoints whose config holds the
    switches: ModernGPT.from_checkpoint reads them and GPT's own (every switch at 2019) alike.
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

    def checkpoint(self, tokenizer: CharTokenizer, meta: dict | None = None) -> dict:
        """A "char-gpt" checkpoint: float16 weights (a tied head stored once), config with the switches, tokenizer."""
        skip = ("lm_head.weight",) if self.cfg.tie_embeddings else ()
        return make_checkpoint(
            "char-gpt", compact_state(self, skip=skip), self.config_dict(), tokenizer.to_dict(), meta
        )

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: Path | str | None = None) -> ModernGPT:
        """Rebuild a ModernGPT in float32 from its own "char-gpt" checkpoint or GPT's (else a CheckpointError)."""
        return _rebuild(cls, ModernGPTConfig, ckpt, "tok_emb.weight", "a usable modern char-GPT", source)


# ---------------------------------------------------------------- Muon (Jordan et al. 2024)

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of the quintic p(s) = a s + b s^3 + c s^5 (Jordan 2024)


def newton_schulz(
    G: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Orthogonalise G (..., m, n) approximately: keep its singular vectors, push its singular values towards 1.

    With G = U S V^T, X_0 = G / ||G||_F has singular values in (0, 1]; each step
        X <- a X + b (X X^T) X + c (X X^T)^2 X = U p(S) V^T,   p(s) = a s + b s^3 + c s^5,
    so the result is U p(p(...p(S / ||G||_F))) V^T, close to the polar factor U V^T. p'(0) = a = 3.4 lifts small
    singular values fast; the price is that they end in a band around 1, not at 1 (0.68-1.14 after 5 steps for random
    rectangular matrices; a nearly singular matrix keeps its tiniest singular values small).
    Computed in `dtype` (float32; bfloat16 is the fast choice on a GPU), returned in G's dtype. Scale invariant.
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz orthogonalises matrices (..., m, n), got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT  # work on the wide side, so that X X^T is the smaller Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT  # (m, n) @ (n, m) -> (m, m), m <= n
        X = a * X + (b * A + c * A @ A) @ X  # (m, m) @ (m, n) -> (m, n)
    return (X.mT if tall else X).to(G.dtype)


def _closure_loss(closure) -> torch.Tensor | None:
    """The loss of an optimiser step's closure (it re-evaluates the model, with gradients on), or None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Optimizer):
    """Momentum whose update of each weight matrix is orthogonalised by newton_schulz; for 2-D hidden weights only.

    For a weight W (rows, cols) with gradient G, momentum mu, learning rate lr and weight decay wd:
        B <- mu B + G                                   the momentum buffer
        U = G + mu B (Nesterov) or U = B                the direction
        W <- W (1 - lr wd) - lr sqrt(max(1, rows / cols)) newton_schulz(U)
    All singular values of the update are near 1, so the step is about as large along every direction the gradient
    spans, rare directions included; sqrt(max(1, rows / cols)) gives tall and wide matrices updates of alike RMS.
    Embeddings, the LM head, gains and biases belong to AdamW (make_muon_adamw).
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.float32,
    ):
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0 or ns_steps < 1:
            raise ValueError(
                f"Muon needs lr >= 0, weight_decay >= 0, momentum in [0, 1) and ns_steps >= 1, got lr={lr}, "
                f"weight_decay={weight_decay}, momentum={momentum}, ns_steps={ns_steps}"
            )
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps, ns_dtype=ns_dtype
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"Muon updates 2-D weight matrices only, not a parameter of shape {tuple(p.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; return closure()'s loss when a closure is given."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            by_shape: dict[tuple[int, int], list] = {}  # matrices of one shape are orthogonalised in one batch
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(mu).add_(p.grad)
                direction = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
                by_shape.setdefault(tuple(p.shape), []).append((p, direction))
            for (rows, cols), pairs in by_shape.items():
                # (n, rows, cols): one batched matrix product per Newton-Schulz step instead of n small ones
                updates = newton_schulz(torch.stack([d for _, d in pairs]), group["ns_steps"], dtype=group["ns_dtype"])
                for (p, _), update in zip(pairs, updates):
                    p.mul_(1.0 - lr * wd)
                    p.add_(update, alpha=-lr * max(1.0, rows / cols) ** 0.5)
        return loss


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimisers over disjoint parameters, seen as one: one step, one zero_grad, one state_dict.

    param_groups lists the groups of all of them (the same dicts), so a scheduler such as
    helpers.training.make_scheduler scales every group's learning rate, each from its own peak.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)
        super().__init__([g for opt in self.optimizers for g in opt.param_groups], {})  # raises on a shared parameter

    def step(self, closure=None):
        """Evaluate closure once (if given), then step every optimiser; return the closure's loss."""
        loss = _closure_loss(closure)
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every optimiser's parameters."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """{"optimizers": [each optimiser's state_dict]}: tensors and plain values (torch.load(weights_only=True))."""
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore every optimiser, then list their groups again (loading replaces the group dicts)."""
        saved = state_dict["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"the state holds {len(saved)} optimisers, this CombinedOptimizer {len(self.optimizers)}")
        for opt, state in zip(self.optimizers, saved):
            opt.load_state_dict(state)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]


def make_muon_adamw(
    model: nn.Module,
    muon_lr: float,
    adamw_lr: float,
    weight_decay: float = 0.1,
    betas=(0.9, 0.95),
    ns_dtype: torch.dtype | str = torch.float32,
) -> CombinedOptimizer:
    """Muon for the 2-D weight matrices inside model.blocks, AdamW for the rest (embeddings, LM head, norms, biases).

    Weight decay goes where make_adamw puts it: on weight matrices (Muon's, and an untied LM head under AdamW), never
    on embeddings, gains or biases. The result drives helpers.training's train_step, train and make_scheduler;
    its param_groups are [Muon's, AdamW with decay, AdamW without]. ns_dtype is the dtype of Muon's Newton-Schulz
    iterations (a torch.dtype or its name, "bfloat16" for example: 2.5 times faster on a CPU with bfloat16 units).
    """
    if isinstance(ns_dtype, str):
        if not isinstance(getattr(torch, ns_dtype, None), torch.dtype):
            raise ValueError(f"ns_dtype must name a torch dtype such as 'bfloat16', got {ns_dtype!r}")
        ns_dtype = getattr(torch, ns_dtype)
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Module):
        raise ValueError(f"make_muon_adamw needs a model with a `blocks` module (GPT, ModernGPT), got {type(model)}")
    hidden = [p for p in blocks.parameters() if p.dim() == 2 and p.requires_grad]
    hidden_ids = {id(p) for p in hidden}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden_ids]  # shared ones once
    decay = [p for p in rest if p.dim() == 2 and id(p) not in embedding_ids]
    no_decay = [p for p in rest if p.dim() != 2 or id(p) in embedding_ids]
    muon = Muon(hidden, lr=muon_lr, weight_decay=weight_decay, ns_dtype=ns_dtype)
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=adamw_lr,
        betas=betas,
    )
    return CombinedOptimizer([muon, adamw])

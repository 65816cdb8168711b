"""A decoder-only GPT and an encoder-decoder from the blocks of 05 (introduced in 06_char_gpt, 08_translation).

Both share one interface, new_cache() / cache_length(), for decoding with a KV cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.attention import padding_mask
from helpers.layers import Decoder, Encoder, EncoderBlock, TransformerConfig
from helpers.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from helpers.tokenizers import PAD_ID

# ---------------------------------------------------------------- a decoder-only GPT (06_char_gpt)


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
    ffn_dropout: float | None = None  # dropout inside the FFN; None means `dropout`
    bias: bool = True  # biases in linear layers and LayerNorms
    use_sdpa: bool = False  # PyTorch's fused attention kernel (tests/test_attention.py proves it equal)

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
        return TransformerConfig(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attn_dropout=self.attn_dropout,
            ffn_dropout=self.ffn_dropout,
            norm_first=True,
            activation="gelu",
            bias=self.bias,
            use_sdpa=self.use_sdpa,
        )


class GPTBlock(EncoderBlock):
    """A decoder-only block: the encoder block of 05 with its self-attention always causal (no cross-attention)."""

    def forward(self, x: torch.Tensor, need_weights: bool = False, cache: dict | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C); position t attends to positions 0..t only."""
        return super().forward(x, causal=True, need_weights=need_weights, cache=cache)


class GPT(nn.Module):
    """Token + learned position embeddings, causal Pre-LN blocks, a final LayerNorm and a tied LM head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        block_cfg = cfg.block_config()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = LearnedPositionalEmbedding(cfg.d_model, cfg.block_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GPTBlock(block_cfg) for _ in range(cfg.n_layers))
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

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list[dict] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, vocab_size) and, given targets (B, T), the mean cross-entropy loss.

        With a cache (from new_cache), idx holds only the new tokens: their positions continue after the cached
        ones, and each block appends its new keys and values to its dict.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (B, T), got {tuple(idx.shape)}")
        offset = self.cache_length(cache)
        if offset + idx.shape[1] > self.cfg.block_size:
            raise ValueError(
                f"{offset + idx.shape[1]} positions exceed block_size={self.cfg.block_size}; "
                f"crop the context to the last {self.cfg.block_size} tokens"
            )
        x = self.drop(self.pos_emb(self.tok_emb(idx), offset=offset))  # (B, T) -> (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, need_weights=need_weights, cache=None if cache is None else cache[i])
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
        """The config as a plain dict."""
        return asdict(self.cfg)


# ---------------------------------------------------------------- an encoder-decoder (08_translation)


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
    use_sdpa: bool = False  # PyTorch's fused attention kernel (tests/test_attention.py proves it equal)

    def block_config(self, n_layers: int) -> TransformerConfig:
        """The helpers.layers configuration for a stack of n_layers blocks."""
        return TransformerConfig(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            norm_first=self.norm_first,
            use_sdpa=self.use_sdpa,
        )


class Seq2Seq(nn.Module):
    """Embeddings * sqrt(d_model) + sinusoidal positions -> Encoder; Decoder with cross-attention -> logits."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        self.src_embed = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        self.pos = SinusoidalPositionalEncoding(cfg.d_model, cfg.max_len)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg.block_config(cfg.n_enc_layers))
        self.decoder = Decoder(cfg.block_config(cfg.n_dec_layers))
        self.lm_head = nn.Linear(cfg.d_model, cfg.tgt_vocab_size)  # decoder output -> target-vocabulary logits
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embed.weight
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=cfg.d_model**-0.5)  # after the sqrt(d_model) scale: unit variance
            with torch.no_grad():
                emb.weight[PAD_ID].zero_()

    def embed(self, table: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, C): scaled embeddings plus positions offset..offset+T-1, then dropout."""
        return self.drop(self.pos(table(ids) * math.sqrt(self.cfg.d_model), offset=offset))

    def encode(self, src: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, C) and the source padding mask (B, 1, 1, S)."""
        src_mask = padding_mask(src, PAD_ID)
        return self.encoder(self.embed(self.src_embed, src), mask=src_mask, need_weights=need_weights), src_mask

    def new_cache(self) -> list[dict]:
        """An empty KV cache: one dict per decoder block, filled by decode(..., cache=...)."""
        return [{} for _ in self.decoder.layers]

    @staticmethod
    def cache_length(cache: list[dict] | None) -> int:
        """Number of target positions already held in a KV cache."""
        if not cache or "k" not in cache[0].get("self", {}):
            return 0
        return cache[0]["self"]["k"].shape[2]  # k: (B, H, T_cached, D)

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: list[dict] | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V); causal + target padding masks, cross-attention under src_mask.

        With a cache (from new_cache), tgt_in holds only the new tokens; their positions continue after the cached ones.
        """
        offset = self.cache_length(cache)
        tgt_mask = padding_mask(tgt_in, PAD_ID) if cache is None else None  # (B, 1, 1, T); the blocks add causality
        h = self.decoder(
            self.embed(self.tgt_embed, tgt_in, offset),
            memory,
            tgt_mask=tgt_mask,
            memory_mask=src_mask,
            need_weights=need_weights,
            caches=cache,
        )
        return self.lm_head(h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) = <bos> y_1 ... -> logits (B, T, V) predicting y_1 ... <eos>."""
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    @torch.no_grad()
    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor) -> list[torch.Tensor]:
        """Per decoder layer, the cross-attention weights (B, H, T, S) for a teacher-forced target."""
        device = self.lm_head.weight.device
        src, tgt_in = src.to(device), tgt_in.to(device)
        memory, src_mask = self.encode(src)
        self.decode(tgt_in, memory, src_mask, need_weights=True)
        return [layer.attn_weights["cross"] for layer in self.decoder.layers]


# ---------------------------------------------------------------- a one-head decoder for the KV-cache exercise (07)


class TinyDecoder(nn.Module):
    """A one-block, one-head causal decoder (07.kv_cache): token + learned position embeddings, attention, output."""

    def __init__(self, vocab_size: int = 12, d_model: int = 8, block_size: int = 16, seed: int = 0):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)  # token id -> (d_model,)
        self.pos_emb = nn.Embedding(block_size, d_model)  # learned: position t -> (d_model,)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # seeded weights, whatever the global random state
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, vocab_size), every position computed from scratch (no cache)."""
        t = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(t, device=idx.device))  # (B, T, C)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, T, C) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T, C) @ (B, C, T) -> (B, T, T)
        causal = torch.ones(t, t, dtype=torch.bool, device=idx.device).tril()  # query i sees keys 0..i
        attn_weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return self.lm_head(x + attn_weights @ v)  # residual; (B, T, C) -> (B, T, vocab_size)

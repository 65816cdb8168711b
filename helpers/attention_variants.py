"""Linear attention, written from scratch, and a multi-head module that uses it (introduced in 09_profiling).

Softmax attention computes softmax(q k^T) v, which needs the (T, T) score matrix.
Linear attention replaces exp(q . k) by phi(q) . phi(k) for a positive feature map phi, so the product can be
regrouped: phi(q) (phi(k)^T v) costs O(T * D^2) time and never builds a (T, T) matrix.

What it gives up: the weights phi(q_i) . phi(k_j) form a matrix of rank at most D with no exponential to sharpen
them, so a query cannot put nearly all of its weight on one key the way softmax can; in causal form the whole past
is squeezed into one (D, D) state per head, so it recalls fewer distinct tokens; the normaliser is a sum that can
get small, so it needs an epsilon. It is a different model, not a faster way to compute the same one.

Block-by-block attention (FlashAttention's idea) is the opposite trade: the same softmax attention, exactly, computed
one (block, block) tile of scores at a time with an "online softmax", so memory grows with T * block, not T^2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helpers.attention import MultiHeadAttention, _check_qkv


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """The positive feature map phi(x) = elu(x) + 1 used by Katharopoulos et al. (2020)."""
    return F.elu(x) + 1.0


def linear_attention_quadratic(q, k, v, causal: bool = False, feature_map=elu_feature_map, eps: float = 1e-6):
    """Linear attention computed the slow, explicit way through its (T_q, T_k) weight matrix (a reference)."""
    phi_q, phi_k = feature_map(q), feature_map(k)
    weights = phi_q @ phi_k.transpose(-2, -1)  # (..., T_q, D) @ (..., D, T_k) -> (..., T_q, T_k)
    if causal:
        t_q, t_k = weights.shape[-2:]
        keep = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(diagonal=t_k - t_q)
        weights = weights.masked_fill(~keep, 0.0)
    return (weights @ v) / (weights.sum(dim=-1, keepdim=True) + eps)  # (..., T_q, D_v)


def _exclusive_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Cumulative sum that leaves out the current element: out[j] = x[0] + ... + x[j-1]."""
    total = x.cumsum(dim=dim)
    return total - x


def linear_attention(
    q, k, v, causal: bool = False, feature_map=elu_feature_map, eps: float = 1e-6, chunk_size: int = 64
):
    """Linear attention phi(q) (phi(k)^T v) / phi(q) sum(phi(k)), in O(T) time and memory.

    q, k: (..., T, D), v: (..., T, D_v). Self-attention only (same T for queries and keys).
    The causal form splits the sequence into chunks: inside a chunk it uses the small explicit (c, c) weights,
    across chunks it carries the running sums phi(k)^T v and sum(phi(k)) of all earlier chunks.
    """
    if q.shape != k.shape or q.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"linear_attention needs q, k of equal shape and v with the same (..., T), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    phi_q, phi_k = feature_map(q), feature_map(k)
    if not causal:
        kv = phi_k.transpose(-2, -1) @ v  # (..., D, T) @ (..., T, D_v) -> (..., D, D_v)
        z = phi_k.sum(dim=-2, keepdim=True)  # (..., 1, D)
        num = phi_q @ kv  # (..., T, D) @ (..., D, D_v) -> (..., T, D_v)
        den = (phi_q * z).sum(dim=-1, keepdim=True)  # (..., T, 1)
        return num / (den + eps)
    t = q.shape[-2]
    c = min(chunk_size, t)
    pad = (-t) % c  # zero features at the end add nothing to any sum, and only later positions could see them
    if pad:
        phi_q, phi_k, v = (F.pad(x, (0, 0, 0, pad)) for x in (phi_q, phi_k, v))
    n = phi_q.shape[-2] // c
    lead, d, d_v = phi_q.shape[:-2], phi_q.shape[-1], v.shape[-1]
    pq = phi_q.reshape(*lead, n, c, d)  # (..., T, D) -> (..., n, c, D)
    pk = phi_k.reshape(*lead, n, c, d)
    pv = v.reshape(*lead, n, c, d_v)
    kv_before = _exclusive_cumsum(pk.transpose(-2, -1) @ pv, dim=-3)  # (..., n, D, D_v): sums over earlier chunks
    z_before = _exclusive_cumsum(pk.sum(dim=-2), dim=-2)  # (..., n, D)
    inside = (pq @ pk.transpose(-2, -1)).tril()  # (..., n, c, D) @ (..., n, D, c) -> (..., n, c, c), causal
    num = pq @ kv_before + inside @ pv  # (..., n, c, D_v)
    den = (pq * z_before.unsqueeze(-2)).sum(dim=-1, keepdim=True) + inside.sum(dim=-1, keepdim=True)
    out = (num / (den + eps)).reshape(*lead, n * c, d_v)
    return out[..., :t, :]


class LinearMultiHeadAttention(MultiHeadAttention):
    """MultiHeadAttention whose inner softmax attention is replaced by linear attention (self-attention only)."""

    def forward(self, x, context=None, mask=None, causal: bool = False, need_weights: bool = False, cache=None):
        """x: (B, T, C) -> ((B, T, C), None); masks, caches, cross-attention and weights are not supported."""
        if context is not None or mask is not None or cache is not None or need_weights:
            raise NotImplementedError("LinearMultiHeadAttention supports plain (optionally causal) self-attention only")
        q = self.split_heads(self.q_proj(x))  # (B, T, C) -> (B, H, T, D)
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        if self.rotary is not None:  # rotary positions rotate q and k, as in softmax attention
            q, k = self.rotary(q), self.rotary(k)
        out = linear_attention(q, k, v, causal=causal)  # (B, H, T, D)
        return self.out_proj(self.merge_heads(out)), None  # (B, H, T, D) -> (B, T, C)


def use_linear_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every self-attention module named `self_attn` in a model by linear attention with the same weights."""
    for module in list(model.modules()):
        attn = getattr(module, "self_attn", None)
        if isinstance(attn, MultiHeadAttention) and not isinstance(attn, LinearMultiHeadAttention):
            bias = attn.q_proj.bias is not None
            linear = LinearMultiHeadAttention(
                attn.d_model, attn.n_heads, attn.dropout, bias=bias, rope=attn.rotary is not None
            )
            linear.load_state_dict(attn.state_dict())
            module.self_attn = linear.to(device=attn.q_proj.weight.device, dtype=attn.q_proj.weight.dtype)
    return model


def _query_block(qb, k, v, first_pos: int, k_stop: int, block_size: int, causal: bool) -> torch.Tensor:
    """Online softmax of one scaled query block qb (..., b_q, D) over the key blocks before k_stop: (..., b_q, D_v).

    first_pos is the position of qb's first query among the keys (causal: query i sees keys j <= its position).
    """
    b_q = qb.shape[-2]
    m = torch.full((*qb.shape[:-1], 1), float("-inf"), dtype=qb.dtype, device=qb.device)  # (..., b_q, 1)
    denom = torch.zeros_like(m)  # (..., b_q, 1)
    acc = torch.zeros((*qb.shape[:-1], v.shape[-1]), dtype=qb.dtype, device=qb.device)  # (..., b_q, D_v)
    for k0 in range(0, k_stop, block_size):
        kb, vb = k[..., k0 : k0 + block_size, :], v[..., k0 : k0 + block_size, :]  # (..., b_k, D), (..., b_k, D_v)
        b_k = kb.shape[-2]
        s = qb @ kb.transpose(-2, -1)  # (..., b_q, D) @ (..., D, b_k) -> (..., b_q, b_k)
        if causal and k0 + b_k - 1 > first_pos:  # the tile's last key is past its first query: mask the future
            rows = torch.arange(first_pos, first_pos + b_q, device=qb.device)[:, None]  # (b_q, 1) positions
            cols = torch.arange(k0, k0 + b_k, device=qb.device)[None, :]  # (1, b_k)
            s = s.masked_fill(cols > rows, float("-inf"))  # (..., b_q, b_k)
        # The result does not depend on m (it cancels in acc / denom), so no gradient needs to flow through it.
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True)).detach()  # (..., b_q, 1)
        m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # a row that has seen no key: avoid -inf - -inf
        rescale = torch.exp(m - m_safe)  # (..., b_q, 1), exp(m_old - m_new) <= 1; 0 on a row's first keys
        p = torch.exp(s - m_safe)  # (..., b_q, b_k), unnormalised weights, 0 where masked
        denom = denom * rescale + p.sum(dim=-1, keepdim=True)
        acc = acc * rescale + p @ vb  # (..., b_q, b_k) @ (..., b_k, D_v) -> (..., b_q, D_v)
        m = m_new
    return acc / denom.masked_fill(denom == 0, 1.0)  # denom = 0 only where no key was seen, and acc = 0 there too


def blockwise_attention(q, k, v, block_size: int = 64, causal: bool = False, scale: float | None = None):
    """Compute softmax(q k^T * scale) v one (block, block) tile at a time, never building the (T_q, T_k) scores.

    q: (..., T_q, D), k: (..., T_k, D), v: (..., T_k, D_v) -> (..., T_q, D_v); scale defaults to 1 / sqrt(D).
    Equal to F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale) with the course's causal mask,
    mask = helpers.attention.causal_mask(T_q, T_k): the queries are the last T_q positions, so query i sees keys
    j <= i + (T_k - T_q) (with T_q == T_k this is F.sdpa's is_causal=True). A query that sees no key at all (only
    possible when T_k = 0) gets a zero output, not NaN.

    Online softmax, per query row, over key blocks S_b = scale * q K_b^T, starting from m = -inf, denom = 0, acc = 0:
        m' = max(m, max_j S_b[j])                                        the running max (a numerical shift only)
        denom' = denom * exp(m - m') + sum_j exp(S_b[j] - m')            the running normaliser sum_j exp(S[j] - m')
        acc' = acc * exp(m - m') + sum_j exp(S_b[j] - m') V_b[j]         the running unnormalised output
    and at the end out = acc / denom = sum_j softmax(S)[j] V[j]. With causal=True, key blocks that lie entirely in the
    future of a query block are skipped: with T_q = T_k = n blocks, n (n + 1) / 2 tiles instead of n^2.
    """
    _check_qkv(q, k, v)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    t_q, t_k = q.shape[-2], k.shape[-2]
    if causal and t_q > t_k:
        raise ValueError(f"causal attention needs T_q <= T_k (the queries are the last positions), got {t_q} > {t_k}")
    offset = t_k - t_q if causal else 0  # query i sits at position i + offset among the keys
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    rows_out = []
    for q0 in range(0, t_q, block_size):
        qb = q[..., q0 : q0 + block_size, :] * scale  # (..., b_q, D), scaled once per query block
        k_stop = min(t_k, q0 + qb.shape[-2] + offset) if causal else t_k  # later keys are in every row's future
        rows_out.append(_query_block(qb, k, v, q0 + offset, k_stop, block_size, causal))
    if not rows_out:  # T_q = 0
        return torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
    return torch.cat(rows_out, dim=-2)  # (..., T_q, D_v)

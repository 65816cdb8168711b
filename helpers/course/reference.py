"""Copy weights from PyTorch's reference modules into the course's own (introduced in 03_multi_head_attention)."""

from __future__ import annotations

import torch
from torch import nn


def copy_mha_from_torch(ours: nn.Module, theirs: nn.MultiheadAttention) -> None:
    """Copy nn.MultiheadAttention's packed in_proj (3C, C) and out_proj into a helpers.attention.MultiHeadAttention."""
    c = theirs.embed_dim
    if ours.d_model != c or ours.n_heads != theirs.num_heads:
        raise ValueError(
            f"sizes differ: ours d_model={ours.d_model}, n_heads={ours.n_heads}; "
            f"theirs embed_dim={c}, num_heads={theirs.num_heads}"
        )
    with torch.no_grad():
        for i, proj in enumerate([ours.q_proj, ours.k_proj, ours.v_proj]):
            proj.weight.copy_(theirs.in_proj_weight[i * c : (i + 1) * c])
            if proj.bias is not None:
                proj.bias.copy_(theirs.in_proj_bias[i * c : (i + 1) * c])
        ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def copy_block_from_torch(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy an nn.TransformerEncoderLayer or nn.TransformerDecoderLayer into an EncoderBlock or DecoderBlock."""
    norms = [theirs.norm1, theirs.norm2] + ([theirs.norm3] if hasattr(theirs, "norm3") else [])
    if len(norms) != len(ours.norms):
        raise ValueError(f"block kinds differ: ours has {len(ours.norms)} LayerNorms, theirs {len(norms)}")
    copy_mha_from_torch(ours.self_attn, theirs.self_attn)
    if hasattr(theirs, "multihead_attn"):
        copy_mha_from_torch(ours.cross_attn, theirs.multihead_attn)
    ours.ff.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.ff.linear2.load_state_dict(theirs.linear2.state_dict())
    for mine, ref in zip(ours.norms, norms):
        mine.load_state_dict(ref.state_dict())

"""Shared fixtures: float64 tolerance helpers and weight copying from PyTorch's reference modules."""
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def copy_mha(ours, theirs: nn.MultiheadAttention) -> None:
    """Copy nn.MultiheadAttention's packed projections into the course's MultiHeadAttention."""
    c = theirs.embed_dim
    with torch.no_grad():
        for i, proj in enumerate([ours.q_proj, ours.k_proj, ours.v_proj]):
            proj.weight.copy_(theirs.in_proj_weight[i * c:(i + 1) * c])
            proj.bias.copy_(theirs.in_proj_bias[i * c:(i + 1) * c])
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def copy_block(ours, theirs) -> None:
    """Copy an nn.TransformerEncoderLayer or nn.TransformerDecoderLayer into the course's block."""
    copy_mha(ours.self_attn, theirs.self_attn)
    if hasattr(theirs, "multihead_attn"):
        copy_mha(ours.cross_attn, theirs.multihead_attn)
    norms = [theirs.norm1, theirs.norm2] + ([theirs.norm3] if hasattr(theirs, "norm3") else [])
    with torch.no_grad():
        ours.ff.linear1.load_state_dict(theirs.linear1.state_dict())
        ours.ff.linear2.load_state_dict(theirs.linear2.state_dict())
        for mine, ref in zip(ours.norms, norms, strict=True):
            mine.load_state_dict(ref.state_dict())

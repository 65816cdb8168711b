"""helpers.course.reference: copying PyTorch's weights into the course's modules makes them equal."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from helpers.attention import MultiHeadAttention
from helpers.course.reference import copy_block_from_torch, copy_mha_from_torch
from helpers.layers import DecoderBlock, EncoderBlock, TransformerConfig

D64 = dict(dtype=torch.float64)


def test_copy_mha_from_torch_makes_outputs_equal():
    ref = nn.MultiheadAttention(16, 4, batch_first=True, **D64).eval()
    ours = MultiHeadAttention(16, 4).double().eval()
    copy_mha_from_torch(ours, ref)
    x = torch.randn(2, 5, 16, **D64)
    torch.testing.assert_close(ours(x)[0], ref(x, x, x, need_weights=False)[0], rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="num_heads=4"):
        copy_mha_from_torch(MultiHeadAttention(16, 2), ref)


@pytest.mark.parametrize("norm_first", [True, False])
def test_copy_block_from_torch_makes_encoder_and_decoder_blocks_equal(norm_first):
    cfg = TransformerConfig(d_model=16, n_heads=4, d_ff=32, dropout=0.0, norm_first=norm_first)
    kw = dict(dim_feedforward=32, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first, **D64)
    enc_ref, dec_ref = nn.TransformerEncoderLayer(16, 4, **kw).eval(), nn.TransformerDecoderLayer(16, 4, **kw).eval()
    enc, dec = EncoderBlock(cfg).double().eval(), DecoderBlock(cfg).double().eval()
    copy_block_from_torch(enc, enc_ref)
    copy_block_from_torch(dec, dec_ref)
    x, memory = torch.randn(2, 5, 16, **D64), torch.randn(2, 7, 16, **D64)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc_ref(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(dec(x, memory), dec_ref(x, memory, tgt_mask=causal), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="LayerNorms"):
        copy_block_from_torch(enc, dec_ref)

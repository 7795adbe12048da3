"""Sparse patterns of the survey: the banded local attention equals its dense reference; pattern shapes; refusals."""
import argparse

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, ENCODER_SELF, AttentionSpecError, check_position
from fairseq_eatt.attention import get_attention_class
from fairseq_eatt.attention.sparse import _SparsePattern


def layer(name, **flags):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    return cls(16, 4, self_attention=True, **cls.kwargs_from_args(argparse.Namespace(**flags), ENCODER_SELF)).eval()


def causal(t):
    return torch.triu(torch.full((t, t), float("-inf")), 1)


@pytest.mark.parametrize("use_causal", [False, True])
def test_banded_local_attention_equals_the_dense_masked_reference(use_causal):
    m = layer("local", attention_window=2)
    m.DENSE_UP_TO = 0  # the banded path even at this short length (short sequences use the dense form)
    x = torch.randn(9, 2, 16)
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    kpm[1, :3] = True  # left padding in the second sentence
    mask = causal(9) if use_causal else None
    out, w = m(x, x, x, key_padding_mask=kpm, attn_mask=mask, need_head_weights=True)
    dense = _SparsePattern.attend  # the generic path: full (T, S) scores with the pattern masked
    m.attend = lambda *a: dense(m, *a)
    ref, wref = m(x, x, x, key_padding_mask=kpm, attn_mask=mask, need_head_weights=True)
    real = ~kpm.t()  # outputs at padding positions are never used
    torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w[:, real.t()], wref[:, real.t()], rtol=1e-5, atol=1e-6)
    assert (w[:, 0, 5, :3] == 0).all() and (w[:, 0, 5, 8] == 0).all()  # outside the window of 2
    assert w[:, 0, 5, 3:8].sum() > 0


def weights(name, t=12, **flags):
    m = layer(name, **flags)
    x = torch.randn(t, 1, 16)
    _, w = m(x, x, x, need_weights=True)
    return w[0]


def test_strided_pattern():
    w = weights("strided", attention_stride=4)
    seen = w[10] > 0
    assert seen[[10, 9, 8, 7, 11, 6, 2, 3]].tolist() == [True, True, True, True, True, True, True, False]


def test_block_sparse_pattern():
    w = weights("block_sparse", t=16, block_size=4, block_sparse_neighbors=0, block_sparse_global=1)
    assert (w[9, 8:12] > 0).all() and (w[9, 0:4] > 0).all()  # own block and the global first block
    assert (w[9, 4:8] == 0).all() and (w[9, 12:] == 0).all()
    assert (w[1] > 0).all()  # a global block sees everything


@pytest.mark.parametrize("name", ["local", "strided", "block_sparse"])
def test_sparse_patterns_are_refused_as_cross_attention(name):
    with pytest.raises(AttentionSpecError, match="--decoder-cross-attention .* share no positions"):
        check_position(name, DECODER_CROSS)


@pytest.mark.parametrize("flags,match", [({"attention_window": -1}, "--attention-window"),
                                         ({"attention_stride": 0}, "--attention-stride")])
def test_bad_pattern_sizes_are_refused(flags, match):
    name = "local" if "attention_window" in flags else "strided"
    with pytest.raises(ValueError, match=match):
        layer(name, **flags)

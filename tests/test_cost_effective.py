"""Optimized, Efficient and Super attention (Hosseini et al.): parameter reductions, Super's mixing matrix."""
import argparse

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, get_attention_class

from .helpers import assert_same_on_either_padding_side


def layer(name, d=16, h=4, position=ENCODER_SELF, **flags):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    cross = position == DECODER_CROSS
    kwargs = cls.kwargs_from_args(argparse.Namespace(**flags), position)
    return cls(d, h, self_attention=not cross, encoder_decoder_attention=cross, **kwargs).eval()


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,reduction", [("optimized", 0.25), ("efficient", 0.50)])
def test_parameter_reduction_at_d512(name, reduction):
    vanilla = n_params(layer("vanilla", 512, 8))
    assert 1 - n_params(layer(name, 512, 8)) / vanilla == pytest.approx(reduction, abs=1e-9)


def test_super_has_about_25_percent_fewer_parameters_at_max_length_d():
    vanilla = n_params(layer("vanilla", 512, 8))
    sup = layer("super", 512, 8, attention_max_length=512)
    assert sup.mixing.shape == (512, 512)
    assert 0.24 < 1 - n_params(sup) / vanilla < 0.26


def test_values_and_keys_are_the_input_blocks():
    m = layer("efficient")
    x = torch.randn(5, 1, 16)
    _, w = m(x, x, x, need_head_weights=True)
    q = m.q_proj(x[:, 0]) * 0.5  # 1 / sqrt(head dim 4)
    for h in range(4):
        blk = slice(4 * h, 4 * h + 4)
        torch.testing.assert_close(w[h, 0], torch.softmax(q[:, blk] @ x[:, 0, blk].t(), -1), rtol=1e-5, atol=1e-6)


def causal(t):
    return torch.triu(torch.full((t, t), float("-inf")), 1)


def test_super_does_not_leak_the_future_even_with_a_dense_mixing_matrix():
    m = layer("super", position=DECODER_SELF, attention_max_length=16)
    with torch.no_grad():
        m.mixing.fill_(1.0)  # every entry nonzero: only the causal mask can keep the future out
    x = torch.randn(6, 2, 16)
    out, _ = m(x, x, x, attn_mask=causal(6))
    changed = x.clone()
    changed[5] += 10.0
    out2, _ = m(changed, changed, changed, attn_mask=causal(6))
    torch.testing.assert_close(out2[:5], out[:5])
    assert not torch.allclose(out2[5], out[5])


@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_CROSS])
def test_super_keeps_padding_out_of_the_mix_on_either_side(position):
    m = layer("super", position=position, attention_max_length=16)
    with torch.no_grad():
        m.mixing.normal_()
    assert_same_on_either_padding_side(m, cross=position == DECODER_CROSS)


def test_cross_attention_needs_equal_encoder_and_decoder_dims():
    cls = get_attention_class("efficient")
    with pytest.raises(ValueError, match="key input must have the model's dimension"):
        cls(16, 4, kdim=8, vdim=16, encoder_decoder_attention=True)
    with pytest.raises(ValueError, match="uses its input as values"):
        get_attention_class("optimized")(16, 4, kdim=8, vdim=8, encoder_decoder_attention=True)

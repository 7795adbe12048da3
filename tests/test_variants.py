"""Variant-specific behaviour: the E-ATT ablations and the synthesizers (padding side, maximum length)."""
import argparse
import math

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, get_attention_class

E, H = 16, 4


def build(name, position=ENCODER_SELF, **flags):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    kwargs = cls.kwargs_from_args(argparse.Namespace(**flags), position)
    cross = position == DECODER_CROSS
    return cls(E, H, self_attention=not cross, encoder_decoder_attention=cross, **kwargs).eval()


def test_eatt_select_uses_dot_products_of_selected_rows():
    m = build("eatt_select", eatt_threshold=0.3)
    x = torch.randn(4, 1, E)
    _, w = m(x, x, x, need_head_weights=True)
    bits = (x[:, 0] > 0.3).float()
    q = bits @ m.q_select.weight.t() + m.q_select.bias
    k = bits @ m.k_select.weight.t() + m.k_select.bias
    d = E // H
    for h in range(H):
        qh, kh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d]
        torch.testing.assert_close(w[h, 0], torch.softmax(qh @ kh.t() / math.sqrt(d), -1), rtol=1e-5, atol=1e-6)


def test_eatt_l1_uses_l1_distance_of_linear_projections():
    m = build("eatt_l1")
    x = torch.randn(4, 1, E)
    _, w = m(x, x, x, need_head_weights=True)
    q = m.q_proj(x[:, 0])
    k = m.k_proj(x[:, 0])
    d = E // H
    for h in range(H):
        qh, kh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d]
        dist = (qh[:, None] - kh[None]).abs().sum(-1)
        torch.testing.assert_close(w[h, 0], torch.softmax(-dist / math.sqrt(d), -1), rtol=1e-5, atol=1e-6)


SYNTHS = ["synth_dense", "synth_random", "synth_random_fixed"]


def pad(x, n, left):
    filler = torch.randn(n, x.size(1), x.size(2)) * 7
    return torch.cat([filler, x], 0) if left else torch.cat([x, filler], 0)


def pad_mask(length, n, left):
    real, pads = [False] * length, [True] * n
    return torch.tensor([pads + real if left else real + pads])


@pytest.mark.parametrize("name", SYNTHS)
def test_encoder_self_attention_same_on_either_padding_side(name):
    m = build(name, attention_max_length=16)
    x = torch.randn(5, 1, E)
    ref, _ = m(x, x, x)
    for left in (True, False):
        xp = pad(x, 3, left)
        out, _ = m(xp, xp, xp, key_padding_mask=pad_mask(5, 3, left))
        real = out[3:] if left else out[:5]
        torch.testing.assert_close(real, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SYNTHS)
def test_cross_attention_columns_are_source_positions_on_either_padding_side(name):
    m = build(name, DECODER_CROSS, attention_max_length=16)
    src = torch.randn(5, 1, E)
    tgt = torch.randn(3, 1, E)
    ref, wref = m(tgt, src, src, static_kv=True, need_weights=True)
    for left in (True, False):
        sp = pad(src, 2, left)
        out, w = m(tgt, sp, sp, key_padding_mask=pad_mask(5, 2, left), static_kv=True, need_weights=True)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w[:, :, 2:] if left else w[:, :, :5], wref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SYNTHS)
def test_batch_longer_than_max_length_gives_a_clear_error(name):
    m = build(name, attention_max_length=4)
    x = torch.randn(6, 2, E)
    with pytest.raises(ValueError, match=r"6 query positions \(at most 4\) and 6 key positions \(at most 4\)"
                                         r".*--attention-max-length"):
        m(x, x, x)


@pytest.mark.parametrize("position,flag", [(ENCODER_SELF, "--max-source-positions"),
                                           (DECODER_SELF, "--max-target-positions"),
                                           (DECODER_CROSS, "--max-target-positions / --max-source-positions")])
def test_max_length_defaults_to_the_models_max_positions(position, flag):
    m = build("synth_random", position, max_source_positions=7, max_target_positions=9)
    expected = {ENCODER_SELF: (7, 7), DECODER_SELF: (9, 9), DECODER_CROSS: (9, 7)}[position]
    assert (m.max_query_length, m.max_key_length) == expected
    assert m.logits.shape == (H, *expected)
    assert m.max_length_flag == flag


def test_fixed_random_synthesizer_is_saved_but_not_trained():
    trained, fixed = build("synth_random", attention_max_length=8), build("synth_random_fixed", attention_max_length=8)
    assert "logits" in dict(trained.named_parameters())
    assert "logits" not in dict(fixed.named_parameters())
    assert "logits" in fixed.state_dict()


def test_dense_synthesizer_logits_depend_on_the_query_only():
    m = build("synth_dense", attention_max_length=8)
    x = torch.randn(4, 1, E)
    y = torch.randn(4, 1, E)
    _, w1 = m(x, x, x, need_weights=True)
    _, w2 = m(x, y, y, need_weights=True)  # other keys, same query: same weights
    torch.testing.assert_close(w1, w2)
    assert m.logits_weight.shape == (H, E // H, 8)

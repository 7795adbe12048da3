"""The attention modules on their own: masks, incremental decoding, beam reordering, shapes, errors."""
import argparse
import math

import pytest
import torch

from fairseq_eatt.attention import (DECODER_CROSS, ENCODER_SELF, available_attentions, build_attention,
                                    get_attention_class)
from fairseq_eatt.attention.registry import AttentionSpecError

from .helpers import LargestTensor

E, H = 16, 4
VARIANTS = available_attentions()
CAUSAL = [n for n in VARIANTS if get_attention_class(n).capabilities.causal]
CROSS = [n for n in VARIANTS if get_attention_class(n).capabilities.cross]


def build(name, cross=False, seed=0, **kwargs):
    torch.manual_seed(seed)
    position = DECODER_CROSS if cross else ENCODER_SELF
    return build_attention(name, E, H, position, args=argparse.Namespace(attention_max_length=32), **kwargs).eval()


def causal_mask(t):
    return torch.triu(torch.full((t, t), float("-inf")), 1)


def inputs(t=6, b=3, scale=1.5, seed=1):
    torch.manual_seed(seed)
    return torch.randn(t, b, E) * scale


@pytest.mark.parametrize("name", VARIANTS)
def test_output_shape_and_weights(name):
    m = build(name)
    x = inputs()
    out, w = m(x, x, x, need_weights=True)
    assert out.shape == x.shape
    assert w.shape == (3, 6, 6)
    if m.capabilities.weights_are_probabilities:
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 6))
    _, hw = m(x, x, x, need_head_weights=True)
    assert hw.shape == (H, 3, 6, 6)


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_does_not_change_real_positions(name):
    m = build(name)
    x = inputs(t=5, b=1)
    ref, _ = m(x, x, x)
    padded = torch.cat([x, torch.randn(3, 1, E) * 10], dim=0)
    kpm = torch.tensor([[False] * 5 + [True] * 3])
    out, w = m(padded, padded, padded, key_padding_mask=kpm, need_weights=True)
    torch.testing.assert_close(out[:5], ref, rtol=1e-5, atol=1e-5)
    assert (w[0, :, 5:] == 0).all()


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_mask_hides_the_future(name):
    m = build(name)
    x = inputs(t=6, b=2)
    out, _ = m(x, x, x, attn_mask=causal_mask(6))
    changed = x.clone()
    changed[4:] += torch.randn(2, 2, E) * 5
    out2, _ = m(changed, changed, changed, attn_mask=causal_mask(6))
    torch.testing.assert_close(out2[:4], out[:4])
    assert not torch.allclose(out2[4:], out[4:])


@pytest.mark.parametrize("name", CAUSAL)
def test_incremental_self_attention_equals_full_pass_with_beam_reorder(name):
    m = build(name)
    t, b = 7, 4
    x = inputs(t=t, b=b)
    full, _ = m(x, x, x, attn_mask=causal_mask(t))
    state = {}
    order = torch.arange(b)
    steps = []
    for i in range(t):
        if i == 3:  # beam search reorders its hypotheses: cached keys/values must follow
            new_order = torch.tensor([2, 0, 3, 1])
            m.reorder_incremental_state(state, new_order)
            order = order[new_order]
        xi = x[i : i + 1, order]
        o, _ = m(xi, xi, xi, incremental_state=state)
        steps.append((i, order.clone(), o))
    for i, ord_i, o in steps:
        torch.testing.assert_close(o[0], full[i, ord_i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CROSS)
def test_incremental_cross_attention_equals_full_pass(name):
    m = build(name, cross=True)
    src = inputs(t=5, b=3, seed=2)
    tgt = inputs(t=4, b=3, seed=3)
    kpm = torch.zeros(3, 5, dtype=torch.bool)
    kpm[1, :2] = True  # left padding, as fairseq pads sources
    full, wfull = m(tgt, src, src, key_padding_mask=kpm, static_kv=True, need_weights=True)
    state = {}
    for i in range(4):
        if i == 2:
            m.reorder_incremental_state(state, torch.tensor([0, 1, 2]))
        o, w = m(tgt[i : i + 1], src, src, key_padding_mask=kpm, incremental_state=state, static_kv=True,
                 need_weights=True)
        torch.testing.assert_close(o[0], full[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w[:, 0], wfull[:, i], rtol=1e-5, atol=1e-5)
    assert (wfull[1, :, :2] == 0).all()


@pytest.mark.parametrize("name", CROSS)
def test_beam_search_shares_cross_attention_keys_per_sentence(name):
    """With set_beam_size (as fairseq's generator calls it), beamable cross-attention caches the source's keys once
    per sentence; outputs equal the full pass through hypothesis reordering and finished sentences leaving, and
    any other order falls back to one copy per hypothesis."""
    beam, sentences, src_len, steps = 3, 2, 5, 5
    m = build(name, cross=True)
    m.set_beam_size(beam)
    src = inputs(t=src_len, b=sentences, seed=2).repeat_interleave(beam, dim=1)  # fairseq expands per hypothesis
    kpm = torch.zeros(sentences, src_len, dtype=torch.bool)
    kpm[1, :2] = True
    kpm = kpm.repeat_interleave(beam, dim=0)
    tgt = inputs(t=steps, b=sentences * beam, seed=3)
    full, wfull = m(tgt, src, src, key_padding_mask=kpm, static_kv=True, need_weights=True)
    orders = {1: [2, 0, 0, 4, 5, 3],  # hypotheses reordered within each sentence
              3: [4, 5, 3],  # the first sentence finished: only the second one's hypotheses remain
              4: [2, 0]}  # not beam search's order
    state, rows, copies = {}, torch.arange(sentences * beam), []
    for i in range(steps):
        if i in orders:
            new_order = torch.tensor(orders[i])
            m.reorder_incremental_state(state, new_order)
            rows, src, kpm = rows[new_order], src[:, new_order], kpm[new_order]
        o, w = m(tgt[i : i + 1, rows], src, src, key_padding_mask=kpm, incremental_state=state, static_kv=True,
                 need_weights=True)
        torch.testing.assert_close(o[0], full[i, rows], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w[:, 0], wfull[rows, i], rtol=1e-5, atol=1e-5)
        copies.append(next(iter(state.values()))["prev_key"].size(0))
    # one copy per remaining sentence where the variant can share, one per hypothesis after the foreign order
    assert copies == ([2, 2, 2, 1, 2] if m.beamable else [6, 6, 6, 3, 2])


@pytest.mark.parametrize("name", [n for n in CROSS if build(n, cross=True).beamable])
def test_hypotheses_with_different_sources_never_share_keys(name):
    m = build(name, cross=True)
    m.set_beam_size(2)  # a beam size left over from an earlier search, now used with distinct sources
    src, tgt = inputs(t=5, b=4, seed=2), inputs(t=1, b=4, seed=3)
    full, _ = m(tgt, src, src, static_kv=True)
    state = {}
    o, _ = m(tgt, src, src, incremental_state=state, static_kv=True)
    torch.testing.assert_close(o, full, rtol=1e-5, atol=1e-5)
    assert next(iter(state.values()))["prev_key"].size(0) == 4


@pytest.mark.parametrize("name", VARIANTS)
def test_fully_padded_row_is_finite(name):
    m = build(name)
    x = inputs(t=3, b=2)
    kpm = torch.tensor([[False, False, False], [True, True, True]])
    out, w = m(x, x, x, key_padding_mask=kpm, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()


def test_vanilla_matches_fairseq_multihead_attention():
    from fairseq.modules import MultiheadAttention

    ours = build("vanilla")
    theirs = MultiheadAttention(E, H, self_attention=True).eval()
    theirs.load_state_dict(ours.state_dict())
    x = inputs()
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[0, 4:] = True
    a, wa = ours(x, x, x, key_padding_mask=kpm, attn_mask=causal_mask(6), need_weights=True)
    b, wb = theirs(x, x, x, key_padding_mask=kpm, attn_mask=causal_mask(6), need_weights=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-6)


def test_eatt_scores_are_scaled_negative_l1_of_selected_rows():
    m = build("eatt", threshold=0.5)
    x = inputs(t=3, b=1)
    _, w = m(x, x, x, need_head_weights=True)
    xb = (x[:, 0] > 0.5).float()  # (T, E) binarized input
    q = xb @ m.q_select.weight.t() + m.q_select.bias
    k = xb @ m.k_select.weight.t() + m.k_select.bias
    dk = E // H
    for h in range(H):
        qh, kh = q[:, h * dk : (h + 1) * dk], k[:, h * dk : (h + 1) * dk]
        dist = (qh[:, None, :] - kh[None, :, :]).abs().sum(-1)
        expected = torch.softmax(-dist / math.sqrt(dk), dim=-1)
        torch.testing.assert_close(w[h, 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale,divisor", [("qk-head-dim", math.sqrt(8 // H)), ("head-dim", math.sqrt(E // H)),
                                           ("model-dim", math.sqrt(E)), ("none", 1.0)])
def test_eatt_score_scale_options(scale, divisor):
    m = build("eatt", qk_dim=8, score_scale=scale)
    assert m.score_divisor == pytest.approx(divisor)
    assert m.q_select.out_features == 8


def test_eatt_cross_scale_only_applies_to_cross_attention():
    self_attn = build("eatt", score_scale="none", cross_score_scale="model-dim")
    cross = build("eatt", cross=True, score_scale="none", cross_score_scale="model-dim")
    assert self_attn.score_divisor == 1.0 and cross.score_divisor == pytest.approx(math.sqrt(E))


@pytest.mark.parametrize("norm", ["static", "learnable"])
def test_eatt_input_norm_option_trains(norm):
    m = build("eatt", threshold=0.0, input_norm=norm).train()
    x = inputs().requires_grad_()
    out, _ = m(x, x, x)
    out.sum().backward()
    assert m.q_select.weight.grad.abs().sum() > 0  # the surrogate gradient reaches W_Q through the binarization
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "abc"])
def test_invalid_threshold_is_refused(bad):
    with pytest.raises(ValueError, match="--eatt-threshold"):
        build("eatt", threshold=bad)


def test_invalid_qk_dim_is_refused():
    with pytest.raises(ValueError, match="--eatt-qk-dim"):
        build("eatt", qk_dim=6)  # not a multiple of 4 heads


def test_unknown_variant_is_refused_with_choices():
    with pytest.raises(AttentionSpecError, match="unknown attention variant 'nope'.*valid choices: .*eatt"):
        get_attention_class("nope", "--encoder-self-attention")


def test_eatt_never_materializes_pairwise_difference_tensor():
    b, h, t, s, e = 4, 2, 16, 16, 64
    torch.manual_seed(0)
    m = get_attention_class("eatt")(e, h, encoder_decoder_attention=True)
    q_in = torch.randn(t, b, e, requires_grad=True)
    kv = torch.randn(s, b, e, requires_grad=True)
    with LargestTensor() as probe:
        out, _ = m(q_in, kv, kv)
        out.sum().backward()
    five_d = b * h * t * s * (e // h)
    assert probe.largest < five_d / 4, (probe.largest, five_d)

"""Declared operation counts equal the arithmetic the code executes (complete convention), for every variant."""
import argparse

import pytest
import torch

from fairseq_eatt.attention import (DECODER_CROSS, ENCODER_SELF, available_attentions, build_attention,
                                    get_attention_class)
from fairseq_eatt.energy.measure import measure
from fairseq_eatt.attention.counts import OpCounts, projection

SHAPES = [(7, 16, 4), (11, 32, 2)]


def build(name, d, h):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), ENCODER_SELF)
    return cls, options, build_attention(name, d, h, ENCODER_SELF, **options).eval()


@pytest.mark.parametrize("name", available_attentions())
@pytest.mark.parametrize("length,d,heads", SHAPES)
def test_declared_counts_equal_measured_counts(name, length, d, heads):
    cls, options, module = build(name, d, heads)
    assert cls.cost.declared(), f"{name} must declare its operation counts"
    x = torch.randn(length, 1, d) * 1.5
    _, measured = measure(module, x, x, x, need_weights=False)
    ratio = float((x > 1.0).double().mean())  # E-ATT's binarized inputs at the default threshold
    declared = cls.cost.op_counts(length, length, d, heads, "complete", ratio, **options, self_attention=True)["attention"]
    declared = declared + projection(length, d, d)  # the module also runs its output projection
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add, rel=1e-9)


def test_selection_of_nothing_still_adds_the_bias():
    cls, options, module = build("eatt", 16, 4)
    x = torch.randn(5, 1, 16) * 1.5
    x[2] = -5.0  # no feature above the threshold for this token
    _, measured = measure(module, x, x, x, need_weights=False)
    ratio = float((x > 1.0).double().mean())
    declared = cls.cost.op_counts(5, 5, 16, 4, "complete", ratio)["attention"] + projection(5, 16, 16)
    # documented difference: the empty token adds its bias in W_Q and in W_K (16 outputs each)
    assert measured.add - declared.add == pytest.approx(2 * 16)


def test_selection_with_a_binary_left_operand_counts_additions_only():
    w = torch.randn(4, 3)
    bits = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    _, selected = measure(torch.mm, bits, w)
    assert selected == OpCounts(add=(2 + 0) * 3)  # 3 selected rows -> 2 additions; 1 selected row -> none
    _, dense = measure(torch.mm, bits + 0.5, w)
    assert dense == OpCounts(mul=2 * 4 * 3, add=2 * 3 * 3)


@pytest.mark.parametrize("length", [9, 23])  # window 2: dense up to 20 keys, chunks beyond
def test_local_counts_follow_the_form_it_runs(length):
    cls, _, module = build("local", 16, 4)
    module.window = 2
    x = torch.randn(length, 1, 16)
    _, measured = measure(module, x, x, x, need_weights=False)
    declared = cls.cost.op_counts(length, length, 16, 4, "complete", window=2)["attention"] + projection(length, 16, 16)
    assert measured.mul == declared.mul and measured.add == pytest.approx(declared.add, rel=1e-9)


EATT_OPTION_FLAGS = {
    "recipe=authors": {"eatt_recipe": "authors"},
    "learn-threshold": {"eatt_threshold": 0.0, "eatt_learn_threshold": True},
    "module-norm=learnable": {"eatt_threshold": 0.0, "eatt_module_norm": "learnable"},
    "module-norm=static": {"eatt_threshold": 0.0, "eatt_module_norm": "static"},
    "input-norm=learnable": {"eatt_threshold": 0.0, "eatt_input_norm": "learnable"},
    "learn-temperature": {"eatt_learn_temperature": True},
    "all-levers": {"eatt_recipe": "authors", "eatt_learn_threshold": True, "eatt_module_norm": "learnable",
                   "eatt_learn_temperature": True, "eatt_qk_dim": 8},
}


@pytest.mark.parametrize("variant", ["eatt", "eatt_select"])
@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_CROSS])
@pytest.mark.parametrize("flags", list(EATT_OPTION_FLAGS), ids=list(EATT_OPTION_FLAGS))
def test_eatt_options_declare_what_they_execute(variant, position, flags):
    """Layer norms, learned thresholds and temperatures, narrow Q/K: declared = executed, in self- and
    cross-attention (query and key sides binarize different inputs there)."""
    d, h, lq, lk = 16, 4, 5, 7
    torch.manual_seed(0)
    cls = get_attention_class(variant)
    options = cls.kwargs_from_args(argparse.Namespace(**EATT_OPTION_FLAGS[flags]), position)
    cross = position == DECODER_CROSS
    module = build_attention(variant, d, h, position, **options).eval()
    src = torch.randn(lk, 1, d) * 1.5
    query = torch.randn(lq, 1, d) * 1.5 if cross else src
    lq = lq if cross else lk
    module.track_binarization = True  # the nonzero ratios this input gives, from the module itself
    with torch.no_grad():
        module(query, src, src, static_kv=cross)
    counts = module.binarization_counts
    ratios = (float(counts["query"].sum()) / (lq * d), float(counts["key"].sum()) / (lk * d))
    module.track_binarization = False
    _, measured = measure(module, query, src, src, need_weights=False, static_kv=cross)
    declared = cls.cost.op_counts(lq, lk, d, h, "complete", ratios, **options, self_attention=not cross)["attention"]
    declared = declared + projection(lq, d, d)
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    # a token with no selected feature still adds its bias, qk_dim additions (documented in selection_ops)
    empty = int((counts["query"] == 0).sum()) + int((counts["key"] == 0).sum())
    assert measured.add == pytest.approx(declared.add + empty * module.qk_dim, rel=1e-9)


def test_the_counter_refuses_arithmetic_it_does_not_know():
    """An operation neither charged nor declared free stops the measurement instead of counting zero."""
    from fairseq_eatt.energy.measure import UncountedOperation

    with pytest.raises(UncountedOperation, match="aten.sin"):
        measure(torch.sin, torch.randn(3))
    _, counts = measure(torch.relu, torch.randn(3))  # declared free: an activation
    assert counts.add == counts.mul == 0


# ---- every position: causal decoder self-attention with its mask, cross-attention with padding --------------------

def _ratios(module, *args, **kwargs):
    """E-ATT's nonzero ratios (query, key side) for this call, from the module itself; None for other variants."""
    if not module.capabilities.binarizes:
        return None
    module.track_binarization = True
    with torch.no_grad():
        module(*args, **kwargs)
    module.track_binarization = False
    counts = module.binarization_counts
    d = module.embed_dim
    q = float(counts["query"].sum()) / (counts["query"].numel() * d)
    k = float(counts["key"].sum()) / (counts["key"].numel() * d) if "key" in counts else q
    return q if module.self_attention else (q, k)


def _empty_token_additions(module) -> int:
    """A binarized token with no feature on still adds its selection bias: qk_dim additions the declaration
    leaves out (see selection_ops); 0 for other variants."""
    if not module.capabilities.binarizes:
        return 0
    counts = module.binarization_counts
    return sum(int((c == 0).sum()) for c in counts.values()) * module.qk_dim


CAUSAL_CASES = [n for n in available_attentions() if get_attention_class(n).capabilities.causal]
CROSS_CASES = [n for n in available_attentions() if get_attention_class(n).capabilities.cross]


@pytest.mark.parametrize("name", CAUSAL_CASES)
@pytest.mark.parametrize("length", [7, 40, 130])  # 130: performer chunks, local bands
def test_causal_decoder_self_attention_declares_its_mask(name, length):
    d, h = 16, 4
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=256), "decoder_self")
    module = build_attention(name, d, h, "decoder_self", **options).eval()
    x = torch.randn(length, 1, d) * 1.5
    mask = torch.triu(torch.full((length, length), float("-inf")), 1)
    ratio = _ratios(module, x, x, x, attn_mask=mask)
    _, measured = measure(module, x, x, x, attn_mask=mask, need_weights=False)
    declared = cls.cost.op_counts(length, length, d, h, "complete", ratio, **options, self_attention=True,
                             causal=True)["attention"] + projection(length, d, d)
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add + _empty_token_additions(module), rel=1e-9)


@pytest.mark.parametrize("name", CROSS_CASES)
def test_cross_attention_with_padding_declares_what_it_executes(name):
    """Two sentences, the first with left padding (fairseq's sources): the padded length is computed, masked."""
    d, h, lq, lk = 16, 4, 5, 9
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), DECODER_CROSS)
    module = build_attention(name, d, h, DECODER_CROSS, **options).eval()
    src, tgt = torch.randn(lk, 2, d) * 1.5, torch.randn(lq, 2, d) * 1.5
    padding = torch.zeros(2, lk, dtype=torch.bool)
    padding[0, :3] = True
    ratio = _ratios(module, tgt, src, src, key_padding_mask=padding, static_kv=True)
    _, measured = measure(module, tgt, src, src, key_padding_mask=padding, static_kv=True, need_weights=False)
    declared = (cls.cost.op_counts(lq, lk, d, h, "complete", ratio, **options, self_attention=False)["attention"]
                + projection(lq, d, d)).scaled(2)
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add + _empty_token_additions(module), rel=1e-9)


# ---- one incremental (beam-search) step: keys and values come from the cache ----------------------------------------

@pytest.mark.parametrize("name", CAUSAL_CASES)
def test_a_decoder_self_attention_step_declares_what_it_executes(name):
    """Step t of decoding: one query, t keys of which only the new one is projected."""
    d, h, length = 16, 4, 9
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), "decoder_self")
    module = build_attention(name, d, h, "decoder_self", **options).eval()
    x = torch.randn(length, 1, d) * 1.5
    state = {}
    with torch.no_grad():
        for t in range(length - 1):
            module(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)
    step = x[-1:]
    ratio = _ratios(module, step, step, step, incremental_state={k: dict(v) for k, v in state.items()})
    _, measured = measure(module, step, step, step, incremental_state=state, need_weights=False)
    declared = cls.cost.op_counts(1, length, d, h, "complete", ratio, **options, self_attention=True,
                             new_keys=1)["attention"] + projection(1, d, d)
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add + _empty_token_additions(module), rel=1e-9)


@pytest.mark.parametrize("name", CROSS_CASES)
def test_a_cross_attention_step_declares_what_it_executes(name):
    """After the first step, cross-attention's keys and values (and what a variant derives from them) are
    cached: a step projects its one query only."""
    d, h, lk = 16, 4, 9
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), DECODER_CROSS)
    module = build_attention(name, d, h, DECODER_CROSS, **options).eval()
    src, tgt = torch.randn(lk, 1, d) * 1.5, torch.randn(2, 1, d) * 1.5
    state = {}
    with torch.no_grad():
        module(tgt[:1], src, src, static_kv=True, incremental_state=state)
    ratio = _ratios(module, tgt[1:], src, src, static_kv=True,
                    incremental_state={k: dict(v) for k, v in state.items()})
    _, measured = measure(module, tgt[1:], src, src, static_kv=True, incremental_state=state, need_weights=False)
    declared = cls.cost.op_counts(1, lk, d, h, "complete", ratio, **options, self_attention=False,
                             new_keys=0)["attention"] + projection(1, d, d)
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add + _empty_token_additions(module), rel=1e-9)

"""Declared operation counts equal the arithmetic the code executes (complete convention), for every variant."""
import argparse

import pytest
import torch

from fairseq_eatt.attention import ENCODER_SELF, available_attentions, get_attention_class
from fairseq_eatt.energy.measure import measure
from fairseq_eatt.energy.ops import OpCounts, projection

SHAPES = [(7, 16, 4), (11, 32, 2)]


def build(name, d, h):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), ENCODER_SELF)
    return cls, options, cls(d, h, self_attention=True, **options).eval()


@pytest.mark.parametrize("name", available_attentions())
@pytest.mark.parametrize("length,d,heads", SHAPES)
def test_declared_counts_equal_measured_counts(name, length, d, heads):
    cls, options, module = build(name, d, heads)
    assert cls.declares_op_counts(), f"{name} must declare its operation counts"
    x = torch.randn(length, 1, d) * 1.5
    _, measured = measure(module, x, x, x, need_weights=False)
    ratio = float((x > 1.0).double().mean())  # E-ATT's binarized inputs at the default threshold
    declared = cls.op_counts(length, length, d, heads, "complete", ratio, **options, self_attention=True)["attention"]
    declared = declared + projection(length, d, d)  # the module also runs its output projection
    assert measured.mul == declared.mul and measured.cmp == declared.cmp
    assert measured.add == pytest.approx(declared.add, rel=1e-9)


def test_selection_of_nothing_still_adds_the_bias():
    cls, options, module = build("eatt", 16, 4)
    x = torch.randn(5, 1, 16) * 1.5
    x[2] = -5.0  # no feature above the threshold for this token
    _, measured = measure(module, x, x, x, need_weights=False)
    ratio = float((x > 1.0).double().mean())
    declared = cls.op_counts(5, 5, 16, 4, "complete", ratio)["attention"] + projection(5, 16, 16)
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
    declared = cls.op_counts(length, length, 16, 4, "complete", window=2)["attention"] + projection(length, 16, 16)
    assert measured.mul == declared.mul and measured.add == pytest.approx(declared.add, rel=1e-9)

"""Decoding energy: fairseq's beam search under the counters. For every variant, what each attention call of a
few beam-search steps declares (operations) equals what it executes; traffic and reorders are counted."""
import pytest
import torch

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from fairseq_eatt.energy.decoding import count_generation, energy_of
from fairseq_eatt.energy.tables import BUILTIN

from .test_deployment import mix_flags, sample_of


def unpadded(task, seed=1, bsz=3, length=7):
    """Sentences of one length: E-ATT's declaration takes its nonzero ratio over real tokens, and padded tokens
    are binarized too (padding is covered call by call in test_energy_measured)."""
    sample = sample_of(task, seed, bsz, length)
    tokens = sample["net_input"]["src_tokens"]
    tokens[0, :2] = 5
    sample["net_input"]["src_lengths"] = torch.full((bsz,), length)
    return sample
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)


def tiny(data_dir, variant, seed=0):
    torch.manual_seed(seed)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *mix_flags(variant),
                           "--criterion", "label_smoothed_cross_entropy_with_aux")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # hypotheses that differ, so beams reorder
    return task, model.eval()


@pytest.mark.parametrize("variant", available_attentions())
def test_every_beam_search_step_declares_what_it_executes(data_dir, variant):
    task, model = tiny(data_dir, variant)
    count = count_generation(model, task, [unpadded(task)], beam=3, max_len_b=4)
    positions = {c.position for c in count.calls}
    assert positions == {ENCODER_SELF, DECODER_SELF, DECODER_CROSS}
    steps = [c for c in count.calls if c.position == DECODER_SELF]
    assert len(steps) >= 2 * 4 and {c.new_keys for c in steps} == {1}  # one new token per step, two layers
    cross = [c for c in count.calls if c.position == DECODER_CROSS]
    assert any(c.new_keys == 0 for c in cross) and any(c.new_keys for c in cross)  # cached after the first step
    for call in count.calls:
        assert call.executed.mul == call.declared.mul, call
        assert call.executed.cmp == call.declared.cmp, call
        assert call.executed.add == pytest.approx(call.declared.add, rel=1e-9), call
    assert count.sentences == 3 and count.target_tokens > 0
    assert count.reorder.reorder > 0  # beam search reorders the decoder's caches
    assert count.other_executed.mul > 0 and count.other_traffic.weights > 0


def test_weights_dominate_a_batch_of_one_and_amortize_over_a_batch(data_dir):
    task, model = tiny(data_dir, "vanilla")
    one = count_generation(model, task, [sample_of(task, seed=s, bsz=1) for s in range(4)], beam=2, max_len_b=4)
    four = count_generation(model, task, [sample_of(task, bsz=4)], beam=2, max_len_b=4)
    per_sentence = lambda c: c.total_traffic().weights / c.sentences  # noqa: E731
    assert per_sentence(four) < per_sentence(one) / 2
    table = BUILTIN["horowitz-45nm-fp32"]
    assert energy_of(one, table, "dram") > energy_of(one, table, "sram") > energy_of(one, table, None)

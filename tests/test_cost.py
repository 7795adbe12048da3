"""Each variant's cost model: declared beside its module, bound to it, and the shared parts added once."""
import pytest
import torch

from fairseq_eatt.attention import AttentionCost, available_attentions, get_attention_class, register_attention
from fairseq_eatt.attention.counts import OpCounts
from fairseq_eatt.attention.vanilla import VanillaAttention, VanillaCost


@pytest.mark.parametrize("name", available_attentions())
def test_every_variant_has_its_own_declared_cost_model(name):
    cls = get_attention_class(name)
    assert isinstance(cls.cost, AttentionCost) and cls.cost.module is cls
    assert cls.cost.declared(), f"{name}'s cost model declares no alignment"


def test_a_variant_registered_without_a_cost_model_is_refused():
    with pytest.raises(TypeError, match="cost"):
        register_attention("no_cost")(type("NoCost", (VanillaAttention,), {}))
    assert "no_cost" not in available_attentions()


def test_an_undeclared_cost_model_says_so():
    cost = AttentionCost(VanillaAttention)
    assert not cost.declared()
    with pytest.raises(NotImplementedError, match="alignment"):
        cost.op_counts(3, 3, 4, 2)


def test_vanilla_counts_written_out_from_the_formulas():
    """Paper convention, lq = lk = 3, d = 4: Q and K projections 2 * 3 * 4 * 4, scores 3 * 3 * 4; the values add
    their projection 3 * 4 * 4 and the weighted sum 3 * 3 * 4 (multiplications; additions the same)."""
    counts = get_attention_class("vanilla").cost.op_counts(3, 3, 4, 2, "paper")
    assert counts["alignment"] == OpCounts(mul=132, add=132)
    assert counts["attention"] == OpCounts(mul=216, add=216)
    # without W_V (optimized attention) the base leaves out exactly the value projection
    optimized = get_attention_class("optimized").cost.op_counts(3, 3, 4, 2, "paper")
    assert optimized["attention"] == OpCounts(mul=168, add=168)


def test_the_causal_mask_and_cached_keys_are_added_by_the_base():
    cost = get_attention_class("vanilla").cost
    full = cost.op_counts(3, 3, 4, 2, "complete")["attention"]
    causal = cost.op_counts(3, 3, 4, 2, "complete", causal=True)["attention"]
    assert causal - full == OpCounts(add=3 * 3 * 2)  # one addition per head and (query, key) pair
    # a decoding step with 2 of 3 keys cached skips their key and value projections (2 tokens x 4 x 4, twice)
    step = cost.op_counts(1, 3, 4, 2, "complete", new_keys=1)["attention"]
    assert cost.op_counts(1, 3, 4, 2, "complete")["attention"] - step == OpCounts(mul=64, add=64)


def test_weight_shapes_come_from_the_module_built_on_the_meta_device():
    shapes = VanillaCost(VanillaAttention).weight_shapes(8, 2)
    module = VanillaAttention(8, 2, self_attention=True)
    assert shapes == {name: p.numel() for name, p in module.named_parameters()}
    assert not any(p.device.type == "meta" for p in module.parameters())
    assert torch.tensor(0).device.type == "cpu"  # the meta device did not leak out of weight_shapes

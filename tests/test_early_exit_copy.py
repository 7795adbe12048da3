"""The early-exit decoder forward (models/early_exit.py) is a copy of fairseq's
TransformerDecoderBase.extract_features_scriptable with exits added: without exits (flag absent, or threshold 1)
it must compute exactly what fairseq's computes on the same weights, in a full pass, in training (same dropout
draws) and step by step with incremental state."""
import pytest
import torch
from fairseq.models.transformer import TransformerDecoderBase

import fairseq_eatt  # noqa: F401  (registers the plugin)

from .test_deployment import sample_of
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)

AUX = ("--criterion", "label_smoothed_cross_entropy_with_aux")
# Each setting reaches other branches of the copied forward: pre-norm with a final layer norm, an embedding layer
# norm, learned positions, unscaled embeddings, an output projection; fairseq's --cross-self-attention.
SETTINGS = {
    "post-norm, no exit flags": (),
    "pre-norm, threshold 1": ("--early-exit", *AUX, "--exit-threshold", "1", "--decoder-normalize-before",
                              "--layernorm-embedding", "--decoder-learned-pos", "--no-scale-embedding",
                              "--decoder-output-dim", "48", "--decoder-layers", "3"),
    "cross-self-attention": ("--cross-self-attention", "--decoder-self-attention", "vanilla",
                             "--decoder-cross-attention", "vanilla"),
}


def fairseq_forward(decoder, *args, **kwargs):
    return TransformerDecoderBase.extract_features_scriptable(decoder, *args, **kwargs)


def assert_same(ours, theirs):
    (x, extra), (ref_x, ref_extra) = ours, theirs
    torch.testing.assert_close(x, ref_x, rtol=0, atol=0)
    assert set(ref_extra) <= set(extra)
    assert len(extra["attn"]) == len(ref_extra["attn"]) == 1
    if ref_extra["attn"][0] is None:
        assert extra["attn"][0] is None
    else:
        torch.testing.assert_close(extra["attn"][0], ref_extra["attn"][0], rtol=0, atol=0)
    assert len(extra["inner_states"]) == len(ref_extra["inner_states"])
    for state, ref_state in zip(extra["inner_states"], ref_extra["inner_states"]):
        torch.testing.assert_close(state, ref_state, rtol=0, atol=0)


def setup(data_dir, flags):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *flags)
    model = model.double().eval()
    assert model.decoder.exit_threshold == 1.0
    sample = sample_of(task)
    encoder_out = model.encoder(**sample["net_input"])
    prev = torch.randint(4, len(task.target_dictionary), (3, 6))
    prev[1, -2:] = task.target_dictionary.pad()  # fairseq right-pads targets
    return model, encoder_out, prev


@pytest.mark.parametrize("flags", SETTINGS.values(), ids=SETTINGS.keys())
def test_without_exits_the_full_pass_is_fairseqs(data_dir, flags):
    model, encoder_out, prev = setup(data_dir, flags)
    decoder = model.decoder
    options = [{}, {"alignment_layer": 0, "alignment_heads": 1}, {"full_context_alignment": True}]
    with torch.no_grad():
        for kwargs in options:
            ours = decoder.extract_features_scriptable(prev, encoder_out, **kwargs)
            assert_same(ours, fairseq_forward(decoder, prev, encoder_out, **kwargs))
            assert ours[1]["exit_layer"][0].eq(decoder.num_layers).all()
        model.train()  # dropout on, exits off: the same random draws in the same order
        torch.manual_seed(1)
        ours = decoder.extract_features_scriptable(prev, encoder_out)
        torch.manual_seed(1)
        assert_same(ours, fairseq_forward(decoder, prev, encoder_out))


@pytest.mark.parametrize("flags", SETTINGS.values(), ids=SETTINGS.keys())
def test_without_exits_incremental_decoding_is_fairseqs(data_dir, flags):
    model, encoder_out, prev = setup(data_dir, flags)
    prev[1, -2:] = 5  # decoding feeds no padding
    decoder = model.decoder
    ours_state, their_state = {}, {}
    with torch.no_grad():
        for step in range(1, prev.size(1) + 1):
            ours = decoder.extract_features_scriptable(prev[:, :step], encoder_out, incremental_state=ours_state)
            theirs = fairseq_forward(decoder, prev[:, :step], encoder_out, incremental_state=their_state)
            assert_same(ours, theirs)
            assert ours[0].size(1) == 1

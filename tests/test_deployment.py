"""Models leave fairseq: TorchScript (model and fairseq's SequenceGenerator, saved and reloaded), checkpoints whose
model state is all tensors (fairseq's checkpoint averaging), ``--retain-dropout-modules`` with fairseq's names and
``--quant-noise-pq`` on the plugin's attention."""
import collections
import io

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import AttentionBase, available_attentions, get_attention_class
from fairseq_eatt.models.transformer_eatt import CheckpointMismatchError, decode_metadata, encode_metadata

from .helpers import write_dicts
from .test_model import build


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicts")
    write_dicts(d, vocab_size=40)
    return d


def mix_flags(variant: str):
    """``variant`` in every position it supports, vanilla elsewhere."""
    caps = get_attention_class(variant).capabilities
    return ["--encoder-self-attention", variant,
            "--decoder-self-attention", variant if caps.causal else "vanilla",
            "--decoder-cross-attention", variant if caps.cross else "vanilla"]


def sample_of(task, seed=1, bsz=3, length=7):
    src_dict = task.source_dictionary
    torch.manual_seed(seed)
    src_tokens = torch.randint(4, len(src_dict), (bsz, length))
    src_tokens[0, :2] = src_dict.pad()  # fairseq left-pads sources
    src_tokens[:, -1] = src_dict.eos()
    return {"net_input": {"src_tokens": src_tokens, "src_lengths": (src_tokens != src_dict.pad()).sum(1)}}


def spread(model):
    """Random weights with a larger spread, so that beam hypotheses differ (float64 keeps near-ties apart)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.double().eval()


def same_hypotheses(a, b):
    assert len(a) == len(b)
    for hyps_a, hyps_b in zip(a, b):
        assert [h["tokens"].tolist() for h in hyps_a] == [h["tokens"].tolist() for h in hyps_b]
        for x, y in zip(hyps_a, hyps_b):
            assert x["score"].item() == pytest.approx(y["score"].item(), abs=1e-6)


def script_and_reload(module):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


# ---- TorchScript --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", available_attentions())
def test_scripted_generator_translates_like_the_eager_model(data_dir, variant):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *mix_flags(variant),
                           "--criterion", "label_smoothed_cross_entropy_with_aux")
    spread(model)
    sample = sample_of(task)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=10)
    scripted = script_and_reload(generator)
    with torch.no_grad():
        same_hypotheses(generator.forward(sample), scripted.forward(sample))
    # the scripted model itself: the same teacher-forced output
    prev = sample["net_input"]["src_tokens"].roll(1, dims=1)
    scripted_model = script_and_reload(model)
    with torch.no_grad():
        eager_out = model(**sample["net_input"], prev_output_tokens=prev)[0]
        scripted_out = scripted_model(sample["net_input"]["src_tokens"], sample["net_input"]["src_lengths"], prev)[0]
    torch.testing.assert_close(scripted_out, eager_out, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("flags", [["--eatt-recipe", "authors"], ["--eatt-recipe", "paper"],
                                   ["--eatt-learn-threshold", "true", "--eatt-learn-temperature", "true"],
                                   ["--eatt-module-norm", "learnable", "--eatt-input-norm", "learnable"]])
def test_every_eatt_option_scripts(data_dir, flags):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *flags)
    spread(model)
    sample = sample_of(task)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=10)
    with torch.no_grad():
        same_hypotheses(generator.forward(sample), script_and_reload(generator).forward(sample))


def write_checkpoint(path, model, args):
    """A checkpoint as fairseq-train writes one, without the optimizer state."""
    torch.save({"args": args, "model": model.state_dict(), "extra_state": {"train_iterator": None},
                "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                       "optimizer_name": "Adam", "lr_scheduler_state": {"best": None},
                                       "num_updates": 0}]}, path)


def test_a_loaded_checkpoint_scripts(data_dir, tmp_path):
    torch.manual_seed(0)
    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "checkpoint.pt", model, args)
    (loaded,), _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "checkpoint.pt")], task=task)
    spread(loaded)
    generator = SequenceGenerator([loaded], task.target_dictionary, beam_size=2, max_len_b=8)
    sample = sample_of(task)
    with torch.no_grad():
        same_hypotheses(generator.forward(sample), script_and_reload(generator).forward(sample))


# ---- checkpoints: every entry of the model state is a tensor --------------------------------------------------------

def average_like_fairseq(paths):
    """What fairseq's scripts/average_checkpoints.py does (it is not part of the pip package): the first
    checkpoint with each model entry summed over the checkpoints, floating ones divided by their count, integer
    ones floor-divided; it fails on anything but tensors."""
    summed, first = collections.OrderedDict(), None
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False)
        first = first or state
        for key, value in state["model"].items():
            value = value.float() if value.dtype == torch.half else value
            summed[key] = value.clone() if key not in summed else summed[key] + value
    for key, value in summed.items():
        summed[key] = value / len(paths) if value.is_floating_point() else value // len(paths)
    first["model"] = summed
    return first


def test_averaged_checkpoints_load_and_generate(data_dir, tmp_path):
    task, _, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
        assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())
        write_checkpoint(tmp_path / f"checkpoint{seed}.pt", model, args)
        models.append(model)
    torch.save(average_like_fairseq([tmp_path / "checkpoint0.pt", tmp_path / "checkpoint1.pt"]),
               tmp_path / "average.pt")
    (average,), _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "average.pt")], task=task)
    for name, param in average.named_parameters():
        expected = (dict(models[0].named_parameters())[name] + dict(models[1].named_parameters())[name]) / 2
        torch.testing.assert_close(param, expected)
    assert decode_metadata(average.state_dict()["_extra_state"]) == decode_metadata(
        models[0].state_dict()["_extra_state"])
    generator = SequenceGenerator([average.eval()], task.target_dictionary, beam_size=2, max_len_b=8)
    with torch.no_grad():
        hypotheses = generator.forward(sample_of(task))
    assert all(len(h) == 2 and h[0]["tokens"].numel() > 0 for h in hypotheses)


def test_an_average_of_different_settings_is_refused(data_dir, tmp_path):
    """Averaged metadata of two other settings of equal length (thresholds 0.5 and 0.7) would read 0.6: the digest
    refuses it."""
    task, low, args = build(data_dir, "--arch", "transformer_eatt_tiny", "--eatt-threshold", "0.5")
    _, high, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--eatt-threshold", "0.7")
    write_checkpoint(tmp_path / "low.pt", low, args)
    write_checkpoint(tmp_path / "high.pt", high, args)
    torch.save(average_like_fairseq([tmp_path / "low.pt", tmp_path / "high.pt"]), tmp_path / "average.pt")
    with pytest.raises(CheckpointMismatchError, match="average only checkpoints of one training run"):
        checkpoint_utils.load_model_ensemble([str(tmp_path / "average.pt")], task=task)


def test_metadata_of_earlier_versions_still_loads(data_dir):
    """Checkpoints of plugin versions that stored the metadata as a dict."""
    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
    state = model.state_dict()
    as_dict = dict(state, _extra_state=decode_metadata(state["_extra_state"]))
    model.load_state_dict(as_dict, strict=True)
    tampered = dict(decode_metadata(state["_extra_state"]), format=0)
    assert decode_metadata(encode_metadata(tampered)) == tampered


# ---- fairseq's inference and training flags ------------------------------------------------------------------------

def dropout_states(model):
    layers = {type(m).__name__: m.dropout_module.apply_during_inference
              for m in model.modules() if hasattr(m, "dropout_module") and type(m).__name__.startswith("Eatt")}
    attention = [m.dropout_at_inference for m in model.modules() if isinstance(m, AttentionBase)]
    return layers, attention


@pytest.mark.parametrize("modules,kept", [
    (["TransformerEncoderLayerBase"], {"EattEncoderLayer"}),
    (["TransformerDecoder", "TransformerDecoderLayerBase"], {"EattTransformerDecoder", "EattDecoderLayer"}),
    (["EattEncoderLayer"], {"EattEncoderLayer"}),
    (["MultiheadAttention"], set()),
])
def test_retain_dropout_modules_takes_fairseqs_names_and_ours(data_dir, modules, kept):
    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--attention-dropout", "0.5")
    model.make_generation_fast_(retain_dropout=True, retain_dropout_modules=modules)
    layers, attention = dropout_states(model)
    assert {name for name, on in layers.items() if on} == kept
    assert all(attention) == ("MultiheadAttention" in modules) and len(set(attention)) == 1


def test_retained_attention_dropout_changes_the_output(data_dir):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--attention-dropout", "0.5",
                           "--dropout", "0.0")
    model.eval()
    net_input = sample_of(task)["net_input"]
    prev = net_input["src_tokens"].roll(1, dims=1)
    with torch.no_grad():
        plain = [model(**net_input, prev_output_tokens=prev)[0] for _ in range(2)]
        torch.testing.assert_close(plain[0], plain[1])
        model.make_generation_fast_(retain_dropout=True, retain_dropout_modules=["MultiheadAttention"])
        kept = [model(**net_input, prev_output_tokens=prev)[0] for _ in range(2)]
    assert not torch.allclose(kept[0], kept[1])


def test_quant_noise_reaches_the_attention_maps(data_dir):
    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--quant-noise-pq", "0.5",
                        "--quant-noise-pq-block-size", "8")
    attention = next(m for m in model.modules() if isinstance(m, AttentionBase))
    linears = [m for m in attention.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(len(m._forward_pre_hooks) == 1 for m in linears)
    model.train()
    torch.manual_seed(0)
    x = torch.randn(5, 2, 64)
    out = [attention(x, x, x)[0] for _ in range(2)]
    assert not torch.allclose(out[0], out[1])  # blocks of weights dropped at random in training


def test_quant_noise_block_size_must_divide_the_attention_inputs(data_dir):
    from fairseq_eatt.attention import AttentionSpecError

    with pytest.raises(AttentionSpecError, match="--quant-noise-pq-block-size 48 must divide"):
        build(data_dir, "--arch", "transformer_eatt_tiny", "--quant-noise-pq", "0.1", "--quant-noise-pq-block-size",
              "48")

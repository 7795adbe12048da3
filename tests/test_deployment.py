"""Models leave fairseq: TorchScript (model and fairseq's SequenceGenerator, saved and reloaded), checkpoints whose
model state is all tensors (fairseq's checkpoint averaging), ``--retain-dropout-modules`` with fairseq's names and
``--quant-noise-pq`` on the plugin's attention."""
import collections
import io
import os

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import AttentionBase, available_attentions, get_attention_class
from fairseq_eatt.models.transformer_eatt import CheckpointMismatchError, decode_metadata, encode_metadata

from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)


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


def same_hypotheses(a, b, varied=False):
    """Equal hypotheses and scores; ``varied``: also that the model translates (its sentences get different best
    hypotheses, of more than two distinct tokens), so that a model emitting one token forever cannot pass."""
    assert len(a) == len(b)
    if varied:
        best = [tuple(hyps[0]["tokens"].tolist()) for hyps in a]
        assert len(set(best)) > 1 and any(len(set(tokens)) > 2 for tokens in best), best
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
        # the tiny performer's translations are alike at this seed: its equality is checked, not its variety
        same_hypotheses(generator.forward(sample), scripted.forward(sample), varied=variant != "performer")
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
        same_hypotheses(generator.forward(sample), script_and_reload(generator).forward(sample), varied=True)


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
        same_hypotheses(generator.forward(sample), script_and_reload(generator).forward(sample), varied=True)


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
    """({class name: its modules' dropout-at-inference flags, one per module}, the attention modules' flags)."""
    layers = collections.defaultdict(set)
    for m in model.modules():
        if hasattr(m, "dropout_module") and type(m).__name__.startswith("Eatt"):
            layers[type(m).__name__].add(m.dropout_module.apply_during_inference)
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
    assert all(len(flags) == 1 for flags in layers.values())  # every module of a class alike
    assert {name for name, flags in layers.items() if True in flags} == kept
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


# ---- ONNX export and the ONNX Runtime translator ------------------------------------------------------------------

def load_runtime(export_dir):
    """ort_translate.py as copied into the export, imported from there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ort_translate_under_test", str(export_dir / "ort_translate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_tiny(data_dir, tmp_path, *flags, seed=0):
    from fairseq_eatt.deploy.onnx_export import export, verify, write_json

    torch.manual_seed(seed)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny",
                           "--criterion", "label_smoothed_cross_entropy_with_aux", *flags)
    model.eval()
    out = tmp_path / "export"
    record = export(model, task.source_dictionary, task.target_dictionary, str(out))
    record["verification"] = verify(model, str(out), record["state"], task.source_dictionary,
                                    task.target_dictionary)
    task.source_dictionary.save(str(out / "dict.en.txt"))
    task.target_dictionary.save(str(out / "dict.de.txt"))
    max_source, max_target = model.max_positions()
    record.update(source_lang="en", target_lang="de", source_dict="dict.en.txt", target_dict="dict.de.txt",
                  tokenizer=None, bpe_codes=None, max_source_positions=int(max_source),
                  max_target_positions=int(max_target))
    write_json(str(out / "export.json"), record)
    from fairseq_eatt.deploy.onnx_export import copy_runtime

    copy_runtime(str(out))
    return task, model, out


@pytest.mark.parametrize("variant", available_attentions())
def test_onnx_runtime_beam_search_translates_like_fairseq(data_dir, tmp_path, variant):
    task, model, out = export_tiny(data_dir, tmp_path, *mix_flags(variant))
    runtime = load_runtime(out).Translator(str(out), threads=1)
    sample = sample_of(task, bsz=3, length=9)
    src, pad = sample["net_input"]["src_tokens"], task.source_dictionary.pad()
    sources = [[int(t) for t in row if t != pad] for row in src]
    with torch.no_grad():
        expected = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=12).forward(sample)
    got = runtime.translate_ids(sources, beam=3, max_len_b=12)
    eos = task.target_dictionary.eos()
    best = [tuple(h[0]["tokens"].tolist()) for h in expected]
    assert len(set(best)) > 1 and any(len(set(tokens)) > 2 for tokens in best)  # a model that translates
    for fairseq_hyps, onnx_hyps in zip(expected, got):
        assert [h["tokens"][h["tokens"] != eos].tolist() for h in fairseq_hyps] == [tokens for tokens, _ in onnx_hyps]
        for h, (_, score) in zip(fairseq_hyps, onnx_hyps):
            assert score == pytest.approx(h["score"].item(), abs=1e-3)


def test_the_onnx_l1_form_equals_the_compiled_kernel():
    from fairseq_eatt.attention.backends import select
    from fairseq_eatt.attention.functional import l1_broadcast, pairwise_l1

    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 7, 16), torch.randn(2, 3, 5, 16)
    assert select("l1", q) == "cpp_l1"  # the CPU kernel is built by the install
    torch.testing.assert_close(l1_broadcast(q, k), pairwise_l1(q, k), rtol=1e-5, atol=1e-5)
    bits = (torch.randn(2, 3, 7, 16) > 1).float()  # E-ATT's inputs: sums of selected weight rows
    torch.testing.assert_close(l1_broadcast(bits, k), pairwise_l1(bits, k), rtol=1e-5, atol=1e-5)


def test_an_export_that_computes_something_else_is_refused_and_leaves_nothing(data_dir, tmp_path, monkeypatch):
    """A module whose output depends on Python state that tracing freezes (a call counter) cannot be a fixed
    graph: the check against the model refuses it and removes what was written."""
    from fairseq_eatt.attention import register_attention
    from fairseq_eatt.attention import registry as attention_registry
    from fairseq_eatt.attention.vanilla import VanillaAttention, VanillaCost
    from fairseq_eatt.deploy import onnx_export

    @register_attention("test_counting", cost=VanillaCost)
    class Counting(VanillaAttention):
        calls = 0

        def compute_scores(self, q, k, pos=None):
            Counting.calls += 1
            return super().compute_scores(q, k, pos) * float(1 + Counting.calls % 7)  # not a softmax shift

    try:
        torch.manual_seed(0)
        task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--decoder-self-attention",
                               "test_counting")
        checkpoint = tmp_path / "checkpoint.pt"
        write_checkpoint(checkpoint, model, _)
        monkeypatch.setattr("fairseq_eatt.fairseq_tools.load_checkpoint", lambda path, data: (model.eval(), task))
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "earlier.txt").write_text("an earlier export stays")
        with pytest.raises(onnx_export.ExportError, match="compute something else than the model"):
            onnx_export.export_checkpoint(str(data_dir), str(checkpoint), str(tmp_path / "out"))
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["earlier.txt"]
        assert not list(tmp_path.glob(".export-*"))
    finally:
        del attention_registry._REGISTRY["test_counting"]


BLOCK_FAIRSEQ_AND_TORCH = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('fairseq', 'torch', 'fairseq_eatt'):\n"
    "            raise ImportError(f'{name} is not available on this device')\n"
    "sys.meta_path.insert(0, Block())\n"
    "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def test_export_command_and_a_translator_without_fairseq_or_torch(data_dir, tmp_path):
    """fairseq-eatt-export on a checkpoint; the exported ort_translate.py translates pretokenized input in a
    process where importing fairseq or torch fails, with fairseq's translations."""
    from fairseq_eatt.cli import export as export_cli

    torch.manual_seed(0)
    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "checkpoint.pt", model, args)
    out = tmp_path / "exported"
    export_cli.main([str(data_dir), "--path", str(tmp_path / "checkpoint.pt"), "--out", str(out)])
    record = __import__("json").loads((out / "export.json").read_text())
    assert record["verification"]["greedy_tokens_agree"] and record["files"]["weights.bin"] > 0
    lines = ["w5 w9 w12 w7", "w30 w4", "w11 w11 w20 w21 w22 w23"]
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in lines))
    translated = translate_without_fairseq(tmp_path, out, "--input", tmp_path / "in.txt", "--beam", "2",
                                           "--max-len-b", "10")
    (loaded,), _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "checkpoint.pt")], task=task)
    generator = SequenceGenerator([loaded.eval()], task.target_dictionary, beam_size=2, max_len_b=10)
    assert translated == best_translations(generator, task, lines)
    # the int8 graphs: quantized products (onnxruntime.quantization), run by the same translator without torch
    import onnx

    ops = {node.op_type for node in onnx.load(str(out / "int8" / "decoder_step.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, ops
    assert set(record["int8_files"]) == {"int8/encoder.onnx", "int8/decoder_first.onnx", "int8/decoder_step.onnx",
                                         "int8/weights.bin"}
    int8 = translate_without_fairseq(tmp_path, out, "--input", tmp_path / "in.txt", "--beam", "2", "--max-len-b",
                                     "10", "--precision", "int8")
    assert len(int8) == len(lines) and all(int8)


def translate_without_fairseq(tmp_path, export_dir, *flags):
    """The exported ort_translate.py on pretokenized input, in a process where importing fairseq, torch or the
    plugin fails; its output lines."""
    import subprocess
    import sys

    (tmp_path / "block.py").write_text(BLOCK_FAIRSEQ_AND_TORCH)
    proc = subprocess.run([sys.executable, str(tmp_path / "block.py"), str(export_dir / "ort_translate.py"),
                           str(export_dir), "--pretokenized", "--batch-size", "1", *map(str, flags)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def best_translations(generator, task, lines):
    """The best hypothesis of ``generator`` (eager or scripted) for each line of source words, one at a time."""
    d, out = task.source_dictionary, []
    for line in lines:
        ids = torch.tensor([[d.index(w) for w in line.split()] + [d.eos()]])
        with torch.no_grad():
            best = generator.forward({"net_input": {"src_tokens": ids, "src_lengths": torch.tensor([ids.size(1)])}})
        out.append(task.target_dictionary.string(best[0][0]["tokens"]))
    return out


def test_export_command_refuses_bad_input(data_dir, tmp_path, capsys):
    from fairseq_eatt.cli import export as export_cli

    with pytest.raises(SystemExit):
        export_cli.main([str(data_dir), "--path", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "--path" in err and "no such file" in err
    torch.manual_seed(0)
    _, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "checkpoint.pt", model, args)
    with pytest.raises(SystemExit, match="--bpe-codes .*no such file"):
        export_cli.main([str(data_dir), "--path", str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "o"),
                         "--bpe-codes", str(tmp_path / "nope.codes")])
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_deploy_bench_reports_every_way_and_their_agreement(data_dir, tmp_path):
    """fairseq-eatt-deploy-bench on a checkpoint: eager, int8, TorchScript and ONNX Runtime each translate the
    sentences; the report gives size, time, memory and BLEU, and the exact ways agree with eager."""
    import json

    from fairseq_eatt.cli import deploy_bench

    torch.manual_seed(0)
    _, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "checkpoint.pt", model, args)
    lines = ["w5 w9 w12 w7", "w30 w4", "w11 w11 w20 w21 w22 w23"]
    (tmp_path / "src.txt").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "ref.txt").write_text("".join(" ".join(reversed(line.split())) + "\n" for line in lines))
    out = tmp_path / "report"
    deploy_bench.main([str(data_dir), "--path", str(tmp_path / "checkpoint.pt"), "--source", str(tmp_path / "src.txt"),
                       "--reference", str(tmp_path / "ref.txt"), "--beam", "2", "--max-len-b", "8", "--out", str(out)])
    record = json.loads((tmp_path / "report.json").read_text())
    ways = record["measurements"]["ways"] if "measurements" in record else record["ways"]
    assert set(ways) == {"eager", "int8", "torchscript", "onnxruntime", "onnxruntime-int8"}
    for way in ("torchscript", "onnxruntime"):
        assert ways[way]["identical_to_eager"] == 3, ways[way]
    assert all(w["size_mib"] > 0 and w["ms_per_sentence_mean"] > 0 and w["peak_mib"] > 0 for w in ways.values())
    # each way's own peak (not the parent's, which a child process's ru_maxrss would inherit): the runtime's
    # process holds neither torch nor fairseq
    assert ways["onnxruntime"]["peak_mib"] < ways["eager"]["peak_mib"] / 2
    assert "BLEU" in (tmp_path / "report.md").read_text()


def test_deploy_bench_refuses_an_empty_source_before_exporting(tmp_path):
    from fairseq_eatt.cli import deploy_bench

    (tmp_path / "data").mkdir()
    for name in ("checkpoint.pt", "src.txt", "ref.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(SystemExit, match="--source .*src.txt is empty"):
        deploy_bench.main([str(tmp_path / "data"), "--path", str(tmp_path / "checkpoint.pt"), "--source",
                           str(tmp_path / "src.txt"), "--reference", str(tmp_path / "ref.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "data", "ref.txt", "src.txt"]


def test_the_exported_translator_refuses_a_line_longer_than_the_model_takes(data_dir, tmp_path):
    task, model, out = export_tiny(data_dir, tmp_path)
    runtime = load_runtime(out).Translator(str(out), threads=1)
    limit = runtime.max_source_positions
    assert runtime.source_ids(["w1"] * (limit - 1), 1)  # with </s>: exactly the limit
    with pytest.raises(ValueError, match=f"input line 7: {limit + 1} tokens with </s>, more than the model's "
                                         f"--max-source-positions {limit}"):
        runtime.source_ids(["w1"] * limit, 7)


@pytest.mark.e2e
def test_onnx_runtime_int8_translates_close_to_eager_on_a_model_that_translates(demo_run, translating_checkpoint,
                                                                                tmp_path):
    """fairseq-eatt-deploy-bench on the 300-update fixture: the float32 graphs give eager's translations, the int8
    graphs (onnxruntime.quantization, dynamic) stay close to them (as PyTorch's own int8 does)."""
    import json

    from fairseq_eatt.cli import deploy_bench

    from .helpers import TEST_SENTENCES

    source = demo_run["workdir"] / "bpe300" / "test_2016_flickr.en"
    reference = os.path.join(demo_run["raw"], "test_2016_flickr.de")
    deploy_bench.main([str(demo_run["data_bin"]), "--path", str(translating_checkpoint), "--source", str(source),
                       "--reference", str(reference), "--beam", "2", "--max-len-b", "20", "--out",
                       str(tmp_path / "report")])
    ways = json.loads((tmp_path / "report.json").read_text())["measurements"]["ways"]
    assert ways["onnxruntime"]["identical_to_eager"] == TEST_SENTENCES
    int8 = ways["onnxruntime-int8"]
    assert int8["bleu_vs_eager"] >= 60.0, int8  # as PyTorch int8 against float32 on this model (AGREEMENT)
    assert abs(int8["bleu"] - ways["eager"]["bleu"]) <= 2.0, (int8, ways["eager"])
    # the float constants (sinusoidal position tables, norms, embeddings) stay float32 in both: smaller, not a
    # quarter
    assert int8["size_mib"] < ways["onnxruntime"]["size_mib"]


def test_the_runtimes_top_k_is_a_stable_sorts_first_k():
    """The exported beam search partitions before it sorts; with ties (to the lower index) and -inf it picks
    what a stable descending sort of the whole row picks, so its hypotheses stay fairseq's."""
    import numpy as np

    from fairseq_eatt.deploy.ort_translate import top_k

    rng = np.random.default_rng(0)
    for trial in range(500):
        n = int(rng.integers(2, 120))
        row = rng.integers(-4, 4, size=n).astype(np.float32)  # many ties
        if trial % 3 == 0:
            row[rng.integers(0, n, size=4)] = -np.inf
        k = int(rng.integers(1, n + 1))
        assert top_k(row, k).tolist() == np.argsort(-row, kind="stable")[:k].tolist(), (row, k)

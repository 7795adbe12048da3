"""Export a trained ``transformer_eatt`` model to ONNX: the encoder, the decoder's first step and its later steps,
with the decoding state (every attention module's cache) as explicit inputs and outputs.

Files written to the export directory (read by ``ort_translate.py``, which imports neither fairseq nor torch):
- ``encoder.onnx``: src_tokens (B, S) -> encoder_out (S, B, C), encoder_padding_mask (B, S)
- ``decoder_first.onnx``: prev_output_tokens (B, 1), encoder_out, encoder_padding_mask -> log_probs (B, V), state...
- ``decoder_step.onnx``: prev_output_tokens (B, t), encoder_out, encoder_padding_mask, state... -> log_probs, state...
- ``weights.bin``: the graphs' weights, each distinct tensor once (the graphs refer to it as ONNX external data)
- ``int8/``: the three graphs with int8 weights (``onnxruntime.quantization.quantize_dynamic``) and their
  ``weights.bin``; ``ort_translate.py --precision int8`` runs them
- ``dict.SRC.txt``, ``dict.TGT.txt``, the BPE codes, ``ort_translate.py`` and ``export.json`` (the special symbols,
  the state layout: which state tensors follow the hypotheses when beam search reorders them, languages, the
  preprocessing, the attention settings and provenance).

Graphs are traced: Python branches take the side they took on the example, so every variant is checked after export
at lengths and steps other than the traced ones (``verify``) and refused when the ONNX graphs compute something else.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..attention import AttentionBase

OPSET = 17
RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ort_translate.py")


class ExportError(RuntimeError):
    """A model or setting that cannot be exported faithfully, with the reason."""


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, src_tokens: Tensor) -> Tuple[Tensor, Tensor]:
        out = self.encoder(src_tokens, src_lengths=None)
        return out["encoder_out"][0], out["encoder_padding_mask"][0]


def encoder_out_dict(encoder_out: Tensor, padding_mask: Tensor) -> Dict[str, List[Tensor]]:
    return {"encoder_out": [encoder_out], "encoder_padding_mask": [padding_mask], "encoder_embedding": [],
            "encoder_states": [], "src_tokens": [], "src_lengths": []}


def state_modules(model) -> List[Tuple[str, AttentionBase]]:
    """(name, module) of the decoder's attention modules in a fixed order: they hold the decoding state."""
    return [(name, m) for name, m in model.decoder.named_modules() if isinstance(m, AttentionBase)]


def flatten_state(model, incremental_state) -> Tuple[List[Tensor], List[Dict]]:
    """The incremental state as a list of tensors and its layout (module, entry, batch-first or not)."""
    tensors, layout = [], []
    for name, module in state_modules(model):
        buffer = module.get_cache(incremental_state)
        for entry in sorted(buffer):
            value = buffer[entry]
            if value is None:
                continue
            tensors.append(value)
            layout.append({"module": name, "entry": entry, "shape": list(value.shape),
                           "follows_hypotheses": value.dim() > 0})
    return tensors, layout


def unflatten_state(model, tensors: Sequence[Tensor], layout: Sequence[Dict]):
    incremental_state: Dict[str, Dict[str, Optional[Tensor]]] = {}
    modules = dict(state_modules(model))
    buffers: Dict[str, Dict[str, Optional[Tensor]]] = {}
    for item, tensor in zip(layout, tensors):
        buffers.setdefault(item["module"], {})[item["entry"]] = tensor
    for name, buffer in buffers.items():
        modules[name].set_cache(incremental_state, buffer)
    return incremental_state


class DecoderGraph(nn.Module):
    """One decoding step: the log-probabilities of the next token and the updated state. ``layout`` None: the
    first step (no state in); otherwise the state comes in as the tensors described by ``layout``."""

    def __init__(self, model, layout: Optional[List[Dict]]):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, prev_output_tokens: Tensor, encoder_out: Tensor, encoder_padding_mask: Tensor, *state: Tensor):
        incremental_state = {} if self.layout is None else unflatten_state(self.model, state, self.layout)
        logits, _ = self.model.decoder(prev_output_tokens, encoder_out=encoder_out_dict(encoder_out,
                                                                                         encoder_padding_mask),
                                       incremental_state=incremental_state)
        log_probs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        new_state, _ = flatten_state(self.model, incremental_state)
        return (log_probs, *new_state)


def example_source(dictionary, batch: int = 2, length: int = 7) -> Tensor:
    """Left-padded sources with one padded row, so that the traced graphs contain the padding masks."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (batch, length), generator=generator)
    tokens[:, -1] = dictionary.eos()
    tokens[0, :2] = dictionary.pad()
    return tokens


def _dynamic_axes(module, args, input_names, output_names):
    """Every axis dynamic (batch, lengths, cached keys), named per tensor."""
    with torch.no_grad():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    axes = {}
    for name, value in list(zip(input_names, args)) + list(zip(output_names, outputs)):
        if value.dim() > 0:
            axes[name] = {i: f"{name}_{i}" for i in range(value.dim())}
    return axes


def export(model, src_dict, tgt_dict, out_dir: str) -> Dict:
    """Write the three graphs and their weights and return the layout of the state (see the module's docstring).
    ``model`` itself is put in float32 evaluation mode with beam size 1 (one cache row per hypothesis)."""
    if getattr(model.encoder, "pruner", None) is not None:
        raise ExportError("encoder token pruning (--prune-layer) keeps a number of tokens that depends on the "
                          "sentence, which a traced ONNX graph fixes at the example's: decode it with fairseq-generate "
                          "or TorchScript (fairseq-eatt-deploy-bench), or export a model trained without pruning")
    if getattr(model.decoder, "exit_threshold", 1.0) < 1.0:
        raise ExportError("a depth-adaptive decoder (--exit-threshold below 1) chooses its layers per token, which a "
                          "traced ONNX graph cannot: export with --exit-threshold 1 (every layer runs), or decode "
                          "with fairseq-generate / TorchScript, which keep the exits")
    model = model.float().eval()
    for _, module in state_modules(model):
        module.set_beam_size(1)  # one cache row per hypothesis: the runtime reorders rows itself
    os.makedirs(out_dir, exist_ok=True)
    src = example_source(src_dict)
    with torch.no_grad():
        encoder_out, padding_mask = EncoderGraph(model).eval()(src)
        first = DecoderGraph(model, None).eval()
        bos = torch.full((src.size(0), 1), tgt_dict.eos(), dtype=torch.long)
        log_probs, *state = first(bos, encoder_out, padding_mask)
        _, layout = flatten_state(model, _state_after(model, bos, encoder_out, padding_mask))
        step = DecoderGraph(model, layout).eval()
        # a prefix of ordinary tokens: a pad in it would trace the decoder's self-attention padding mask
        prefix = torch.cat([bos, torch.full_like(bos, tgt_dict.nspecial)], dim=1)
        _, after_step = flatten_state(model, _state_after(model, prefix, encoder_out, padding_mask,
                                                          unflatten_state(model, state, layout)))
        if [(x["module"], x["entry"]) for x in after_step] != [(x["module"], x["entry"]) for x in layout]:
            raise ExportError("the decoding state changes its entries between steps; it cannot be a fixed list of "
                              "ONNX inputs and outputs")
    state_in = [f"state_in_{i}" for i in range(len(layout))]
    state_out = [f"state_out_{i}" for i in range(len(layout))]
    torch.onnx.export(EncoderGraph(model).eval(), (src,), os.path.join(out_dir, "encoder.onnx"), dynamo=False,
                      opset_version=OPSET, input_names=["src_tokens"],
                      output_names=["encoder_out", "encoder_padding_mask"],
                      dynamic_axes=_dynamic_axes(EncoderGraph(model).eval(), (src,), ["src_tokens"],
                                                 ["encoder_out", "encoder_padding_mask"]))
    names = ["prev_output_tokens", "encoder_out", "encoder_padding_mask"]
    first_args = (bos, encoder_out, padding_mask)
    torch.onnx.export(first, first_args, os.path.join(out_dir, "decoder_first.onnx"), dynamo=False,
                      opset_version=OPSET, input_names=names, output_names=["log_probs"] + state_out,
                      dynamic_axes=_dynamic_axes(first, first_args, names, ["log_probs"] + state_out))
    step_args = (prefix, encoder_out, padding_mask, *state)
    torch.onnx.export(step, step_args, os.path.join(out_dir, "decoder_step.onnx"), dynamo=False,
                      opset_version=OPSET, input_names=names + state_in, output_names=["log_probs"] + state_out,
                      dynamic_axes=_dynamic_axes(step, step_args, names + state_in, ["log_probs"] + state_out))
    share_weights(out_dir)
    return {"state": layout}


def _state_after(model, prev_output_tokens, encoder_out, padding_mask, incremental_state: Optional[Dict] = None):
    incremental_state = {} if incremental_state is None else incremental_state
    model.decoder(prev_output_tokens, encoder_out=encoder_out_dict(encoder_out, padding_mask),
                  incremental_state=incremental_state)
    return incremental_state


GRAPHS = ("encoder.onnx", "decoder_first.onnx", "decoder_step.onnx")
WEIGHTS = "weights.bin"


def share_weights(out_dir: str, graphs: Sequence[str] = GRAPHS, align: int = 64) -> int:
    """Move the graphs' initializers into one external file, each distinct tensor once (the two decoder graphs
    hold the same decoder weights, and shared embeddings appear in all three). Returns the file's size."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    offsets: Dict[Tuple, Tuple[int, int]] = {}
    models = {name: onnx.load(os.path.join(out_dir, name)) for name in graphs}
    with open(os.path.join(out_dir, WEIGHTS + ".tmp"), "wb") as blob:
        for model in models.values():
            for tensor in model.graph.initializer:
                data = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest())
                if key not in offsets:
                    blob.write(b"\0" * (-blob.tell() % align))
                    offsets[key] = (blob.tell(), len(data))
                    blob.write(data)
                offset, length = offsets[key]
                for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    tensor.ClearField(field)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
        size = blob.tell()
    os.replace(os.path.join(out_dir, WEIGHTS + ".tmp"), os.path.join(out_dir, WEIGHTS))
    for name, model in models.items():
        onnx.save(model, os.path.join(out_dir, name))
    return size


INT8_DIR = "int8"  # the graphs with int8 weights (onnxruntime.quantization, dynamic) and their weights file


def quantize_graphs(out_dir: str, graphs: Sequence[str] = GRAPHS) -> Dict[str, int]:
    """int8 copies of the graphs in ``out_dir/int8``: onnxruntime.quantization's dynamic quantization (int8
    weights, activations quantized per call) of every MatMul / Gemm with constant weights, their weights in one
    shared file. Returns the files' sizes."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graphs = tuple(graphs)
    target = os.path.join(out_dir, INT8_DIR)
    os.makedirs(target, exist_ok=True)
    for name in graphs:
        quantize_dynamic(os.path.join(out_dir, name), os.path.join(target, name), weight_type=QuantType.QInt8)
    share_weights(target, graphs)  # the decoder graphs hold the same weights: stored once, as for float32
    for name in graphs:  # each loads in the runtime (its translations are checked by the tests and the bench)
        ort.InferenceSession(os.path.join(target, name), providers=["CPUExecutionProvider"])
    return {f"{INT8_DIR}/{name}": os.path.getsize(os.path.join(target, name)) for name in graphs + (WEIGHTS,)}


def int8_graphs(out_dir: str) -> Dict[str, int]:
    """:func:`quantize_graphs`, or none (with a warning) where the quantizer fails: the float32 export stands."""
    import warnings

    try:
        return quantize_graphs(out_dir)
    except Exception as err:  # noqa: BLE001 (onnxruntime.quantization raises many kinds)
        shutil.rmtree(os.path.join(out_dir, INT8_DIR), ignore_errors=True)
        warnings.warn(f"fairseq-eatt-export: no int8 graphs ({type(err).__name__}: {err}); the float32 export "
                      f"is complete")
        return {}


def replace_directory(new: str, target: str):
    """Put the complete directory ``new`` at ``target``; an earlier export there is removed only after."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".replaced-", dir=os.path.dirname(os.path.abspath(target)))
        os.rmdir(old)
        os.rename(target, old)
    os.rename(new, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def copy_runtime(out_dir: str):
    shutil.copyfile(RUNTIME, os.path.join(out_dir, "ort_translate.py"))


def write_json(path: str, record: Dict):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def verify(model, out_dir: str, layout: List[Dict], src_dict, tgt_dict, steps: int = 24,
           tolerance: float = 1e-3) -> Dict:
    """Decode random sources of other sizes than the traced example with the ONNX graphs and with the model's own
    incremental decoding (greedy, the same prefixes fed to both); the largest difference of next-token
    log-probabilities and whether every greedy token agrees. ExportError past ``tolerance``."""
    import onnxruntime as ort

    sessions = {name: ort.InferenceSession(os.path.join(out_dir, f"{name}.onnx"), providers=["CPUExecutionProvider"])
                for name in ("encoder", "decoder_first", "decoder_step")}

    def run(name, values):
        return sessions[name].run(None, {i.name: values[i.name] for i in sessions[name].get_inputs()})

    worst, agree = 0.0, True
    generator = torch.Generator().manual_seed(1)
    for bsz, length in ((1, 4), (3, 19)):
        src = torch.randint(src_dict.nspecial, len(src_dict), (bsz, length), generator=generator)
        src[:, -1] = src_dict.eos()
        if bsz > 1:
            src[1, :5] = src_dict.pad()
        encoder_out, padding_mask = run("encoder", {"src_tokens": src.numpy()})
        prefix = torch.full((bsz, 1), tgt_dict.eos(), dtype=torch.long)
        values = {"prev_output_tokens": prefix.numpy(), "encoder_out": encoder_out,
                  "encoder_padding_mask": padding_mask}
        outputs = run("decoder_first", values)
        incremental_state: Dict = {}
        with torch.no_grad():
            encoded = model.encoder(src, src_lengths=None)
            for _ in range(steps):
                logits, _ = model.decoder(prefix, encoder_out=encoded, incremental_state=incremental_state)
                expected = torch.log_softmax(logits[:, -1].float(), dim=-1)
                expected[:, tgt_dict.pad()] = float("-inf")
                got = torch.from_numpy(outputs[0]).clone()
                got[:, tgt_dict.pad()] = float("-inf")
                finite = torch.isfinite(expected)
                worst = max(worst, float((got - expected)[finite].abs().max()))
                agree = agree and bool((got.argmax(-1) == expected.argmax(-1)).all())
                prefix = torch.cat([prefix, expected.argmax(-1, keepdim=True)], dim=1)
                values = {"prev_output_tokens": prefix.numpy(), "encoder_out": encoder_out,
                          "encoder_padding_mask": padding_mask}
                values.update({f"state_in_{i}": s for i, s in enumerate(outputs[1:])})
                outputs = run("decoder_step", values)
    if worst > tolerance or not agree:
        raise ExportError(f"the ONNX graphs compute something else than the model (largest difference of "
                          f"log-probabilities {worst:.2e}, greedy tokens {'agree' if agree else 'differ'}); a branch "
                          f"taken while tracing does not hold at other lengths or steps")
    return {"max_abs_log_prob_difference": worst, "greedy_tokens_agree": agree, "steps": steps}


def export_checkpoint(data: str, checkpoint: str, out_dir: str, bpe_codes: Optional[str] = None,
                      tokenizer: Optional[str] = None) -> Dict:
    """Export a fairseq checkpoint (see the module's docstring); returns what export.json holds."""
    from .. import __version__
    from ..fairseq_tools import load_checkpoint
    from ..provenance import provenance
    from ..models.transformer_eatt import attention_settings

    if tokenizer not in (None, "moses"):
        raise ExportError(f"--tokenizer {tokenizer}: valid values are moses, or none for already tokenized input")
    if bpe_codes is not None and not os.path.isfile(bpe_codes):
        raise ExportError(f"--bpe-codes {bpe_codes}: no such file (subword-nmt codes, e.g. DATA/../bpe/codes.*)")
    model, task = load_checkpoint(checkpoint, data)
    args = model.args
    src_lang, tgt_lang = task.cfg.source_lang, task.cfg.target_lang
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".export-", dir=parent)  # the export appears in out_dir only when complete
    try:
        record = export(model, task.source_dictionary, task.target_dictionary, work)
        record["verification"] = verify(model, work, record["state"], task.source_dictionary,
                                        task.target_dictionary)
        task.source_dictionary.save(os.path.join(work, f"dict.{src_lang}.txt"))
        task.target_dictionary.save(os.path.join(work, f"dict.{tgt_lang}.txt"))
        if bpe_codes:
            shutil.copyfile(bpe_codes, os.path.join(work, "bpe.codes"))
        copy_runtime(work)
        max_source, max_target = model.max_positions()
        record.update({
            "source_lang": src_lang, "target_lang": tgt_lang, "source_dict": f"dict.{src_lang}.txt",
            "target_dict": f"dict.{tgt_lang}.txt", "tokenizer": tokenizer, "bpe_codes": "bpe.codes" if bpe_codes
            else None, "max_source_positions": int(max_source), "max_target_positions": int(max_target),
            "attention": attention_settings(args), "arch": args.arch, "opset": OPSET,
            "files": {name: os.path.getsize(os.path.join(work, name)) for name in GRAPHS + (WEIGHTS,)},
            "int8_files": int8_graphs(work),
            "checkpoint": os.path.abspath(checkpoint), "plugin_version": __version__,
            **provenance()})
        write_json(os.path.join(work, "export.json"), record)
        replace_directory(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record

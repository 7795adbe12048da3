"""An attention-variant model built from a trained vanilla (dot-product) checkpoint (fairseq-eatt-convert).

Everything the two models share is copied: embeddings, feed-forward layers, layer norms, and in each attention
the parameters of the same name (V and output projections). A variant's own parameters start from the vanilla
parameters it declares in ``converted_from`` (E-ATT: its selections from W_Q and W_K); the rest keep their fresh
initialization (e.g. learned thresholds). The result is a fairseq checkpoint without optimizer state: fine-tune it
with ``fairseq-train --finetune-from-model``, or decode it as it is.
"""
import argparse
import copy
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ..compat import storable_cfg
from .metadata import decode_metadata, encode_metadata
from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, POSITION_FLAGS, get_attention_class

# where each position's attention sits in fairseq's transformer layers
MODULE_OF_POSITION = {ENCODER_SELF: ("encoder", "self_attn"), DECODER_SELF: ("decoder", "self_attn"),
                      DECODER_CROSS: ("decoder", "encoder_attn")}
EXTRA_STATE = "_extra_state"  # the plugin's checkpoint metadata: always the converted model's own
PLUGIN_MODEL = "transformer_eatt"


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and why."""


@dataclass
class ConversionReport:
    copied: List[str] = field(default_factory=list)  # same name, same shape
    started_from: Dict[str, str] = field(default_factory=dict)  # own parameter -> the vanilla parameter it copies
    fresh: List[str] = field(default_factory=list)  # no vanilla counterpart: fresh initialization
    dropped: List[str] = field(default_factory=list)  # vanilla parameters the converted model has no use for

    def as_dict(self) -> Dict:
        return {"copied": len(self.copied), "started_from": self.started_from, "fresh": self.fresh,
                "dropped": self.dropped}


def model_args(state: Dict, path: str) -> argparse.Namespace:
    """The model's arguments of a fairseq checkpoint (new format: cfg.model; old: args)."""
    if state.get("args") is not None:
        return state["args"]
    cfg = state.get("cfg")
    model = cfg.get("model") if cfg is not None else None
    if not isinstance(model, argparse.Namespace):
        raise ConversionError(f"--from {path}: no model arguments in the checkpoint (expected a checkpoint written by "
                              f"fairseq-train of a transformer)")
    return model


def source_attention(args: argparse.Namespace, path: str) -> Dict[str, str]:
    """The source's attention per position: the plugin's flags, or fairseq's own (dot-product) attention."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    model_name = ARCH_MODEL_NAME_REGISTRY.get(getattr(args, "arch", None))
    if model_name == PLUGIN_MODEL:
        return {pos: getattr(args, flag[2:].replace("-", "_"), None) or "eatt" for pos, flag in POSITION_FLAGS.items()}
    if model_name == "transformer":
        return {pos: "vanilla" for pos in POSITION_FLAGS}
    raise ConversionError(f"--from {path}: architecture {getattr(args, 'arch', None)!r} is not a transformer "
                          f"(fairseq's transformer or {PLUGIN_MODEL}); only those can be converted")


def converted_args(args: argparse.Namespace, attention: Dict[str, str], path: str) -> argparse.Namespace:
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    source = source_attention(args, path)
    not_vanilla = {pos: v for pos, v in source.items() if v != "vanilla"}
    if not_vanilla:
        where = ", ".join(f"{POSITION_FLAGS[p]} {v}" for p, v in not_vanilla.items())
        raise ConversionError(f"--from {path}: its attention is not vanilla everywhere ({where}); conversion starts "
                              f"from a trained dot-product (vanilla) model")
    new = copy.deepcopy(args)
    if ARCH_MODEL_NAME_REGISTRY[args.arch] != PLUGIN_MODEL:
        new.arch = PLUGIN_MODEL  # fairseq's transformer: every dimension is in its arguments already
        if hasattr(new, "_name"):
            new._name = PLUGIN_MODEL
    for position, variant in attention.items():
        setattr(new, POSITION_FLAGS[position][2:].replace("-", "_"), variant)
    if getattr(new, "eatt_recipe", None) is None:  # the recipe that names the blocks the source was trained with
        new.eatt_recipe = "paper-prenorm" if getattr(new, "encoder_normalize_before", False) else "paper"
    return new


class _Vocabulary:
    """What building a model needs of a task: dictionaries of the checkpoint's vocabulary sizes."""

    def __init__(self, src_size: int, tgt_size: int, shared: bool):
        from fairseq.data import Dictionary

        def sized(n):
            d = Dictionary()
            while len(d) < n:
                d.add_symbol(f"<sym{len(d)}>")
            return d

        self.source_dictionary = sized(src_size)
        self.target_dictionary = self.source_dictionary if shared else sized(tgt_size)


def build_converted_model(args: argparse.Namespace, state_dict: Dict[str, torch.Tensor]):
    from fairseq import models

    import fairseq_eatt  # noqa: F401  (registers the model)

    src = state_dict["encoder.embed_tokens.weight"].shape[0]
    tgt = state_dict["decoder.embed_tokens.weight"].shape[0]
    shared = bool(getattr(args, "share_all_embeddings", False))
    torch.manual_seed(int(getattr(args, "seed", 1) or 1))  # fresh parameters are reproducible
    return models.build_model(copy.deepcopy(args), _Vocabulary(src, tgt, shared))


def keep_dictionaries(converted: Dict[str, torch.Tensor], source: Dict[str, torch.Tensor]):
    """The converted checkpoint records the source checkpoint's dictionaries (the model built here for the
    conversion has stand-in vocabularies of the same sizes)."""
    key = "_extra_state"
    if key not in converted:
        return
    metadata = decode_metadata(converted[key])
    metadata.pop("dictionaries", None)
    if key in source:
        dictionaries = decode_metadata(source[key]).get("dictionaries")
        if dictionaries:
            metadata["dictionaries"] = dictionaries
    converted[key] = encode_metadata(metadata)


def attention_prefixes(args: argparse.Namespace) -> Dict[str, str]:
    """{state-dict prefix of an attention module: its position}."""
    out = {}
    for position, (side, name) in MODULE_OF_POSITION.items():
        for i in range(int(getattr(args, f"{side}_layers"))):
            out[f"{side}.layers.{i}.{name}."] = position
    return out


def convert_state_dict(source: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                       args: argparse.Namespace, attention: Dict[str, str]):
    """(the converted model's state dict, its report): shared parameters copied, declared ones started from
    their vanilla counterparts, the rest fresh; anything outside the converted attention must copy."""
    prefixes = attention_prefixes(args)
    report = ConversionReport()
    out, used = {}, set()
    for key, fresh in target.items():
        if key == EXTRA_STATE:
            out[key] = fresh
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        origin = key
        if prefix is not None:
            name, _, rest = key[len(prefix):].partition(".")
            declared = get_attention_class(attention[prefixes[prefix]]).converted_from
            if name in declared:
                origin = prefix + declared[name] + ("." + rest if rest else "")
        value = source.get(origin)
        if value is not None and tuple(value.shape) == tuple(fresh.shape):
            out[key] = value.clone()
            used.add(origin)
            if origin != key:
                report.started_from[key] = origin
            else:
                report.copied.append(key)
        elif prefix is None:
            found = "missing" if value is None else f"of shape {tuple(value.shape)}"
            raise ConversionError(f"the vanilla checkpoint's {origin} is {found}; the converted model needs "
                                  f"{tuple(fresh.shape)} (a transformer of other dimensions?)")
        else:
            out[key] = fresh
            report.fresh.append(key)
    report.dropped = sorted(k for k in source if k not in used and k != EXTRA_STATE)
    return out, report


def convert_checkpoint(src_path: str, dst_path: str, attention: Optional[Dict[str, str]] = None) -> ConversionReport:
    """Write ``dst_path``: the model of ``src_path`` (a vanilla transformer checkpoint) with ``attention``
    (default: E-ATT in every position); atomic, nothing is left behind on an error."""
    from fairseq import checkpoint_utils

    import fairseq_eatt  # noqa: F401  (fairseq checkpoints load on torch >= 2.6)

    attention = dict(attention or {pos: "eatt" for pos in POSITION_FLAGS})
    if not os.path.isfile(src_path):
        raise ConversionError(f"--from {src_path}: no such checkpoint file")
    if os.path.abspath(src_path) == os.path.abspath(dst_path):
        raise ConversionError(f"--to {dst_path}: the same file as --from; write the converted model elsewhere")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(src_path)
    except Exception as err:  # noqa: BLE001 (a corrupt or foreign file: say which, and why)
        raise ConversionError(f"--from {src_path}: not a readable fairseq checkpoint ({type(err).__name__}: "
                              f"{err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConversionError(f"--from {src_path}: not a fairseq checkpoint (no model weights)")
    args = converted_args(model_args(state, src_path), attention, src_path)
    model = build_converted_model(args, state["model"])
    weights, report = convert_state_dict(state["model"], model.state_dict(), args, attention)
    model.load_state_dict(weights, strict=True)  # the converted model loads what it will be fine-tuned from
    keep_dictionaries(weights, state["model"])
    history = (state.get("optimizer_history") or [{}])[-1]
    out = {
        "args": None, "cfg": storable_cfg(copy.deepcopy(state["cfg"])), "model": weights, "criterion": {},
        # no optimizer state; fine-tuning counts its updates from 0 and starts at epoch 1
        "optimizer_history": [{**history, "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": state.get("task_state", {}),
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "version": 2}, "val_loss": None},
        "conversion": {"from": os.path.abspath(src_path), "attention": attention,
                       "source_updates": int(history.get("num_updates", 0)), **report.as_dict()},
    }
    if state.get("args") is not None:
        out["args"], out["cfg"] = args, None
    else:
        out["cfg"]["model"] = args
    os.makedirs(os.path.dirname(os.path.abspath(dst_path)), exist_ok=True)
    partial = dst_path + ".partial"
    try:
        torch.save(out, partial)
        os.replace(partial, dst_path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return report

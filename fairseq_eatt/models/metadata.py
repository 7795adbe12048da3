"""The plugin's checkpoint metadata: its format and attention settings, stored with the weights (the model's
``_extra_state``) and checked before a checkpoint's weights are loaded."""
import hashlib
import json
import logging
from typing import Optional

import torch

from ..attention import POSITION_FLAGS, get_attention_class
from .attention_flags import DEFAULT_ATTENTION, POSITION_ATTRS

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1  # bump when a change makes checkpoints of earlier versions compute something else
LEGACY_METADATA = {"plugin": "fairseq_eatt", "format": 0}  # what checkpoints saved before the metadata get


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose plugin format or attention settings differ from the model it is loaded into."""


def _plain(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def attention_settings(args) -> dict:
    """{flag: {"variant": name, "options": constructor options}} of the three attention positions."""
    settings = {}
    for position, attr in POSITION_ATTRS.items():
        name = getattr(args, attr, None) or DEFAULT_ATTENTION
        options = get_attention_class(name).kwargs_from_args(args, position)
        settings[POSITION_FLAGS[position]] = {"variant": name,
                                              "options": {k: _plain(v) for k, v in sorted(options.items())}}
    return settings


def dictionary_digests(source, target) -> dict:
    """{side: {"symbols": count, "sha256": digest of the symbols in order}} of the model's two dictionaries: a
    data directory whose dictionaries differ (even at equal sizes) would translate into other words."""
    out = {}
    for side, dictionary in (("source", source), ("target", target)):
        if dictionary is not None and hasattr(dictionary, "symbols"):
            out[side] = {"symbols": len(dictionary), "sha256": _digest("\n".join(dictionary.symbols))}
    return out


def checkpoint_metadata(args, dictionaries: Optional[dict] = None) -> dict:
    from .. import __version__

    metadata = {"plugin": "fairseq_eatt", "format": CHECKPOINT_FORMAT, "version": __version__,
                "attention": attention_settings(args)}
    if dictionaries:
        metadata["dictionaries"] = dictionaries
    return metadata


def check_dictionaries(stored: dict, current: Optional[dict], args):
    """Refuse a data directory whose dictionaries are not the ones the checkpoint was trained with."""
    if not stored or not current:
        return
    # no directory named: the model's arguments hold the data path it was trained with, not the one given now
    langs = {"source": getattr(args, "source_lang", None), "target": getattr(args, "target_lang", None)}
    problems = [f"dict.{langs[side] or side}.txt: {current[side]['symbols']} symbols"
                f"{'' if current[side]['symbols'] != theirs['symbols'] else ' (other symbols or order)'}, the "
                f"checkpoint's {theirs['symbols']}"
                for side, theirs in sorted(stored.items()) if side in current and current[side] != theirs]
    if problems:
        raise CheckpointMismatchError(
            "the data directory's dictionaries are not the checkpoint's: " + "; ".join(problems)
            + ". Give the data directory the model was trained with (fairseq-preprocess output with the same "
              "dict.*.txt)")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode_metadata(metadata: dict) -> torch.Tensor:
    """The metadata as an int64 tensor of the UTF-8 bytes of its JSON and that JSON's digest, so that every entry of
    a state dict is a tensor: fairseq's scripts/average_checkpoints.py sums integer tensors and floor-divides them by
    their count, which gives identical metadata back; the digest exposes an average of different metadata."""
    text = json.dumps(metadata, sort_keys=True)
    record = json.dumps({"metadata": text, "sha256": _digest(text)})
    return torch.tensor(list(record.encode("utf-8")), dtype=torch.int64)


def decode_metadata(stored) -> dict:
    """The metadata of :func:`encode_metadata`, or as stored by plugin versions that kept a dict."""
    if isinstance(stored, dict):
        return stored
    if isinstance(stored, torch.Tensor) and stored.dim() == 1 and not stored.is_floating_point():
        try:
            record = json.loads(bytes(stored.tolist()).decode("utf-8"))
            if _digest(record["metadata"]) == record["sha256"]:
                return json.loads(record["metadata"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            pass
    raise CheckpointMismatchError(
        f"the checkpoint's fairseq_eatt metadata is unreadable ({stored!r:.200}); an average of checkpoints with "
        f"other attention settings or plugin versions gives this: average only checkpoints of one training run")


def _options_differ(variant: str, mine: dict, theirs: dict) -> bool:
    """Options compared key by key; an option the checkpoint predates matches the value that computes what the
    checkpoint's version computed (the variant's ``added_options``)."""
    added = get_attention_class(variant).added_options
    for key in set(mine) | set(theirs):
        if key not in theirs and key in added:
            if mine[key] != _plain(added[key]):
                return True
        elif mine.get(key) != theirs.get(key):
            return True
    return False


def check_checkpoint_metadata(stored, args, dictionaries: Optional[dict] = None):
    """Refuse a checkpoint made by another plugin format, with other attention settings than ``args``, or with
    other dictionaries than ``dictionaries`` (the model's, from the data directory)."""
    from .. import __version__

    stored = decode_metadata(stored)
    check_dictionaries(stored.get("dictionaries"), dictionaries, args)
    if stored.get("plugin") != "fairseq_eatt":
        raise CheckpointMismatchError(f"the checkpoint's fairseq_eatt metadata is unreadable ({stored!r:.200})")
    fmt = stored.get("format")
    if fmt == 0:  # saved before the plugin recorded its settings
        logger.warning("this checkpoint predates fairseq_eatt's checkpoint metadata: its attention settings "
                       "cannot be checked against the model's")
        return
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"the checkpoint was written by fairseq_eatt {stored.get('version')} (checkpoint format {fmt}); this "
            f"is fairseq_eatt {__version__} (format {CHECKPOINT_FORMAT}), which computes its models differently: "
            f"use fairseq_eatt {stored.get('version')} for this checkpoint, or retrain")
    ours, problems = attention_settings(args), []
    for flag, theirs in stored.get("attention", {}).items():
        mine = ours.get(flag)
        if mine is None:
            problems.append(f"{flag}: unknown to this version")
        elif mine["variant"] != theirs["variant"]:
            problems.append(f"{flag}: checkpoint {theirs['variant']}, model {mine['variant']}")
        elif _options_differ(mine["variant"], mine["options"], theirs["options"]):
            diff = sorted(k for k in set(mine["options"]) | set(theirs["options"])
                          if mine["options"].get(k) != theirs["options"].get(k))
            problems.append(f"{flag} {mine['variant']} options " + ", ".join(
                f"{k}: checkpoint {theirs['options'].get(k)!r}, model {mine['options'].get(k)!r}" for k in diff))
    if problems:
        raise CheckpointMismatchError(
            "the checkpoint was trained with other attention settings than this model: " + "; ".join(problems)
            + ". Build the model with the checkpoint's settings (fairseq-generate takes them from the checkpoint "
              "unless --model-overrides changes them; fairseq-train --restore-file needs the same flags)")

"""The runs' JSON results: loading (malformed files named), identity, the collection a table reads, and the
numbers every report shares (mean and standard deviation, attention energy, the setting in words)."""
import dataclasses
import glob
import json
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from ..attention import POSITION_FLAGS, get_attention_class
from ..energy.tables import BUILTIN
from . import recipes as R
from .settings import SETTINGS

SCALE_NOTES = {
    "small": "**reduced scale**: Multi30k En-De (29k training pairs), `transformer_eatt_small` (d 256, 3+3 layers), "
             "650 updates of 2,048 tokens on a 2-core CPU. It shows trends at a small budget; its numbers are not "
             "comparable to the paper's.",
    "paper": "the paper's scale (Transformer-base, the paper's corpora, update counts and decoding settings).",
}


def describe_setting(setting: Dict) -> str:
    """The scale a run was made at; a setting that differs from the preset says so."""
    preset = SETTINGS.get((setting["task"], setting["scale"]))
    custom = preset is not None and preset.as_dict() != {k: (tuple(v) if isinstance(v, list) else v)
                                                          for k, v in setting.items()}
    text = (f"{setting['task']}, `{setting['arch']}`, {setting['max_update']:,} updates of {setting['max_tokens']:,} "
            f"tokens x {setting['update_freq']} (update-freq), dropout {setting['dropout']}, peak lr {setting['lr']}, "
            f"warm-up {setting['warmup_updates']:,}. ")
    if custom:
        return text + f"**Custom settings** (they differ from the {setting['scale']}-scale preset)."
    return text + SCALE_NOTES.get(setting["scale"], "")


class ResultError(ValueError):
    pass


def load_runs(results: str) -> List[Dict]:
    """Every run JSON under ``results`` (``<task>-<scale>/<run>.json``); malformed files are named in the error."""
    runs = []
    for path in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        if os.path.basename(path).startswith("figure"):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            for key in ("task", "scale", "seed", "attention", "valid", "test", "model", "config_hash"):
                if key not in data:
                    raise ResultError(f"missing key {key!r}")
            data["_path"] = path
        except (OSError, json.JSONDecodeError, ResultError) as err:
            raise ResultError(f"{path}: not a run result ({err})") from None
        runs.append(data)
    return runs


def key_of(run: Dict) -> Tuple:
    a = run["attention"]
    return (run["task"], run["scale"], a["encoder_self"], a["decoder_self"], a["decoder_cross"], run["seed"],
            run.get("tag", ""), run.get("eatt_recipe", "paper"))  # runs made before recipes used the paper's


def spec_key(spec: R.RunSpec) -> Tuple:
    return (spec.task, spec.scale, spec.encoder_self, spec.decoder_self, spec.decoder_cross, spec.seed, spec.tag,
            spec.recipe)


def mean_std(values: Sequence[float], count: bool = True) -> str:
    """``mean ± std (n)`` with the sample standard deviation; a single value is shown alone. ``count=False``
    leaves out ``(n)`` (tables that list the seeds)."""
    if not values:
        return "-"
    n = f" (n={len(values)})" if count else ""
    if len(values) == 1:
        return f"{values[0]:.2f}{n}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}{n}"


def nonzero_ratios(run: Dict, position: str):
    """The run's measured ratio of ones in its binarized inputs at ``position`` (mean over layers, last
    validation): one ratio, a (query, key) pair in cross-attention; None where it binarizes nothing."""
    found = run.get("binarization_last_valid") or {}

    def mean(prefix):
        values = [v for k, v in found.items() if k.startswith(prefix + "_L")]
        return statistics.mean(values) if values else None

    if position == "decoder_cross":
        q, k = mean("cross_query"), mean("cross_key")
        return None if q is None or k is None else (q, k)
    return mean(position)


def attention_energy(run: Dict, table_name: str = "paper-asic", part: str = "attention",
                     convention: str = "paper") -> float:
    """Energy of all attention layers (``part``: attention, or alignment = the scores alone) of the run's model as
    % of the same model with vanilla attention: the declared operation counts at the model's dimensions and
    options and the test set's mean lengths. ``convention``: paper (the paper's), or complete (what the code
    executes, with the run's measured ratios of ones in the binarized inputs)."""
    table = BUILTIN[table_name]
    m, lengths = run["model"], run["lengths"]["test"]
    src, tgt = max(1, round(lengths["src"])), max(1, round(lengths["tgt"]))
    shapes = {"encoder_self": (src, src, m["encoder_layers"]), "decoder_self": (tgt, tgt, m["decoder_layers"]),
              "decoder_cross": (tgt, src, m["decoder_layers"])}
    total = base = 0.0
    options = m.get("attention_options", {})  # recorded since the E-ATT study; older runs used the defaults
    for position, variant in run["attention"].items():
        lq, lk, layers = shapes[position]
        cls = get_attention_class(variant)
        own = options.get(POSITION_FLAGS[position], {})
        ratio = nonzero_ratios(run, position) if convention == "complete" else None
        extra = {"self_attention": position != "decoder_cross"} if convention == "complete" else {}
        causal = convention == "complete" and position == "decoder_self"
        ops = cls.cost.op_counts(lq, lk, m["embed_dim"], m["heads"], convention, ratio, causal=causal,
                            **{**extra, **own})[part]
        ref = get_attention_class("vanilla").cost.op_counts(lq, lk, m["embed_dim"], m["heads"], convention, None,
                                                      causal=causal, **extra)[part]
        total += layers * table.energy(ops)
        base += layers * table.energy(ref)
    return 100.0 * total / base


class Collection:
    """The runs of one folder; tables read those of one E-ATT recipe (``--eatt-recipe`` of the runs)."""

    def __init__(self, runs: List[Dict], recipe: str = "paper"):
        self.recipe = recipe
        self.by_key: Dict[Tuple, Dict] = {}
        for run in runs:
            key = key_of(run)
            if key in self.by_key:
                raise ResultError(f"{run['_path']} and {self.by_key[key]['_path']} are the same run")
            self.by_key[key] = run

    def scales(self) -> List[str]:
        return sorted({k[1] for k in self.by_key if k[7] == self.recipe})

    def get(self, spec: R.RunSpec) -> Optional[Dict]:
        return self.by_key.get(spec_key(dataclasses.replace(spec, recipe=self.recipe)))

    def group(self, task: str, scale: str, enc: str, dec: str, cross: str) -> List[Dict]:
        return [r for k, r in sorted(self.by_key.items(), key=lambda kv: kv[0][5])
                if k[:5] == (task, scale, enc, dec, cross) and not k[6]  # no study options
                and k[7] == self.recipe]

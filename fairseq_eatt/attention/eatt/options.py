"""E-ATT's options, each declared once with its value under each recipe (``--eatt-recipe``), and the recipes."""
import argparse
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from torch import nn

from ..base import AttentionBase
from ..options import Option, argparse_type, parse_bool
from ..registry import DECODER_CROSS, DECODER_SELF, ENCODER_SELF

SCORE_SCALES = ("qk-head-dim", "head-dim", "model-dim", "none")
INPUT_NORMS = ("none", "static", "learnable")
QK_DIMS = ("model-dim", "head-dim")  # or a number
INITS = ("xavier", "authors")
RECIPES = ("paper", "paper-prenorm", "authors")
DEFAULT_RECIPE = "paper-prenorm"  # measured best by the E-ATT study (results/study)
# the attention options each recipe takes from the declarations in OPTIONS (paper-prenorm changes the blocks only)
RECIPE_OPTIONS = {"paper": "paper", "paper-prenorm": "paper", "authors": "authors"}
RECIPE_NOTES = {
    "paper": "the paper's text: post-norm blocks, as fairseq's transformer, tau = 1",
    "paper-prenorm": "the paper's attention (tau = 1) in pre-norm blocks",
    "authors": "the authors' released code: pre-norm blocks, tau = 0, Q/K of d/h, their scales and initialization",
}
THRESHOLD_POSITIONS = (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)  # order of --eatt-threshold ENC,DEC,CROSS


# ---------------------------------------------------------------------------------------------- option parsing
def check_threshold(threshold, flag: str = "--eatt-threshold") -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be a finite number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number (the binarization threshold tau), got {threshold!r}")
    return value


def parse_thresholds(value) -> Tuple[float, float, float]:
    """One threshold for every position, or three (encoder self, decoder self, cross) as a tuple or "a,b,c"."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) not in (1, 3):
        raise ValueError(f"--eatt-threshold takes one number or three comma-separated numbers (encoder self, "
                         f"decoder self, cross-attention), got {value!r}")
    taus = [check_threshold(p) for p in parts]
    return tuple(taus * 3 if len(taus) == 1 else taus)


def _threshold_value(text: str, flag: str = "--eatt-threshold"):
    taus = parse_thresholds(text)
    return taus if "," in str(text) else taus[0]


def resolve_qk_dim(qk_dim, embed_dim: int, num_heads: int) -> int:
    """Total Q/K width: a positive multiple of the heads, or model-dim (None) / head-dim (model dim / heads)."""
    if qk_dim is None or qk_dim == "model-dim":
        value = embed_dim
    elif qk_dim == "head-dim":
        value = embed_dim // num_heads
    else:
        try:
            value = int(qk_dim)
        except (TypeError, ValueError):
            value = -1
    if value <= 0 or value % num_heads != 0:
        raise ValueError(f"--eatt-qk-dim must be model-dim, head-dim or a positive multiple of the number of "
                         f"heads ({num_heads}), got {qk_dim!r}")
    return value


def qk_dim_arg(text: str):
    if text in QK_DIMS:
        return text  # a name, not None: None means "not given", which takes the recipe's value
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be model-dim, head-dim or a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


@dataclass(frozen=True)
class EattOption(Option):
    """An E-ATT option: ``default`` is its value under the paper's recipes, ``authors`` under the authors'."""

    authors: Any = None

    def for_recipe(self, recipe: str):
        return self.authors if RECIPE_OPTIONS[recipe] == "authors" else self.default

    def default_for(self, args):
        return self.for_recipe(recipe_of(args))

    def help_text(self) -> str:
        shown = {source: self.for_recipe(source) for source in dict.fromkeys(RECIPE_OPTIONS.values())}
        defaults = "; ".join(
            f"{', '.join(r for r in RECIPES if RECIPE_OPTIONS[r] == source)}: "
            f"{'same as --eatt-score-scale' if v is None and self.key == 'cross_score_scale' else v}"
            for source, v in shown.items())
        choices = f"; choices: {', '.join(self.choices)}" if self.choices else ""
        return f"{self.help} (default by --eatt-recipe: {defaults}){choices}"


def _bool_option(key: str, flag: str, help: str) -> EattOption:
    return EattOption(key, flag, False, help, type=argparse_type(parse_bool, flag, "BOOL"), metavar="BOOL",
                      check=parse_bool, authors=False)


THRESHOLD = EattOption("threshold", "--eatt-threshold", 1.0,
                       "binarization threshold tau, f(x) = 1 if x > tau else 0: one number, or three comma-separated "
                       "ones for encoder self-, decoder self- and cross-attention", metavar="TAU",
                       type=argparse_type(_threshold_value, "--eatt-threshold", "TAU"), authors=0.0)
LEARN_THRESHOLD = _bool_option("learn_threshold", "--eatt-learn-threshold",
                               "learn one threshold per input feature, starting at tau, trained through the surrogate "
                               "gradient")
QK_DIM = EattOption("qk_dim", "--eatt-qk-dim", None, "total width of the selected Q/K: model-dim, head-dim (model dim "
                    "/ heads) or a multiple of the heads", metavar="N", type=qk_dim_arg, authors="head-dim")
SCORE_SCALE = EattOption("score_scale", "--eatt-score-scale", "qk-head-dim",
                         "divide L1 distances by sqrt of: qk-head-dim (per-head Q/K width), head-dim (model dim / "
                         "heads), model-dim (Eq. 10 read literally) or none", metavar="SCALE", choices=SCORE_SCALES,
                         authors="qk-head-dim")
CROSS_SCORE_SCALE = EattOption("cross_score_scale", "--eatt-cross-score-scale", None,
                               "score scale in cross-attention", metavar="SCALE", choices=SCORE_SCALES,
                               authors="head-dim")
INPUT_NORM = EattOption("input_norm", "--eatt-input-norm", "none",
                        "separate layer norms on the binarized inputs only (query and key side)", metavar="NORM",
                        choices=INPUT_NORMS, authors="none")
MODULE_NORM = EattOption("module_norm", "--eatt-module-norm", "none",
                         "a layer norm owned by the module, as in the authors' code: in self-attention it feeds the "
                         "binarizer and the value projection, in cross-attention it normalizes the query side only "
                         "(a pre-norm block already provides it)", metavar="NORM", choices=INPUT_NORMS,
                         authors="none")
LEARN_TEMPERATURE = _bool_option("learn_temperature", "--eatt-learn-temperature",
                                 "learn one temperature per head that multiplies the scaled L1 scores (starts at 1)")
INIT = EattOption("init", "--eatt-init", "xavier",
                  "initialization of the selection weights: xavier (gain 1/sqrt 2, zero biases, as fairseq's "
                  "attention) or authors (their bounds; selection biases uniform in +-sqrt(3h/d))", metavar="INIT",
                  choices=INITS, authors="authors")
OPTIONS: Tuple[EattOption, ...] = (THRESHOLD, LEARN_THRESHOLD, QK_DIM, SCORE_SCALE, CROSS_SCORE_SCALE, INPUT_NORM,
                                   MODULE_NORM, LEARN_TEMPERATURE, INIT)
OPTION_BY_KEY: Dict[str, EattOption] = {o.key: o for o in OPTIONS}
# fairseq block flags each recipe implies (set only where the user gave none)
BLOCK_DEFAULTS = {
    "paper": {"encoder_normalize_before": False, "decoder_normalize_before": False},
    "paper-prenorm": {"encoder_normalize_before": True, "decoder_normalize_before": True},
    "authors": {"encoder_normalize_before": True, "decoder_normalize_before": True},
}
# options added after checkpoints were first saved, with the value that computes what those checkpoints computed
LEGACY_VALUES = {"learn_threshold": False, "module_norm": "none", "learn_temperature": False, "init": "xavier"}


def recipe_of(args) -> str:
    recipe = getattr(args, "eatt_recipe", None)
    if recipe is None:
        # arguments saved before recipes existed carry the paper's values (they always stored eatt_threshold)
        recipe = "paper" if getattr(args, "eatt_threshold", None) is not None else DEFAULT_RECIPE
    if recipe not in RECIPES:
        raise ValueError(f"--eatt-recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return recipe


def option_value(args, key: str):
    """A parsed flag's value, or its recipe's default when the flag was not given."""
    return OPTION_BY_KEY[key].from_args(args)


def position_threshold(args, position: str) -> float:
    return parse_thresholds(option_value(args, "threshold"))[THRESHOLD_POSITIONS.index(position)]


def fill_recipe_args(args):
    """Write the recipe (and the fairseq block flags it implies, where not given) into ``args``, so that saved
    checkpoints carry it; the options themselves are resolved from the recipe when a module is built."""
    recipe = recipe_of(args)
    args.eatt_recipe = recipe
    for attr, value in BLOCK_DEFAULTS[recipe].items():
        if getattr(args, attr, None) is None:
            setattr(args, attr, value)


def l1_score_divisor(module: AttentionBase, score_scale: str, cross_score_scale: Optional[str], qk_head_dim: int):
    """(name, divisor) of the L1 score scale of Eq. 10 for this module's position."""
    name = cross_score_scale if (module.encoder_decoder_attention and cross_score_scale) else score_scale
    if name not in SCORE_SCALES:
        raise ValueError(f"--eatt-score-scale must be one of {', '.join(SCORE_SCALES)}, got {name!r}")
    divisor = {
        "qk-head-dim": math.sqrt(qk_head_dim),
        "head-dim": math.sqrt(module.head_dim),
        "model-dim": math.sqrt(module.embed_dim),
        "none": 1.0,
    }[name]
    return name, divisor


def make_norm(kind: str, dim: int, flag: str) -> nn.Module:
    if kind not in INPUT_NORMS:
        raise ValueError(f"{flag} must be one of {', '.join(INPUT_NORMS)}, got {kind!r}")
    return nn.Identity() if kind == "none" else nn.LayerNorm(dim, elementwise_affine=kind == "learnable")

__all__ = [
    "SCORE_SCALES",
    "INPUT_NORMS",
    "QK_DIMS",
    "INITS",
    "RECIPES",
    "DEFAULT_RECIPE",
    "RECIPE_OPTIONS",
    "RECIPE_NOTES",
    "THRESHOLD_POSITIONS",
    "check_threshold",
    "parse_thresholds",
    "_threshold_value",
    "resolve_qk_dim",
    "qk_dim_arg",
    "EattOption",
    "_bool_option",
    "THRESHOLD",
    "LEARN_THRESHOLD",
    "QK_DIM",
    "SCORE_SCALE",
    "CROSS_SCORE_SCALE",
    "INPUT_NORM",
    "MODULE_NORM",
    "LEARN_TEMPERATURE",
    "INIT",
    "OPTIONS",
    "OPTION_BY_KEY",
    "BLOCK_DEFAULTS",
    "LEGACY_VALUES",
    "recipe_of",
    "option_value",
    "position_threshold",
    "fill_recipe_args",
    "l1_score_divisor",
    "make_norm",
]

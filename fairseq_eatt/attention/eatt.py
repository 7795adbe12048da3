"""E-ATT: attention with energy-friendly operations (Wan et al., 2022; ../shared/seeds/e-att-paper.txt).

- Inputs of the query and key paths are binarized, f(x) = 1[x > tau] (Eq. 4), with the Gaussian surrogate
  gradient of Eq. 5 (see :mod:`fairseq_eatt.attention.functional`).
- Q and K are *selections*: the sum of the rows of W_Q (W_K) picked by the binary input (Eqs. 6-9). Numerically
  that is ``binary(X) @ W_Q``; on hardware it needs additions only.
- Scores are negative L1 distances, -||Q_i - K_j||_1 / scale (Eq. 10), again additions only.
- V and the output projection are ordinary linear layers.

The paper's ablations (Table 5) live here too: ``eatt_select`` (binarized selection, dot-product scores) and
``eatt_l1`` (linear Q/K projections, L1 scores).

Every option is declared once, in :data:`OPTIONS`, with its value under each recipe (``--eatt-recipe``):
``paper`` follows the paper's text (post-norm blocks, as fairseq's transformer); ``paper-prenorm`` is the same
attention in pre-norm blocks; ``authors`` follows the authors' released code (NLP2CT/E-Att, ANCHORS.md
section 1): pre-norm blocks, threshold 0 on the layer-normed input, Q/K of model dim / heads in total, score scale
sqrt(per-head Q/K dim) in self-attention and sqrt(model dim / heads) in cross-attention, their initialization.
In a pre-norm block fairseq's own layer norm before the attention is exactly the authors' module-owned norm (it
feeds Q, K and V in self-attention, the query side only in cross-attention); ``--eatt-module-norm`` adds that norm
inside the module for post-norm blocks. Any option given on the command line overrides the recipe. The recipe
sets the blocks of the whole model, whatever attention each position uses, so that vanilla and E-ATT models built
with one recipe are compared in the same blocks.
"""
import argparse
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..energy.ops import (
    OpCounts,
    check_convention,
    dot_scores,
    layer_norm_ops,
    only_complete,
    projection,
    weighted_sum,
)
from .base import AttentionBase, Cache, Positions
from .functional import binarize, binarize_learned, fused_attention_wanted, pairwise_l1
from .options import Option, argparse_type, parse_bool
from .registry import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, Capabilities, register_attention
from .vanilla import VanillaAttention

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


# ---------------------------------------------------------------------------------------------- operation counts
def selection_ops(lq: int, lk: int, d: int, convention: str, nonzero_ratio=None, shared_input=False,
                  qk_dim: Optional[int] = None) -> OpCounts:
    """Q and K by binarized selection (Eqs. 6-9) into ``qk_dim`` outputs (default d). Paper: l*qk_dim additions
    per projection. Complete: each selected row of W (nonzero ratio x d x qk_dim per token, 0.5 without a
    measured ratio; the bias completes a row with a single selected feature) and one comparison per binarized
    input, once when queries and keys binarize the same input (self-attention without separate learnable input
    norms). ``nonzero_ratio``: one ratio, or a (query side, key side) pair for cross-attention.

    Measured difference (tested): a token with *no* selected feature still adds its bias, qk_dim additions that a
    ratio-based count does not see."""
    qk = d if qk_dim is None else qk_dim
    if convention == "paper":
        return OpCounts(add=(lq + lk) * qk)
    if nonzero_ratio is None:
        nonzero_ratio = 0.5
    q_ratio, k_ratio = nonzero_ratio if isinstance(nonzero_ratio, (tuple, list)) else (nonzero_ratio,) * 2
    return OpCounts(add=d * qk * (float(q_ratio) * lq + float(k_ratio) * lk), cmp=d * (lq if shared_input else lq + lk))


def l1_scores(lq: int, lk: int, qk_dim: int, heads: int, convention: str) -> OpCounts:
    """-|q - k|_1 / scale (Eq. 10) over ``qk_dim`` features in all. Paper: one addition per term. Complete: a
    subtraction and an accumulation per term, and the scaling of each score."""
    if convention == "paper":
        return OpCounts(add=lq * lk * qk_dim)
    return OpCounts(add=2 * lq * lk * qk_dim, mul=lq * lk * heads)


def shares_bits(options: dict) -> bool:
    """Self-attention binarizes its one input once for both sides, unless separate learnable norms make them
    differ."""
    return bool(options.get("self_attention")) and options.get("input_norm", INPUT_NORM.default) != "learnable"


def norm_ops(lq: int, lk: int, d: int, options: dict) -> OpCounts:
    """Layer norms the E-ATT options add (complete convention only; the paper counts no normalization)."""
    ops = OpCounts()
    module_norm = options.get("module_norm", MODULE_NORM.default)
    if module_norm != "none":  # on the queries (self-attention: they are the keys too)
        ops = ops + layer_norm_ops(lq, d, module_norm == "learnable")
    input_norm = options.get("input_norm", INPUT_NORM.default)
    if input_norm != "none":
        ops = ops + layer_norm_ops(lq, d, input_norm == "learnable")
        if not shares_bits(options):
            ops = ops + layer_norm_ops(lk, d, input_norm == "learnable")
    if options.get("learn_temperature", LEARN_TEMPERATURE.default):  # exp(log t) / scale: one multiplication per head
        ops = ops + OpCounts(mul=options.get("heads", 0))
    return ops


def resolved_qk_dim(d: int, heads: int, options: dict) -> int:
    return resolve_qk_dim(options.get("qk_dim", QK_DIM.default), d, heads)


@register_attention("eatt")
class EattAttention(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True, binarizes=True)
    added_options = LEGACY_VALUES
    options = OPTIONS
    # fairseq-eatt-convert: the selection weights start from a trained dot-product attention's W_Q and W_K
    converted_from = {"q_select": "q_proj", "k_select": "k_proj"}

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        threshold: float = THRESHOLD.default,
        learn_threshold: bool = LEARN_THRESHOLD.default,
        qk_dim=QK_DIM.default,
        score_scale: str = SCORE_SCALE.default,
        cross_score_scale: Optional[str] = CROSS_SCORE_SCALE.default,
        input_norm: str = INPUT_NORM.default,
        module_norm: str = MODULE_NORM.default,
        learn_temperature: bool = LEARN_TEMPERATURE.default,
        init: str = INIT.default,
        **kwargs,
    ):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.threshold = check_threshold(threshold)
        self.qk_dim = resolve_qk_dim(qk_dim, embed_dim, num_heads)
        self.init = INIT.validate(init)
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.qk_dim // num_heads)
        bias = self.out_proj.bias is not None
        # W_Q and W_K: rows are selected by the binarized input (Eqs. 6-9)
        self.q_select = nn.Linear(embed_dim, self.qk_dim, bias=bias)
        self.k_select = nn.Linear(self.kdim, self.qk_dim, bias=bias)
        self.track_binarization = False  # set by analysis tools; then binarization_counts holds the last forward's
        self.binarization_counts = {}
        self.input_norm = input_norm
        self.q_norm = make_norm(input_norm, embed_dim, "--eatt-input-norm")
        self.k_norm = make_norm(input_norm, self.kdim, "--eatt-input-norm")
        self.module_norm_kind = module_norm
        self.module_norm = make_norm(module_norm, embed_dim, "--eatt-module-norm")
        self.learn_threshold = LEARN_THRESHOLD.validate(learn_threshold)
        # learned thresholds, one per input feature: one for self-attention's single input, two in cross-attention
        self.q_threshold = nn.Parameter(torch.full((embed_dim,), self.threshold)) if self.learn_threshold else None
        self.k_threshold = (nn.Parameter(torch.full((self.kdim,), self.threshold))
                            if self.learn_threshold and self.encoder_decoder_attention else None)
        self.learn_temperature = LEARN_TEMPERATURE.validate(learn_temperature)
        self.log_temperature = nn.Parameter(torch.zeros(num_heads)) if self.learn_temperature else None
        self.reset_parameters()

    # ---- options: declared once in OPTIONS
    @classmethod
    def add_args(cls, parser, seen: Optional[set] = None):
        seen = set() if seen is None else seen
        if "--eatt-recipe" not in seen:  # explicit default: saved arguments always name their recipe
            seen.add("--eatt-recipe")
            parser.add_argument("--eatt-recipe", choices=RECIPES, default=DEFAULT_RECIPE, metavar="RECIPE",
                                help="defaults of every E-ATT option and of the blocks of the whole model: "
                                     + "; ".join(f"{r} ({RECIPE_NOTES[r]})" for r in RECIPES)
                                     + f"; flags given override it (default: {DEFAULT_RECIPE})")
        super().add_args(parser, seen)

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        options = super().kwargs_from_args(args, position)
        options["threshold"] = position_threshold(args, position)
        return options

    @classmethod
    def prepare_args(cls, args):
        fill_recipe_args(args)

    @classmethod
    def core_op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Paper: l*qk additions per selection (Eq. 8) and one addition per L1 term (Eq. 10), as in Appendix A.
        Complete: each selected row of W_Q / W_K is added (nonzero ratio x d x qk per token, 0.5 when no ratio
        is measured), binarization is one comparison per input, each L1 term is a subtraction plus an
        accumulation, the scores are scaled (one multiplication each), and the option's layer norms are
        counted. ``self_attention=True``: queries and keys binarize one input, compared once."""
        check_convention(convention)
        qk = resolved_qk_dim(d, heads, options)
        alignment = (selection_ops(lq, lk, d, convention, nonzero_ratio, shares_bits(options), qk)
                     + l1_scores(lq, lk, qk, heads, convention)
                     + only_complete(convention, norm_ops(lq, lk, d, {**options, "heads": heads})))
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}

    key_side_weights = ("k_select", "k_proj", "v_proj", "k_norm")

    @classmethod
    def cached_key_width(cls, d, heads, **options):
        return resolved_qk_dim(d, heads, options)

    @classmethod
    def cached_key_op_counts(cls, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Cached keys save their selections (and binarizations and input norms, unless self-attention shares the
        query's bits) and their value projections."""
        qk = resolved_qk_dim(d, heads, options)
        if convention == "paper":
            keys = OpCounts(add=cached * qk)
        else:
            ratio = 0.5 if nonzero_ratio is None else nonzero_ratio
            k_ratio = ratio[1] if isinstance(ratio, (tuple, list)) else ratio
            shared = shares_bits(options)
            keys = OpCounts(add=d * qk * float(k_ratio) * cached, cmp=0 if shared else d * cached)
            input_norm = options.get("input_norm", INPUT_NORM.default)
            if input_norm != "none" and not shared:
                keys = keys + layer_norm_ops(cached, d, input_norm == "learnable")
        return {"alignment": keys, "attention": keys + projection(cached, d, d)}

    def reset_parameters(self):
        super().reset_parameters()
        if getattr(self, "init", "xavier") == "authors":
            self._authors_init()
            return
        for lin in (self.q_select, self.k_select):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0.0)

    def _authors_init(self):
        """The released code's bounds: selection weights Xavier-uniform over (input, all Q/K outputs: Q and K
        are one matrix in self-attention), selection biases uniform in +-sqrt(3h/d), value and output weights
        and biases uniform in +-sqrt(3/d)."""
        fused = 2 if self.self_attention else 1
        bound = math.sqrt(6.0 / (self.embed_dim + fused * self.qk_dim))
        bias_bound = math.sqrt(3.0 * self.num_heads / self.embed_dim)
        for lin in (self.q_select, self.k_select):
            nn.init.uniform_(lin.weight, -bound, bound)
            if lin.bias is not None:
                nn.init.uniform_(lin.bias, -bias_bound, bias_bound)
        plain = math.sqrt(3.0 / self.embed_dim)
        for lin in ([self.v_proj] if self.value_projection else []) + [self.out_proj]:
            nn.init.uniform_(lin.weight, -plain, plain)
            if lin.bias is not None:
                nn.init.uniform_(lin.bias, -plain, plain)

    # ---- hooks
    def normalize_inputs(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                         ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """The module-owned norm (authors' code): self-attention normalizes its input once and uses it for
        Q, K and V; cross-attention normalizes the query side only."""
        if self.module_norm_kind == "none":
            return query, key, value
        normed = self.module_norm(query)
        if self.encoder_decoder_attention:
            return normed, key, value
        # each distinct input tensor is normalized once
        normed_key: Optional[Tensor] = None
        if key is not None:
            normed_key = normed if key is query else self.module_norm(key)
        normed_value: Optional[Tensor] = None
        if value is not None:
            if value is query:
                normed_value = normed
            elif value is key:
                normed_value = normed_key
            else:
                normed_value = self.module_norm(value)
        return normed, normed_key, normed_value

    def _bits(self, x: Tensor, side: str) -> Tensor:
        """The binarized input of one side (``query`` or ``key``), afresh."""
        if side == "key":
            x = self.k_norm(x)
            threshold = self.k_threshold if self.k_threshold is not None else self.q_threshold
        else:
            x = self.q_norm(x)
            threshold = self.q_threshold
        if threshold is None:
            return binarize(x, self.threshold)
        return binarize_learned(x, threshold)

    def binary_codes(self, query: Tensor, key: Tensor) -> Tuple[Tensor, Tensor]:
        """The binarized inputs (T, B, d) and (S, B, d) that select Q and K for these inputs, computed afresh
        (for analysis; the forward pass is untouched)."""
        query, key, _ = self.normalize_inputs(query, key, None)
        assert key is not None
        return self._bits(query, "query"), self._bits(key, "key")

    def binarize(self, x: Tensor, side: str, bits: Optional[Tensor] = None) -> Tensor:
        """The binarized input of one side; ``bits``: already computed for this input (self-attention)."""
        if bits is None:
            bits = self._bits(x, side)
        if not torch.jit.is_scripting() and self.track_binarization:
            self._record_binarization(side, bits)
        return bits

    @torch.jit.unused
    def _record_binarization(self, side: str, bits: Tensor):
        """Ones per token, (T, B), of the last forward (see fairseq_eatt.analysis.binarization)."""
        # counted in integers: the statistics are not the model's arithmetic (the op counter skips them)
        self.binarization_counts[side] = bits.detach().to(torch.int32).sum(dim=-1).to(torch.float32)

    def project(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        q_bits = self.binarize(query, "query")
        k: Optional[Tensor] = None
        if key is not None:
            # self-attention with one input: the key side binarizes it with the same norm, so once is enough
            same = key is query and self.k_threshold is None and self.input_norm != "learnable"
            k_bits = self.binarize(key, "key", q_bits if same else None)
            k = self._split_heads(self.k_select(k_bits))
        v: Optional[Tensor] = None
        if value is not None:
            v = self.project_value(value)
        return self._split_heads(self.q_select(q_bits)), k, v

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_select(self.binarize(query, "query")))

    def project_key(self, key: Tensor) -> Tensor:
        return self._split_heads(self.k_select(self.binarize(key, "key")))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """On GPUs with triton (or FAIRSEQ_EATT_FUSED=1), the fused Triton kernel when the weights are not asked for
        and nothing changes the dense path's probabilities (dropout, learned temperatures, a subclass's scores); the
        dense path otherwise."""
        if not torch.jit.is_scripting() and not need_weights and self._fusable() and fused_attention_wanted(q):
            return self._fused_attend(q, k, v, key_padding_mask, attn_mask), None
        return self.dense_attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights)

    @torch.jit.unused
    def _fusable(self) -> bool:
        dropout = self.dropout_p > 0 and (self.training or self.dropout_at_inference)
        return type(self).computes_like(EattAttention) and self.log_temperature is None and not dropout

    @torch.jit.unused
    def _fused_attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                      attn_mask: Optional[Tensor]) -> Tensor:
        from .triton_l1 import FusedEattAttention

        rows, heads, tgt_len, width = q.shape
        src_len, dv = k.size(2), v.size(3)
        out = FusedEattAttention.apply(q.reshape(rows * heads, tgt_len, width), k.reshape(rows * heads, src_len, -1),
                                       v.reshape(rows * heads, src_len, dv), 1.0 / self.score_divisor, heads,
                                       attn_mask, key_padding_mask)
        return out.view(rows, heads, tgt_len, dv)

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        """-|q - k|_1 / scale, times each head's learned temperature when there is one."""
        distances = pairwise_l1(q, k)
        if self.log_temperature is None:
            return distances.mul(-1.0 / self.score_divisor)
        return distances.mul(self.log_temperature.exp().mul(-1.0 / self.score_divisor).view(-1, 1, 1))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, threshold={self.threshold}, learn_threshold={self.learn_threshold}, "
            f"qk_dim={self.qk_dim}, score_scale={self.score_scale_name}, input_norm={self.input_norm}, "
            f"module_norm={self.module_norm_kind}, learn_temperature={self.learn_temperature}, init={self.init}"
        )


@register_attention("eatt_select")
class EattSelectAttention(EattAttention):
    """Ablation "discrete selection": binarized selection for Q and K, ordinary scaled dot-product scores."""

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return torch.matmul(q, k.transpose(-1, -2)).float().mul_(q.size(-1) ** -0.5)

    @classmethod
    def core_op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        qk = resolved_qk_dim(d, heads, options)
        extra = {k: v for k, v in options.items() if k != "learn_temperature"}  # dot products use no temperature
        alignment = (selection_ops(lq, lk, d, convention, nonzero_ratio, shares_bits(options), qk)
                     + dot_scores(lq, lk, qk, heads, convention)
                     + only_complete(convention, OpCounts(mul=lq * lk * heads) + norm_ops(lq, lk, d, extra)))
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}


@register_attention("eatt_l1")
class EattL1Attention(VanillaAttention):
    """Ablation "L1 distance": ordinary linear Q/K projections, negative L1-distance scores (Eq. 10)."""

    options = (SCORE_SCALE, CROSS_SCORE_SCALE)

    def __init__(self, embed_dim: int, num_heads: int, *, score_scale: str = SCORE_SCALE.default,
                 cross_score_scale: Optional[str] = CROSS_SCORE_SCALE.default, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.head_dim)

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query))  # no 1/sqrt(d) here: the L1 score is scaled instead

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return pairwise_l1(q, k).mul(-1.0 / self.score_divisor)

    @classmethod
    def core_op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        alignment = projection(lq, d, d) + projection(lk, d, d) + l1_scores(lq, lk, d, heads, convention)
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}

"""The survey's techniques on any attention variant: their flags, declared once, their checks and their wiring
into the model. Quantization: fairseq's quantization noise and quantization-aware training of weights
(quantization.py); token pruning after an encoder layer (pruning.py); early exit from the decoder
(early_exit.py)."""
from typing import Optional

from torch import nn

from fairseq.modules.quant_noise import quant_noise

from .. import quantization
from ..attention import POSITION_FLAGS, AttentionSpecError
from ..attention.options import Option
from ..criterions.label_smoothed_cross_entropy_with_aux import NAME as AUX_CRITERION
from ..pruning import IMPORTANCE, TokenPruner, check_prune_args
from ..quantization import QuantizedLinear, check_weight_bits, parse_modules


class WordedOption(Option):
    """An option whose help says its default and choices in words, so it is shown as written; a switch keeps
    argparse's default (absent among fairseq's model flags), as the flag always had."""

    def help_text(self) -> str:
        return self.help

    def add_to(self, parser):
        if self.action:
            parser.add_argument(self.flag, *self.aliases, dest=self.attr, action=self.action, help=self.help_text())
        else:
            super().add_to(parser)


WEIGHT_BITS = WordedOption(
    "weight_bits", "--weight-bits", None, type=int, choices=quantization.WEIGHT_BITS, metavar="BITS",
    help="quantization-aware training of weights: 1 (binary, XNOR scale), 2 (ternary, TWN threshold) or 8 bits, "
         "one scale per output channel, straight-through gradients (default: float weights)")
QUANTIZE_MODULES = WordedOption(
    "quantize_modules", "--quantize-modules", "attn,ffn", metavar="MODULES",
    help="with --weight-bits: comma-separated subset of attn (every attention's linear maps, E-ATT's selections "
         "included), ffn (the feed-forward layers); default attn,ffn")
PRUNE_LAYER = WordedOption(
    "prune_layer", "--prune-layer", None, type=int, metavar="N",
    help="token pruning: after encoder layer N (1 = the first), keep only the most important source tokens; later "
         "encoder layers and cross-attention see only those (default: no pruning)")
PRUNE_KEEP_RATIO = WordedOption(
    "prune_keep_ratio", "--prune-keep-ratio", None, type=float, metavar="R",
    help="with --prune-layer: keep ceil(R x length) tokens per sentence, R in (0, 1] (default 0.7 unless "
         "--prune-threshold is given)")
PRUNE_THRESHOLD = WordedOption(
    "prune_threshold", "--prune-threshold", None, type=float, metavar="T",
    help="with --prune-layer: keep the tokens whose importance is at least T x the sentence's largest, T in [0, 1] "
         "(instead of --prune-keep-ratio)")
PRUNE_IMPORTANCE = WordedOption(
    "prune_importance", "--prune-importance", "attention", choices=IMPORTANCE, metavar="HOW",
    help="with --prune-layer: attention (default: the attention a token receives in that layer, averaged over "
         "heads and queries) or learned (a sigmoid scorer that also scales the kept tokens, trained by the "
         "translation loss)")
EARLY_EXIT = WordedOption(
    "early_exit", "--early-exit", False, action="store_true",
    help="depth-adaptive decoder: train every decoder layer's exit (the shared output layer on its state) with the "
         f"mean of all layers' losses; needs --criterion {AUX_CRITERION}")
EXIT_THRESHOLD = WordedOption(
    "exit_threshold", "--exit-threshold", 1.0, type=float, metavar="C",
    help="at inference, a target token leaves the decoder after the first layer whose exit gives its largest "
         "probability >= C, C in [0, 1]; 1 (default) runs every layer. Set it when decoding: fairseq-generate "
         "--model-overrides \"{'exit_threshold': 0.9}\"")

QUANTIZATION = (WEIGHT_BITS, QUANTIZE_MODULES)
PRUNING = (PRUNE_LAYER, PRUNE_KEEP_RATIO, PRUNE_THRESHOLD, PRUNE_IMPORTANCE)
EARLY_EXITS = (EARLY_EXIT, EXIT_THRESHOLD)
TECHNIQUE_OPTIONS = QUANTIZATION + PRUNING + EARLY_EXITS


def add_technique_args(parser):
    for option in TECHNIQUE_OPTIONS:
        option.add_to(parser)


def given(option: Option, args):
    """The flag's value as parsed, None when absent: the checks tell "not given" from the default."""
    return getattr(args, option.attr, None)


# ---- checks, each naming the flag --------------------------------------------------------------------------------

def check_quant_noise_args(args):
    noise, block = getattr(args, "quant_noise_pq", 0) or 0, getattr(args, "quant_noise_pq_block_size", 8) or 8
    dims = {getattr(args, f"{side}_embed_dim", None) for side in ("encoder", "decoder")} - {None}
    if noise > 0 and any(d % block for d in dims):
        raise AttentionSpecError(f"--quant-noise-pq-block-size {block} must divide the input size of every linear "
                                 f"map, among them the model dimensions {sorted(dims)}")


def check_quantization_args(args):
    bits, modules = given(WEIGHT_BITS, args), given(QUANTIZE_MODULES, args)
    try:
        if bits is not None:
            check_weight_bits(bits)
            parse_modules(modules or QUANTIZE_MODULES.default)
        elif modules:
            raise ValueError("--quantize-modules needs --weight-bits (1, 2 or 8)")
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None


def check_pruning_args(args):
    try:
        check_prune_args(*(given(option, args) for option in PRUNING), getattr(args, "encoder_layers", None))
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None


def check_early_exit_args(args):
    threshold = given(EXIT_THRESHOLD, args)
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise AttentionSpecError(f"--exit-threshold must be in [0, 1] (the largest probability at which a token "
                                 f"exits), got {threshold}")
    trains_exits = given(EARLY_EXIT, args) or False
    exits = trains_exits or (threshold is not None and threshold < 1.0)
    criterion = getattr(args, "criterion", None)
    if trains_exits and criterion not in (None, AUX_CRITERION):
        raise AttentionSpecError(f"--early-exit trains every decoder layer's exit with --criterion {AUX_CRITERION} "
                                 f"(--criterion {criterion} would train the last layer only)")
    if exits and getattr(args, "cross_self_attention", False):
        raise AttentionSpecError("--early-exit / --exit-threshold with --cross-self-attention: a skipped layer's "
                                 "cache would need the source's keys too; use one or the other")
    if exits and getattr(args, "adaptive_softmax_cutoff", None):
        raise AttentionSpecError("--early-exit / --exit-threshold need the full output layer for their "
                                 "confidence; --adaptive-softmax-cutoff replaces it")


def check_technique_args(args):
    check_quant_noise_args(args)
    check_quantization_args(args)
    check_pruning_args(args)
    check_early_exit_args(args)


# ---- wiring: what the model's parts build from the flags ----------------------------------------------------------

def quantizes(cfg, part: str) -> Optional[int]:
    """The weight bits of ``part`` (attn or ffn) under ``--weight-bits``/``--quantize-modules``; None: float."""
    bits = given(WEIGHT_BITS, cfg)
    if bits and part in parse_modules(given(QUANTIZE_MODULES, cfg) or QUANTIZE_MODULES.default):
        return bits
    return None


def quantize_linear_maps(module: nn.Module, bits: int):
    """Every nn.Linear inside ``module`` becomes a QuantizedLinear sharing its parameters (checkpoint keys stay)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QuantizedLinear.from_linear(child, bits))


def quantize_attention(module: nn.Module, cfg, position: str, name: str) -> nn.Module:
    """With ``--quant-noise-pq``, fairseq's quantization noise on the attention's linear maps, as on those of
    fairseq's attention; with ``--weight-bits``, those maps quantized."""
    noise, block = cfg.quant_noise.pq, cfg.quant_noise.pq_block_size
    if noise > 0:
        for linear in [m for m in module.modules() if isinstance(m, nn.Linear)]:
            if linear.in_features % block != 0:
                raise AttentionSpecError(
                    f"--quant-noise-pq-block-size {block} must divide the input size of every linear map of "
                    f"{POSITION_FLAGS[position]} {name} ({linear.in_features} does not)")
            quant_noise(linear, noise, block)
    bits = quantizes(cfg, "attn")
    if bits:
        quantize_linear_maps(module, bits)
    return module


def quantize_fc(layer_fc: nn.Linear, cfg) -> nn.Module:
    bits = quantizes(cfg, "ffn")
    return QuantizedLinear.from_linear(layer_fc, bits) if bits else layer_fc


def prune_after(cfg) -> int:
    """The encoder layer (from 1) after which tokens are pruned; -1: none."""
    layer = given(PRUNE_LAYER, cfg)
    return -1 if layer is None else int(layer)


def token_pruner(cfg, embed_dim: int) -> Optional[TokenPruner]:
    if given(PRUNE_LAYER, cfg) is None:
        return None
    return TokenPruner(embed_dim, given(PRUNE_KEEP_RATIO, cfg), given(PRUNE_THRESHOLD, cfg),
                       given(PRUNE_IMPORTANCE, cfg) or PRUNE_IMPORTANCE.default)


def exit_threshold(cfg) -> float:
    return float(EXIT_THRESHOLD.from_args(cfg))

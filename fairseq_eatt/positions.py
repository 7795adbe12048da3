"""The three attention positions as the rest of the plugin uses them: each one's argparse attribute, and a variant
placed everywhere it is allowed. Derived from the attention registry only; kept outside ``attention/`` until the
registry holds them, so that the energy accounting and the benchmarks need not import the model or the recipes."""
from typing import Dict

from .attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, POSITION_FLAGS, get_attention_class

POSITION_ATTRS = {position: flag[2:].replace("-", "_") for position, flag in POSITION_FLAGS.items()}


def everywhere_allowed(variant: str) -> Dict[str, str]:
    """``variant`` in every position it supports, vanilla attention in the others."""
    allowed = get_attention_class(variant).capabilities.allowed_positions()
    return {pos: (variant if pos in allowed else "vanilla") for pos in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)}

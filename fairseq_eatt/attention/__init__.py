"""Attention variants behind one interface (:class:`AttentionBase`) and a registry.

One file per variant family; importing this package registers them all.
E-ATT lives in :mod:`fairseq_eatt.attention.eatt`.
"""
from .base import AttentionBase, Positions
from .registry import (
    DECODER_CROSS,
    DECODER_SELF,
    ENCODER_SELF,
    POSITION_FLAGS,
    AttentionSpecError,
    Capabilities,
    available_attentions,
    build_attention,
    check_position,
    get_attention_class,
    register_attention,
)
from . import adaptive_span, cost_effective, eatt, kernels, lowrank, sparse, synthesizer, vanilla  # noqa: F401,E402

__all__ = [
    "AttentionBase",
    "Positions",
    "AttentionSpecError",
    "Capabilities",
    "ENCODER_SELF",
    "DECODER_SELF",
    "DECODER_CROSS",
    "POSITION_FLAGS",
    "available_attentions",
    "build_attention",
    "check_position",
    "get_attention_class",
    "register_attention",
]

"""Attention variants behind one interface (:class:`AttentionBase`) and a registry.

One file per variant family; importing this package imports every module in it, which registers the variants
(a new family needs no line here). E-ATT lives in :mod:`fairseq_eatt.attention.eatt`.
"""
import importlib
import pkgutil

from .base import AttentionBase, Positions
from .cost import AttentionCost
from .registry import (
    DECODER_CROSS,
    DECODER_SELF,
    ENCODER_SELF,
    POSITION_ATTRS,
    POSITION_FLAGS,
    AttentionSpecError,
    Position,
    Capabilities,
    available_attentions,
    build_attention,
    check_position,
    everywhere_allowed,
    get_attention_class,
    register_attention,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AttentionBase",
    "AttentionCost",
    "Positions",
    "AttentionSpecError",
    "Capabilities",
    "ENCODER_SELF",
    "DECODER_SELF",
    "DECODER_CROSS",
    "POSITION_ATTRS",
    "POSITION_FLAGS",
    "Position",
    "available_attentions",
    "build_attention",
    "check_position",
    "everywhere_allowed",
    "get_attention_class",
    "register_attention",
]

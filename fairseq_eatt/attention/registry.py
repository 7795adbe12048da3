"""Registry of attention variants.

Each variant is a plain ``torch.nn.Module`` subclass of :class:`AttentionBase` that declares what it can do
(:class:`Capabilities`). The fairseq glue asks the registry which names exist (for ``--help`` choices) and whether a
name may be used in a given position, so a new variant appears everywhere by decorating its class with
:func:`register_attention`.
"""
import argparse
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Dict, List, Optional, Type



class Position(StrEnum):
    """Where an attention module sits in an encoder-decoder transformer (members are their names as strings)."""

    ENCODER_SELF = "encoder_self"
    DECODER_SELF = "decoder_self"
    DECODER_CROSS = "decoder_cross"


# the members' values, plain strings: stored files (checkpoints, JSON) keep holding strings, not the enum
ENCODER_SELF, DECODER_SELF, DECODER_CROSS = (p.value for p in Position)
# the command-line flag that selects each position's variant
POSITION_FLAGS = {
    ENCODER_SELF: "--encoder-self-attention",
    DECODER_SELF: "--decoder-self-attention",
    DECODER_CROSS: "--decoder-cross-attention",
}
POSITION_ATTRS = {position: flag[2:].replace("-", "_") for position, flag in POSITION_FLAGS.items()}  # argparse


@dataclass(frozen=True)
class Capabilities:
    """What a variant supports; checked when a model is built, never at run time."""

    causal: bool = True  # can hide the future and decode step by step (decoder self-attention, beam search)
    cross: bool = True  # queries and keys may come from different sequences (cross-attention)
    fixed_max_length: bool = False  # built for at most max_query_length / max_key_length positions
    binarizes: bool = False  # Q/K come from binarized inputs: binary_codes(query, key), track_binarization
    auxiliary_loss: bool = False  # auxiliary_loss() adds to the training loss (with the _with_aux criterion)
    weights_are_probabilities: bool = True  # False: the returned weights are effective weights (linformer)
    why_not: str = ""  # why a position is excluded, shown in the refusal message
    # decoder self-attention over the source followed by the target (fairseq's --cross-self-attention)
    cross_self_attention: bool = True
    cross_self_why_not: str = ""

    def allowed_positions(self) -> List[str]:
        positions = [ENCODER_SELF]
        if self.causal:
            positions.append(DECODER_SELF)
        if self.cross:
            positions.append(DECODER_CROSS)
        return positions


def arg_or_default(args, name: str, default):
    """A parsed flag's value, or ``default`` when the flag is absent or None."""
    value = getattr(args, name, None)
    return default if value is None else value


class AttentionSpecError(ValueError):
    """A variant name or variant/position combination that cannot work; the message names the flag."""


_REGISTRY: Dict[str, Type] = {}


def register_attention(name: str, *, cost: Type) -> Callable[[Type], Type]:
    """Class decorator: registers the module under ``name``, with ``cost`` (an ``AttentionCost`` subclass) as its
    declared cost model, reachable as ``Module.cost``."""

    def wrap(cls: Type) -> Type:
        if name in _REGISTRY:
            raise ValueError(f"attention variant {name!r} is already registered by {_REGISTRY[name].__name__}")
        if not isinstance(getattr(cls, "capabilities", None), Capabilities):
            raise TypeError(f"{cls.__name__} must declare `capabilities = Capabilities(...)`")
        cls.variant_name = name
        cls.cost = cost(cls)
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_attentions() -> List[str]:
    return sorted(_REGISTRY)


def get_attention_class(name: str, flag: str = "attention variant") -> Type:
    if name not in _REGISTRY:
        raise AttentionSpecError(
            f"{flag}: unknown attention variant {name!r}; valid choices: {', '.join(available_attentions())}"
        )
    return _REGISTRY[name]


def check_position(name: str, position: str) -> Type:
    """Return the class for ``name`` after checking that it can work in ``position``."""
    flag = POSITION_FLAGS[position]
    cls = get_attention_class(name, flag)
    allowed = cls.capabilities.allowed_positions()
    if position not in allowed:
        usable = [n for n in available_attentions() if position in _REGISTRY[n].capabilities.allowed_positions()]
        why = f" because it {cls.capabilities.why_not}" if cls.capabilities.why_not else ""
        raise AttentionSpecError(
            f"{flag} {name}: variant {name!r} cannot be used for {position.replace('_', ' ')} attention{why} "
            f"(it supports: {', '.join(allowed)}); valid choices for {flag}: {', '.join(usable)}"
        )
    return cls


def build_attention(name: str, embed_dim: int, num_heads: int, position: str = ENCODER_SELF, *,
                    kdim: Optional[int] = None, vdim: Optional[int] = None, dropout: float = 0.0, args=None,
                    **options):
    """A plain PyTorch module of variant ``name`` for ``position``. Its options are ``options`` where given, else
    read from parsed flags ``args`` (fairseq's), else the declared defaults. The model, the benchmark and the
    tests build every attention module here."""
    cls = check_position(name, position)
    values = cls.kwargs_from_args(args if args is not None else argparse.Namespace(), position)
    values.update(options)
    cross = position == DECODER_CROSS
    return cls(embed_dim, num_heads, kdim=kdim, vdim=vdim, dropout=dropout, self_attention=not cross,
               encoder_decoder_attention=cross, **values)


def everywhere_allowed(variant: str) -> Dict[str, str]:
    """``variant`` in every position it supports, vanilla attention in the others."""
    allowed = get_attention_class(variant).capabilities.allowed_positions()
    return {pos: (variant if pos in allowed else "vanilla") for pos in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)}

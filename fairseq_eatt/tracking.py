"""The binarization counts of a model's attention modules: which modules binarize their input, switching their
counting on, and the nonzero ratios accumulated over forward passes. Below the model, which logs the ratios while
training; the report of a checkpoint (the paper's Figure 3) is :mod:`fairseq_eatt.analysis.binarization`."""
from collections import defaultdict
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import AttentionBase, Capabilities, Position


# the label the reports and their stored files give each position (the cross position's is shorter)
REPORT_LABEL = {Position.ENCODER_SELF: "encoder_self", Position.DECODER_SELF: "decoder_self",
                Position.DECODER_CROSS: "cross"}


def attention_modules(model: nn.Module) -> Iterator[Tuple[str, int, nn.Module]]:
    """(position's report label, layer from 1, module) of every attention module of an encoder-decoder
    transformer."""
    for i, layer in enumerate(getattr(model.encoder, "layers", [])):
        yield REPORT_LABEL[Position.ENCODER_SELF], i + 1, layer.self_attn
    for i, layer in enumerate(getattr(model.decoder, "layers", [])):
        yield REPORT_LABEL[Position.DECODER_SELF], i + 1, layer.self_attn
        if getattr(layer, "encoder_attn", None) is not None:
            yield REPORT_LABEL[Position.DECODER_CROSS], i + 1, layer.encoder_attn


def capabilities_of(module: nn.Module) -> Capabilities:
    """A plugin module's declared capabilities; fairseq's own multi-head attention is plain vanilla attention."""
    return module.capabilities if isinstance(module, AttentionBase) else Capabilities()


def binarizes(module: nn.Module) -> bool:
    return capabilities_of(module).binarizes


def binarizing_modules(model: nn.Module) -> Iterator[Tuple[str, int, nn.Module]]:
    """(position, layer index from 1, module) for every attention module of ``model`` that binarizes its input."""
    return ((p, i, m) for p, i, m in attention_modules(model) if binarizes(m))


def set_tracking(model: nn.Module, on: bool):
    for _, _, module in binarizing_modules(model):
        module.track_binarization = on
        module.binarization_counts = {}


class BinarizationStats:
    """Accumulates ones and element counts over batches; ratio = ones / (real tokens x input dim)."""

    def __init__(self):
        self.ones: Dict[Tuple[str, int], float] = defaultdict(float)
        self.total: Dict[Tuple[str, int], float] = defaultdict(float)

    def update(self, model: nn.Module, src_pad: Optional[Tensor], tgt_pad: Optional[Tensor],
               kept_pad: Optional[Tensor] = None, pruned_after: int = 0):
        """Add the counts of the last forward pass. ``*_pad``: (B, T) bool, True at padding. With encoder token
        pruning, ``kept_pad`` is the padding of the kept source tokens, which the encoder layers after layer
        ``pruned_after`` and cross-attention's keys see."""
        for position, layer, module in binarizing_modules(model):
            counts = module.binarization_counts
            source = kept_pad if kept_pad is not None else src_pad
            if position == REPORT_LABEL[Position.DECODER_CROSS]:
                self._add(("cross_query", layer), counts.get("query"), tgt_pad, module.embed_dim)
                self._add(("cross_key", layer), counts.get("key"), source, module.kdim)
            elif position == "encoder_self":
                pad = source if kept_pad is not None and layer > pruned_after else src_pad
                for side in ("query", "key"):
                    self._add((position, layer), counts.get(side), pad, module.embed_dim, weight=0.5)
            else:
                self._add((position, layer), counts.get("query"), tgt_pad, module.embed_dim, weight=0.5)
                keys = counts.get("key")
                self._add((position, layer), keys, self._decoder_key_padding(keys, src_pad, tgt_pad),
                          module.embed_dim, weight=0.5)

    @staticmethod
    def _decoder_key_padding(keys: Optional[Tensor], src_pad: Optional[Tensor], tgt_pad: Optional[Tensor]):
        """The padding of decoder self-attention's keys: the target's, or with --cross-self-attention the source's
        followed by the target's."""
        if keys is None or tgt_pad is None or keys.size(0) == tgt_pad.size(1):
            return tgt_pad
        src = src_pad if src_pad is not None else torch.zeros(tgt_pad.size(0), keys.size(0) - tgt_pad.size(1),
                                                              dtype=torch.bool, device=tgt_pad.device)
        return torch.cat([src, tgt_pad], dim=1)

    def _add(self, key, counts: Optional[Tensor], pad: Optional[Tensor], dim: int, weight: float = 1.0):
        if counts is None:
            return
        real = torch.ones_like(counts, dtype=torch.bool) if pad is None else ~pad.t()
        self.ones[key] += weight * float(counts[real].sum())
        self.total[key] += weight * float(real.sum()) * dim

    def ratios(self) -> Dict[Tuple[str, int], float]:
        return {key: self.ones[key] / self.total[key] for key in sorted(self.total) if self.total[key] > 0}

    def counts(self) -> Dict[Tuple[str, int], Tuple[float, float]]:
        return {key: (self.ones[key], self.total[key]) for key in sorted(self.total)}

"""Ratio of nonzero binarized values (the E-ATT paper's Figure 3), per layer and per position.

Positions: ``encoder_self`` and ``decoder_self`` (the binarized input of self-attention; query and key sides are
averaged, they are the same input unless ``--eatt-input-norm learnable`` gives them different norms),
``cross_query`` (decoder states) and ``cross_key`` (encoder output). Padding tokens are left out.
"""
import json
import os
from collections import defaultdict
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from ..attention import AttentionBase, Capabilities
from ..data.text import atomic_output

POSITIONS = ("encoder_self", "decoder_self", "cross_query", "cross_key")


def attention_modules(model: nn.Module) -> Iterator[Tuple[str, int, nn.Module]]:
    """(position: encoder_self, decoder_self or cross; layer from 1; module) of every attention module of an
    encoder-decoder transformer."""
    for i, layer in enumerate(getattr(model.encoder, "layers", [])):
        yield "encoder_self", i + 1, layer.self_attn
    for i, layer in enumerate(getattr(model.decoder, "layers", [])):
        yield "decoder_self", i + 1, layer.self_attn
        if getattr(layer, "encoder_attn", None) is not None:
            yield "cross", i + 1, layer.encoder_attn


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
            if position == "cross":
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


# ---- the report of one checkpoint over a split (fairseq-eatt-binarization, Figure 3)

def collect(model, task, subset: str, max_tokens: int, max_sentences=None) -> BinarizationStats:
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    batches = task.get_batch_iterator(dataset=dataset, max_tokens=max_tokens, ignore_invalid_inputs=True,
                                      seed=1).next_epoch_itr(shuffle=False)
    stats = BinarizationStats()
    seen = 0
    set_tracking(model, True)
    try:
        with torch.no_grad():
            for sample in batches:
                net = sample["net_input"]
                # encoder and decoder directly: model.forward would log (and reset) the counts itself
                encoder_out = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
                model.decoder(net["prev_output_tokens"], encoder_out=encoder_out)
                pruned = getattr(model.encoder, "pruner", None) is not None
                stats.update(model, net["src_tokens"].eq(task.source_dictionary.pad()),
                             net["prev_output_tokens"].eq(task.target_dictionary.pad()),
                             encoder_out["encoder_padding_mask"][0] if pruned else None,
                             getattr(model.encoder, "prune_after", 0))
                seen += sample["nsentences"]
                if max_sentences and seen >= max_sentences:
                    break
    finally:
        set_tracking(model, False)
    return stats


def render(ratios, out_prefix: str, title: str):
    layers = sorted({layer for _, layer in ratios})
    present = [p for p in POSITIONS if any((p, layer) in ratios for layer in layers)]
    lines = ["| layer | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for layer in layers:
        cells = [f"{ratios[(p, layer)]:.3f}" if (p, layer) in ratios else "-" for p in present]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"

    from ..experiments.plots import pyplot, save

    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    for p in present:
        xs = [layer for layer in layers if (p, layer) in ratios]
        ax.plot(xs, [ratios[(p, x)] for x in xs], marker="o", label=p.replace("_", " "))
    ax.set_xlabel("layer")
    ax.set_ylabel("ratio of nonzero binarized values")
    ax.set_xticks(layers)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, out_prefix + ".png")
    return table


def write_report(data: str, checkpoint: str, out: str, subset: str = "valid", max_tokens: int = 4096,
                 max_sentences: Optional[int] = None) -> str:
    """Nonzero ratios of ``checkpoint``'s binarized inputs over ``subset`` of ``data`` (Figure 3): writes OUT.md,
    OUT.json and OUT.png and returns the table. A model without binarizing attention is a ValueError."""
    from ..fairseq_tools import load_checkpoint

    model, task = load_checkpoint(checkpoint, data)
    ratios = collect(model, task, subset, max_tokens, max_sentences).ratios()
    if not ratios:
        raise ValueError(f"{checkpoint} has no binarizing attention (E-ATT-style variants); nothing to measure")
    title = f"{os.path.basename(checkpoint)} on {subset}"
    table = render(ratios, out, title)
    with atomic_output(out + ".md") as handle:
        handle.write(f"Ratio of nonzero binarized values, {title} (padding excluded)\n\n" + table)
    payload = {"checkpoint": checkpoint, "data": data, "subset": subset,
               "ratios": [{"position": p, "layer": layer, "ratio": r} for (p, layer), r in ratios.items()]}
    with atomic_output(out + ".json") as handle:
        json.dump(payload, handle, indent=2)
    return table

"""Ratio of nonzero binarized values (the E-ATT paper's Figure 3), per layer and per position.

Positions: ``encoder_self`` and ``decoder_self`` (the binarized input of self-attention; query and key sides are
averaged, they are the same input unless ``--eatt-input-norm learnable`` gives them different norms),
``cross_query`` (decoder states) and ``cross_key`` (encoder output). Padding tokens are left out.
"""
import json
import os
from typing import Optional

import torch

from ..data.text import atomic_output
from ..plots import pyplot, save
from ..tracking import (  # noqa: F401  (re-exported: the names the model and the tests use)
    BinarizationStats,
    attention_modules,
    binarizes,
    binarizing_modules,
    capabilities_of,
    set_tracking,
)

POSITIONS = ("encoder_self", "decoder_self", "cross_query", "cross_key")


# ---- the report of one checkpoint over a split (fairseq-eatt-binarization, Figure 3)

def collect(model, task, subset: str, max_tokens: int, max_sentences=None) -> BinarizationStats:
    from ..fairseq_tools import load_subset

    dataset = load_subset(task, subset)
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

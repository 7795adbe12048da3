"""fairseq-eatt-binarization: nonzero ratio of the binarized inputs of a checkpoint over a dataset (Figure 3).

    fairseq-eatt-binarization DATA --path checkpoint_best.pt --subset valid --out results/fig3_binarization

writes ``OUT.md`` (table: layer x position), ``OUT.json`` and ``OUT.png`` (one line per position over layers).
"""
import argparse
import json
import os
import sys

import torch

from ..analysis.binarization import POSITIONS, BinarizationStats, set_tracking
from .common import load_checkpoint, write_atomically


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-binarization", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory (fairseq-preprocess output)")
    p.add_argument("--path", required=True, help="checkpoint of a transformer_eatt model")
    p.add_argument("--subset", default="valid", help="dataset split (train, valid, test)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch")
    p.add_argument("--max-sentences", type=int, default=None, help="stop after this many sentences")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md, OUT.json, OUT.png")
    return p.parse_args(argv)


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
                stats.update(model, net["src_tokens"].eq(task.source_dictionary.pad()),
                             net["prev_output_tokens"].eq(task.target_dictionary.pad()))
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


def main(argv=None):
    args = parse_args(argv)
    model, task = load_checkpoint(args.path, args.data)
    stats = collect(model, task, args.subset, args.max_tokens, args.max_sentences)
    ratios = stats.ratios()
    if not ratios:
        sys.exit(f"fairseq-eatt-binarization: {args.path} has no binarizing attention (E-ATT-style variants); "
                 "nothing to measure")
    title = f"{os.path.basename(args.path)} on {args.subset}"
    table = render(ratios, args.out, title)
    write_atomically(args.out + ".md", lambda f: f.write(
        f"Ratio of nonzero binarized values, {title} (padding excluded)\n\n" + table))
    payload = {"checkpoint": args.path, "data": args.data, "subset": args.subset,
               "ratios": [{"position": p, "layer": layer, "ratio": r} for (p, layer), r in ratios.items()]}
    write_atomically(args.out + ".json", lambda f: json.dump(payload, f, indent=2))
    print(table, end="")
    print(f"wrote {args.out}.md, {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    main()

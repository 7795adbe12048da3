"""fairseq-eatt-heatmap: cross-attention weights of a checkpoint for one sentence pair (the paper's Figure 2).

    fairseq-eatt-heatmap DATA --path checkpoint_best.pt --source "A dog runs ." --target "Ein Hund rennt ." \
        --bpe-codes codes --tokenize moses --layer mean --out results/fig2_heatmap.png

Weights are averaged over heads; ``--layer`` picks one decoder layer (1-based), ``mean`` averages the layers and
``all`` draws one panel per layer. Without ``--bpe-codes`` the text must already be tokenized and BPE-segmented as
the training data was.
"""
import argparse

import torch

from ..data.text import tokenize_lines
from .common import load_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-heatmap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory (for the dictionaries)")
    p.add_argument("--path", required=True, help="checkpoint")
    p.add_argument("--source", required=True, help="source sentence")
    p.add_argument("--target", required=True, help="target sentence (teacher-forced)")
    p.add_argument("--source-lang", default=None, help="source language (default: the checkpoint's)")
    p.add_argument("--target-lang", default=None, help="target language (default: the checkpoint's)")
    p.add_argument("--tokenize", choices=("moses", "none"), default="none",
                   help="tokenize the sentences with sacremoses first (as the demo's data was)")
    p.add_argument("--bpe-codes", default=None, help="subword-nmt codes to segment the sentences with")
    p.add_argument("--layer", default="mean", help="decoder layer (1-based), 'mean' or 'all'")
    p.add_argument("--out", required=True, help="PNG file to write")
    return p.parse_args(argv)


def cross_attention(model, src_tokens, prev_output_tokens):
    """Per decoder layer: cross-attention weights averaged over heads, (target len, source len)."""
    captured = []

    def keep(_module, _inputs, output):
        weights = output[1].detach().float()
        if weights.dim() == 4:  # fairseq asks its alignment layer for per-head weights: average them too
            weights = weights.mean(dim=0)
        captured.append(weights[0])

    hooks = [layer.encoder_attn.register_forward_hook(keep) for layer in model.decoder.layers]
    try:
        with torch.no_grad():
            encoder_out = model.encoder(src_tokens, src_lengths=torch.tensor([src_tokens.size(1)]))
            model.decoder(prev_output_tokens, encoder_out=encoder_out)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def main(argv=None):
    args = parse_args(argv)
    model, task = load_checkpoint(args.path, args.data)
    if any(getattr(layer, "encoder_attn", None) is None for layer in model.decoder.layers):
        raise SystemExit(f"--path {args.path}: the model has no cross-attention")
    src_lang = args.source_lang or task.cfg.source_lang
    tgt_lang = args.target_lang or task.cfg.target_lang
    src_text, tgt_text = args.source.strip(), args.target.strip()
    if args.tokenize == "moses":
        src_text = tokenize_lines([src_text], src_lang)[0]
        tgt_text = tokenize_lines([tgt_text], tgt_lang)[0]
    if args.bpe_codes:
        from subword_nmt.apply_bpe import BPE

        with open(args.bpe_codes, encoding="utf-8") as codes:
            bpe = BPE(codes)
        src_text, tgt_text = bpe.process_line(src_text), bpe.process_line(tgt_text)
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    src = src_dict.encode_line(src_text, add_if_not_exist=False, append_eos=True).long().unsqueeze(0)
    tgt = tgt_dict.encode_line(tgt_text, add_if_not_exist=False, append_eos=True).long()
    prev = torch.cat([tgt.new_tensor([tgt_dict.eos()]), tgt[:-1]]).unsqueeze(0)
    layers = cross_attention(model, src, prev)

    src_labels = [src_dict[i] for i in src[0].tolist()]
    tgt_labels = [tgt_dict[i] for i in tgt.tolist()]
    if args.layer == "mean":
        panels = [("mean over layers", torch.stack(layers).mean(0))]
    elif args.layer == "all":
        panels = [(f"layer {i + 1}", w) for i, w in enumerate(layers)]
    else:
        try:
            index = int(args.layer)
        except ValueError:
            raise SystemExit(f"--layer must be a layer number, 'mean' or 'all', got {args.layer!r}") from None
        if not 1 <= index <= len(layers):
            raise SystemExit(f"--layer {index}: the decoder has layers 1..{len(layers)}")
        panels = [(f"layer {index}", layers[index - 1])]

    from ..experiments.plots import pyplot, save

    size = 0.32
    width = max(4.0, size * len(src_labels) + 1.5) * len(panels)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(width, max(3.0, size * len(tgt_labels) + 1.5)), squeeze=False)
    for ax, (title, weights) in zip(axes[0], panels):
        ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_labels)))
        ax.set_xticklabels(src_labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tgt_labels)))
        ax.set_yticklabels(tgt_labels, fontsize=7)
        ax.set_title(f"cross-attention, {title}", fontsize=8)
        ax.set_xlabel(f"source ({src_lang})", fontsize=8)
        ax.set_ylabel(f"target ({tgt_lang})", fontsize=8)
    fig.tight_layout()
    save(fig, args.out, dpi=130)
    print(f"wrote {args.out} ({len(tgt_labels)} target x {len(src_labels)} source tokens, {len(panels)} panel(s))")


if __name__ == "__main__":
    main()

"""fairseq-eatt-heatmap: cross-attention weights of a checkpoint for one sentence pair (the paper's Figure 2).

    fairseq-eatt-heatmap DATA --path checkpoint_best.pt --source "A dog runs ." --target "Ein Hund rennt ." \
        --bpe-codes codes --tokenize moses --layer mean --out results/fig2_heatmap.png

Weights are averaged over heads; ``--layer`` picks one decoder layer (1-based), ``mean`` averages the layers and
``all`` draws one panel per layer. Without ``--bpe-codes`` the text must already be tokenized and BPE-segmented as
the training data was.
"""
import argparse

from ..analysis.heatmap import draw


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


def main(argv=None):
    args = parse_args(argv)
    try:
        drawn = draw(args.data, args.path, args.source, args.target, args.out, args.layer, args.tokenize,
                     args.bpe_codes, args.source_lang, args.target_lang)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(f"wrote {args.out} ({drawn})")


if __name__ == "__main__":
    main()

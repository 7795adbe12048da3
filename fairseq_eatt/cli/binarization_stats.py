"""fairseq-eatt-binarization: nonzero ratio of the binarized inputs of a checkpoint over a dataset (Figure 3).

    fairseq-eatt-binarization DATA --path checkpoint_best.pt --subset valid --out results/fig3_binarization

writes ``OUT.md`` (table: layer x position), ``OUT.json`` and ``OUT.png`` (one line per position over layers).
"""
import argparse
import sys

from ..analysis.binarization import write_report


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


def main(argv=None):
    args = parse_args(argv)
    try:
        table = write_report(args.data, args.path, args.out, args.subset, args.max_tokens, args.max_sentences)
    except ValueError as err:
        sys.exit(f"fairseq-eatt-binarization: {err}")
    print(table, end="")
    print(f"wrote {args.out}.md, {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    main()

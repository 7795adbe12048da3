"""fairseq-eatt-diagnose: what the attention of trained checkpoints does, per layer and position (no training).

    fairseq-eatt-diagnose DATA --path vanilla=ckpt_a.pt --path eatt=ckpt_b.pt --subset valid --out OUT

For each checkpoint (``LABEL=PATH`` or a plain path) over one split: attention entropy and maximum weight per head,
and for E-ATT-style attention the nonzero ratio of the binarized codes, dead and saturated features, how distinct
one sentence's codes are, and the correlation between the attention a key receives and its number of ones (see
:mod:`fairseq_eatt.analysis.diagnostics`). Writes OUT.md, OUT.json and OUT.png (one line per checkpoint).
"""
import argparse
import os
import shlex
import sys

from ..analysis.diagnostics import write_report


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory (fairseq-preprocess output)")
    p.add_argument("--path", action="append", required=True, metavar="[LABEL=]CHECKPOINT",
                   help="a transformer_eatt checkpoint, optionally labelled; repeat to compare several")
    p.add_argument("--subset", default="valid", help="dataset split (train, valid, test; default: valid)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (default: 4096)")
    p.add_argument("--max-sentences", type=int, default=None, help="stop after this many sentences")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md, OUT.json, OUT.png")
    args = p.parse_args(argv)
    args.checkpoints = []
    for item in args.path:
        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        label = label or os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        if not os.path.isfile(path):
            p.error(f"--path {item}: no such checkpoint file")
        args.checkpoints.append((label, path))
    labels = [label for label, _ in args.checkpoints]
    if len(set(labels)) != len(labels):
        p.error(f"--path: labels must differ, got {', '.join(labels)} (use LABEL=PATH)")
    if args.max_tokens <= 0:
        p.error(f"--max-tokens must be positive, got {args.max_tokens}")
    if args.max_sentences is not None and args.max_sentences <= 0:
        p.error(f"--max-sentences must be positive, got {args.max_sentences}")
    return args


def main(argv=None):
    args = parse_args(argv)
    command = shlex.join(["fairseq-eatt-diagnose"] + list(sys.argv[1:] if argv is None else argv))
    try:
        text = write_report(args.data, args.checkpoints, args.out, args.subset, args.max_tokens, args.max_sentences,
                            command)
    except ValueError as err:
        sys.exit(f"fairseq-eatt-diagnose: {err}")
    print(text)
    print(f"wrote {args.out}.md, {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    main()

"""Parameter counts of each attention variant (results/attention_variants.{md,json}).

    .venv/bin/python scripts/param_counts.py [--arch transformer_eatt_small] [--vocab 7968] [--out PREFIX]
"""
import argparse
import shlex
import sys

from fairseq_eatt import reports
from fairseq_eatt.perf.params import markdown, measure
from fairseq_eatt.provenance import provenance


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="transformer_eatt_small")
    p.add_argument("--vocab", type=int, default=7968, help="joined dictionary size (Multi30k, 8k BPE: 7968)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json (e.g. results/attention_variants)")
    args = p.parse_args()
    rec = {**measure(args.arch, args.vocab),
           **provenance(shlex.join(["python", "scripts/param_counts.py"] + sys.argv[1:]))}
    if args.out:
        reports.write(args.out, rec)
    print(markdown(rec), end="")


if __name__ == "__main__":
    main()

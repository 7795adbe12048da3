"""fairseq-eatt-energy: the E-ATT paper's energy tables (1, 2 and 7) from the variants' declared op counts.

    fairseq-eatt-energy [--l 22] [--d 512] [--heads 8] [--convention paper|complete|both]
                        [--table horowitz-45nm-fp32 ...] [--energy-table my_chip.json]
"""
import argparse

from ..energy.ops import CONVENTIONS
from ..energy.report import paper_report
from ..energy.tables import BUILTIN, load_table


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-energy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--l", type=int, default=22, help="sequence length (queries = keys), the paper's 22")
    p.add_argument("--d", type=int, default=512, help="model dimension")
    p.add_argument("--heads", type=int, default=8, help="attention heads (used by the complete convention)")
    p.add_argument("--convention", choices=CONVENTIONS + ("both",), default="both")
    p.add_argument("--table", action="append", default=[], choices=sorted(BUILTIN),
                   help="extra built-in energy table(s) for Tables 1 and 7")
    p.add_argument("--energy-table", action="append", default=[], metavar="JSON",
                   help='user table: {"name": ..., "add": pJ, "mul": pJ, "cmp": pJ (optional)}')
    args = p.parse_args(argv)
    for flag in ("l", "d", "heads"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if args.d % args.heads:
        p.error(f"--d ({args.d}) must be divisible by --heads ({args.heads})")
    try:
        args.extra = [BUILTIN[name] for name in args.table] + [load_table(path) for path in args.energy_table]
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    conventions = CONVENTIONS if args.convention == "both" else (args.convention,)
    for convention in conventions:
        print(f"## {convention} convention\n")
        print(paper_report(args.l, args.d, args.heads, convention, args.extra))


if __name__ == "__main__":
    main()

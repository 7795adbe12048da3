"""fairseq-eatt-energy: energy tables from the operation counts each attention variant declares.

    fairseq-eatt-energy [--l 22] [--d 512] [--heads 8] [--convention paper|complete|both]
                        [--table horowitz-45nm-fp32 ...] [--energy-table my_chip.json]
        the paper's Tables 1, 2 and 7, every registered variant and every self/cross hybrid

    fairseq-eatt-energy --path ckpt.pt --data DATA --subset test --out results/energy_ckpt
        energy per sentence and per token of a trained checkpoint at the real sentence lengths, with the
        measured nonzero ratios of its binarized inputs (writes OUT.md and OUT.json)
"""
import argparse
import shlex
import sys

from .. import reports
from ..energy import files
from ..energy.ops import CONVENTIONS
from ..energy.report import paper_tables
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
    p.add_argument("--path", help="checkpoint: report energy per sentence over --data/--subset instead")
    p.add_argument("--data", help="binarized data directory of --path")
    p.add_argument("--subset", default="test", help="split of --data (default test)")
    p.add_argument("--max-sentences", type=int, default=None, help="only the first N sentences of the split")
    p.add_argument("--cost", default="paper-asic", choices=sorted(BUILTIN),
                   help="energy table for --path (or --energy-table, whose first file then wins)")
    p.add_argument("--note", default=None, help="with --path --out: what the checkpoint is, for the report")
    p.add_argument("--out", help="write OUT.md and OUT.json (the record OUT.md is rendered from, with command, "
                                 "date, machine and commit)")
    args = p.parse_args(argv)
    if args.path and not args.data:
        p.error("--path needs --data (the binarized data directory the checkpoint was trained on)")
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


def command_line(argv) -> str:
    return shlex.join(["fairseq-eatt-energy"] + list(sys.argv[1:] if argv is None else argv))


def checkpoint_report(args, conventions, argv=None):
    from ..analysis.binarization import collect
    from ..energy.checkpoint import dataset_energy, markdown
    from ..fairseq_tools import load_checkpoint

    model, task = load_checkpoint(args.path, args.data)
    ratios = collect(model, task, args.subset, 4096, args.max_sentences).ratios()
    table = load_table(args.energy_table[0]) if args.energy_table else BUILTIN[args.cost]
    results = [dataset_energy(model, task, args.subset, table, c, ratios, args.max_sentences) for c in conventions]
    if args.out:
        print(reports.write(args.out, files.checkpoint_record(command_line(argv), results, args.note)), end="")
        print(f"wrote {args.out}.md and {args.out}.json")
    else:
        print("\n".join(markdown(r) for r in results))


def main(argv=None):
    args = parse_args(argv)
    conventions = CONVENTIONS if args.convention == "both" else (args.convention,)
    if args.path:
        return checkpoint_report(args, conventions, argv)
    if args.out:
        record = files.tables_record(command_line(argv), conventions, args.extra, args.l, args.d, args.heads)
        reports.write(args.out, record)
        print(f"wrote {args.out}.md and {args.out}.json")
        return
    print(paper_tables(args.l, args.d, args.heads, conventions, args.extra), end="")


if __name__ == "__main__":
    main()

"""fairseq-eatt-techniques: curves and comparison rows of the survey's techniques (token pruning, early exit,
binary/ternary weights) on vanilla and E-ATT, from the runs of ``fairseq-eatt-experiment techniques``.

    fairseq-eatt-experiment techniques --scale small --jobs 2      # train (resumable)
    fairseq-eatt-techniques --jobs 2 --out results/techniques

Every run's checkpoint is decoded on dev and test at its technique's settings (pruning keep ratios, early-exit
thresholds; the base runs also with pruning added at inference), each technique's row at a setting chosen on dev;
decoding energy of every row is counted on the first --energy-sentences test sentences. Decoded points are cached
under --workdir/techniques, so an interrupted run resumes. See fairseq_eatt/experiments/techniques.py.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-techniques", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=os.path.join("work", "experiments"),
                   help="fairseq-eatt-experiment's --workdir (prepared data and run folders with checkpoints)")
    p.add_argument("--results", default=os.path.join("results", "runs"), help="the runs' JSON results")
    p.add_argument("--out", default=os.path.join("results", "techniques"),
                   help="report prefix: OUT.md, OUT.json and OUT_prune.png / OUT_exit.png")
    p.add_argument("--jobs", type=int, default=1, help="decoding processes side by side (one thread each)")
    p.add_argument("--energy-sentences", type=int, default=100,
                   help="test sentences decoded under the operation counter for each row (batch 1)")
    p.add_argument("--configs", default=None, help="comma-separated configurations (default: vanilla, eatt and "
                   "every technique of fairseq_eatt/experiments/recipes.py TECHNIQUE_CONFIGS)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.energy_sentences < 1:
        p.error(f"--energy-sentences must be at least 1, got {args.energy_sentences}")
    from ..experiments import recipes as R

    if args.configs:
        try:
            args.configs = R.study_configs(args.configs, "techniques")
        except ValueError as err:
            p.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    from .. import reports
    from ..experiments import techniques
    from ..provenance import provenance

    body = techniques.measure(args.workdir, args.results, args.jobs, args.energy_sentences, args.configs)
    if not body["rows"]:
        raise SystemExit(f"fairseq-eatt-techniques: no trained run of the techniques recipe under {args.results} "
                         f"with its checkpoint under {args.workdir}: run fairseq-eatt-experiment techniques first")
    command = "fairseq-eatt-techniques " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {"kind": "techniques", **body, **provenance(command.strip())}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    record["figures"] = techniques.plot(record, args.out)
    reports.publish(args.out, record)


if __name__ == "__main__":
    main()

"""fairseq-eatt-compare: is one system better than another? The difference with its 95% interval.

    fairseq-eatt-compare --baseline results/.../vanilla.seed{1,2,3}.json --system results/.../eatt.seed{1,2,3}.json

Across seeds (runs paired by their seed): the mean of the per-seed differences with a Student-t interval. Within
each seed whose two runs kept their hypotheses (``<run>.<split>.hyp.gz`` beside the JSON): sacreBLEU's paired
bootstrap of BLEU and chrF. A difference is significant where the interval excludes 0 (p < 0.05 for the bootstrap).
The same can be checked with sacreBLEU alone on the kept files:
``sacrebleu REFS -i BASELINE_HYPS SYSTEM_HYPS --paired-bs`` (gunzip them first).
"""
import argparse
import json
import os
import sys

from ..experiments.significance import SignificanceError, compare_runs, verdict


def load(paths, flag):
    runs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                run = json.load(handle)
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"fairseq-eatt-compare: {flag} {path}: not a run result ({err})") from None
        for key in ("seed", "valid", "test"):
            if key not in run:
                raise SystemExit(f"fairseq-eatt-compare: {flag} {path}: not a run result (no {key!r}; give the "
                                 f"JSON files fairseq-eatt-experiment writes)")
        run["_path"] = path
        runs.append(run)
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"fairseq-eatt-compare: {flag}: two runs of one seed ({sorted(seeds)}); give one per seed")
    return runs


def main(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", nargs="+", required=True, metavar="JSON", help="the baseline's runs, one per seed")
    p.add_argument("--system", nargs="+", required=True, metavar="JSON", help="the compared system's runs")
    p.add_argument("--split", choices=("test", "valid"), default="test", help="test (default) or valid (dev)")
    args = p.parse_args(argv)
    baseline, system = load(args.baseline, "--baseline"), load(args.system, "--system")
    try:
        judged = verdict(system, baseline, args.split)
        if judged is None:
            raise SystemExit(f"fairseq-eatt-compare: the runs share no seed (baseline "
                             f"{sorted(r['seed'] for r in baseline)}, system {sorted(r['seed'] for r in system)}); "
                             f"runs are paired by seed")
        print(f"{args.split} BLEU, system minus baseline, seeds {','.join(map(str, judged.seeds.seeds))}: "
              f"{judged.cell}{'' if judged.finding else '  -> not a finding'}")
        base_of = {r["seed"]: r for r in baseline}
        for run in system:
            if run["seed"] not in base_of:
                continue
            boot = compare_runs(run, base_of[run["seed"]], args.split)
            if boot is None:
                print(f"  seed {run['seed']}: no kept hypotheses ({os.path.basename(run['_path'])} or its baseline)")
                continue
            for name, result in boot.items():
                print(f"  seed {run['seed']}: {name} {result.baseline:.2f} -> {result.system:.2f}, {result.text()}"
                      f"{'' if result.significant else ' (n.s.)'} [sacreBLEU paired bootstrap, {result.samples} "
                      f"resamples]")
    except SignificanceError as err:
        sys.exit(f"fairseq-eatt-compare: {err}")


if __name__ == "__main__":
    main()

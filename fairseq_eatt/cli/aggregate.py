"""fairseq-eatt-aggregate: the runs' JSON results as the paper's tables (markdown) and figures (PNG).

    fairseq-eatt-aggregate [--results results/runs] [--eatt-recipe paper] [--out results] [--scale small]

Tables report the runs of one E-ATT recipe (``fairseq-eatt-experiment --eatt-recipe``): the paper's recipe goes
to results/<scale>/, another recipe R to results/R/<scale>/. Writes OUT/<scale>/table4.md, table5.md, table6.md,
variants.md, figure1.md, figure2.md, figure3.md (and their
PNGs), each with its status (complete / partial with the missing runs / not run) and provenance, and the E-ATT
study's OUT/study/levers.md and curve.md (+ curve.png), and prints the status of each.
"""
import argparse
import os
import sys

from ..attention.eatt import DEFAULT_RECIPE, RECIPES
from ..experiments.aggregate import ResultError, aggregate
from ..experiments.recipes import recipe_folder
from ..experiments.settings import SCALES
from ..experiments.study import study_report


def main(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=os.path.join("results", "runs"), help="folder of run JSON files")
    p.add_argument("--eatt-recipe", choices=RECIPES, default=DEFAULT_RECIPE,
                   help=f"the E-ATT recipe whose runs the tables report (default: {DEFAULT_RECIPE})")
    p.add_argument("--out", default=None, help="tables go to OUT/<scale>/ (default: results for the paper's "
                   "recipe, results/RECIPE for another)")
    p.add_argument("--scale", action="append", choices=SCALES, default=None,
                   help="scale(s) to report (default: every scale with results; small if none)")
    p.add_argument("--study-long", default=None,
                   help="folder of the E-ATT study's longer-budget runs (fairseq-eatt-experiment study-long); the "
                        "study's report goes to OUT/study/ (default: results/study/long; paper recipe only)")
    p.add_argument("--study-long-gpu", default=os.path.join("results", "study", "long-h200"),
                   help="longer-budget runs trained on a GPU: listed in the study's verdict, not compared with the "
                        "CPU runs (default: results/study/long-h200)")
    p.add_argument("--study-convert", default=os.path.join("results", "study", "convert"),
                   help="the converted models' runs (fairseq-eatt-experiment study-convert; default: "
                        "results/study/convert)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.results):
        p.error(f"--results {args.results}: no such folder (run fairseq-eatt-experiment first)")
    if args.study_long is not None and args.eatt_recipe != "paper":
        p.error(f"--study-long: the study builds its configurations on the paper's recipe; aggregate it with "
                f"--eatt-recipe paper, not {args.eatt_recipe}")
    args.study_long = args.study_long or os.path.join("results", "study", "long")
    if args.out is None:
        args.out = recipe_folder("results", args.eatt_recipe)
    try:
        report = aggregate(args.results, args.out, args.scale, args.eatt_recipe)
        if "small" in report and args.eatt_recipe == "paper":  # the study's configurations build on the paper's
            report["study"] = study_report(args.results, args.study_long, os.path.join(args.out, "study"),
                                           gpu_long_results=args.study_long_gpu, convert_results=args.study_convert,
                                           index_files=("README.md", os.path.join(args.out, "README.md")))
    except ResultError as err:
        sys.exit(f"fairseq-eatt-aggregate: {err}")
    for scale, parts in report.items():
        for name, status in parts.items():
            print(f"{os.path.join(args.out, scale, name + '.md')}: {status}")  # scale "study": its report


if __name__ == "__main__":
    main()

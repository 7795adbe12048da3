"""fairseq-eatt-experiment: run the experiments behind one table or figure of the E-ATT paper.

    fairseq-eatt-experiment RECIPE [--scale paper|small] [--tasks ...] [--seeds 1,2,3] [--jobs 2] [--dry-run]

Recipes that train (one JSON result per run under --results):
    table4    vanilla vs E-ATT on each task, several seeds (paper: 5 seeds on En-Vi, En-De, Zh-En)
    table5    ablations: discrete selection only, L1 distance only (paper: En-Vi, dev BLEU)
    table6    hybrids: {vanilla, Dense, RandInit, E-ATT} as self-attention x as cross-attention
    variants  every registered variant in every position it supports (vanilla elsewhere)
    study     E-ATT's levers (the authors' released code, pre-norm, learned thresholds, ...) each alone and
              combined, with vanilla and the paper's E-ATT (--configs chooses; fairseq_eatt/experiments/recipes.py)
    techniques  the survey's techniques (binary/ternary weights, token pruning, early exit) on vanilla and on
              E-ATT, under the default E-ATT recipe (--configs chooses; fairseq_eatt/experiments/recipes.py)
    study-long  the longer budget (4,000 updates) for vanilla, the paper's E-ATT and --configs (default
              eatt+authors), with dev BLEU every 500 updates; results in results/study/long by default.
              Its configurations include the levers in pre-norm blocks (eatt+prenorm+tau0, +temperature,
              +cross-tau0) and distillation: eatt+prenorm+kd and vanilla+prenorm+kd train on the translations
              of the training set by the vanilla pre-norm run of the same seed (trained first if needed)
    study-convert  E-ATT converted from the vanilla pre-norm run of the same seed (fairseq-eatt-convert), fine-
              tuned 2,000 updates, dev and test BLEU after 0, 250, 500, 1,000, 2,000; results/study/convert
Recipes built on trained runs (they train nothing):
    study-diagnose  fairseq-eatt-diagnose on the study's runs whose checkpoints are in --workdir (demo budget:
              results/study/diagnostics_demo.*, longer budget: diagnostics_long.*); --configs chooses
Recipes built on trained runs (they train the runs they need first):
    figure1   sequence-level distillation from the vanilla seed-1 model into students of halved dimensions
    figure2   cross-attention heat maps of the vanilla and E-ATT seed-1 models on one test sentence
    figure3   ratio of nonzero binarized values per layer of the E-ATT models (all seeds)
    energy    the paper's Tables 1, 2 and 7 (and every variant) from the declared operation counts

E-ATT recipe (``--eatt-recipe``, default: the plugin's default recipe): E-ATT's option defaults and the blocks of
every run of the tables and figures, vanilla included. Runs of another recipe than ``paper`` are named
``<run>@<recipe>`` and go beside the paper's; figures go to results/<recipe>/<scale>. The study recipes build their
configurations on the paper's recipe.

Scales: ``paper`` (default) uses the paper's settings (fairseq_eatt/experiments/settings.py; run it on GPUs);
``small`` runs on 2 CPU cores on the shipped Multi30k. Runs are resumable: a finished run (its JSON exists with
the same settings) is skipped, an interrupted one continues from checkpoint_last.pt. Afterwards,
``fairseq-eatt-aggregate`` turns the JSON files into markdown tables and plots.
"""
import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from ..attention.eatt import DEFAULT_RECIPE, RECIPES as EATT_RECIPES
from ..data.text import atomic_output
from ..experiments import recipes as R
from ..experiments import runner
from ..fairseq_tools import optimization_flags
from ..provenance import provenance
from ..experiments.settings import SCALES, setting

RECIPES = R.TRAINING_RECIPES + ("figure1", "figure2", "figure3", "energy", "study-diagnose")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help=f"the table or figure to run: one of {', '.join(RECIPES)}; training recipes "
                   "may be joined with commas (table4,table5) to share one queue of runs")
    p.add_argument("--scale", choices=SCALES, default="paper",
                   help="paper: the paper's settings (GPU); small: Multi30k on a 2-core CPU")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the recipe's tasks at this scale)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: 1-5 for table4 at paper scale, "
                   "1-3 at small scale, 1 otherwise)")
    p.add_argument("--only", default=None, metavar="REGEX", help="only runs whose name matches (e.g. 'eatt.*seed1')")
    p.add_argument("--workdir", default=os.path.join("work", "experiments"),
                   help="data, checkpoints and decoded outputs")
    p.add_argument("--results", default=None, help="where the JSON results go (default: results/runs; "
                   "results/study/long for study-long, whose runs have another budget)")
    p.add_argument("--curve-every", type=int, default=None, metavar="N",
                   help="study-long: decode the dev set with a checkpoint kept every N updates (default: 500 at "
                        "small scale, 5000 at paper scale)")
    p.add_argument("--eatt-recipe", choices=EATT_RECIPES, default=None,
                   help=f"E-ATT recipe of every run of a table or figure, vanilla included (default: "
                        f"{DEFAULT_RECIPE}); the study recipes use paper")
    p.add_argument("--configs", default=None, metavar="NAMES",
                   help="study recipes: comma-separated configurations (vanilla, eatt, or a study tag such as "
                        "eatt+authors; see --dry-run for all)")
    p.add_argument("--local-dir", default=None,
                   help="raw corpus files to use instead of downloading (fairseq_eatt.data.prepare --local-dir); "
                        "the small scale uses the shipped Multi30k")
    p.add_argument("--skip-checksum", action="store_true",
                   help="do not verify the corpus files' pinned checksums (e.g. a subset in --local-dir)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at the same time, each with cores/jobs threads (CPU); keep 1 on one GPU")
    p.add_argument("--train-args", default="", help="extra fairseq-train arguments for every run (quoted string), "
                   "e.g. '--fp16' or '--update-freq 4' on 2 GPUs; they change the runs' config hash")
    p.add_argument("--max-update", type=int, default=None, help="override the setting's update count")
    p.add_argument("--convert-points", default=None, metavar="N,N,...",
                   help="study-convert: fine-tuning updates at which dev and test BLEU are measured, from 0 (the "
                        "converted model); the last is the budget (default: 0,250,500,1000,2000 at small scale)")
    p.add_argument("--teacher-results", default=None, metavar="DIR",
                   help="distillation and conversion: where the vanilla teacher's result is (default: --results "
                        "for study-long, results/study/long for study-convert; it is trained there first if "
                        "missing)")
    p.add_argument("--long-max-update", type=int, default=None,
                   help="study-diagnose: the update count of the study-long runs (default: 4000 at small scale)")
    p.add_argument("--arch", default=None, help="override the setting's architecture")
    p.add_argument("--max-tokens", type=int, default=None, help="override the setting's tokens per batch")
    p.add_argument("--bpe-merges", type=int, default=None, help="override the setting's BPE merge operations")
    p.add_argument("--warmup-updates", type=int, default=None, help="override the setting's lr warm-up")
    p.add_argument("--plateau-updates", type=int, default=None, help="override the setting's lr plateau end")
    p.add_argument("--student-dims", default=None,
                   help="figure1: student dimensions (default: the teacher's, halved down to 64: 512,256,128,64 at "
                        "paper scale, 256,128,64 at small scale)")
    p.add_argument("--sentence", type=int, default=0, help="figure2: index of the test sentence")
    p.add_argument("--figures", default=None,
                   help="where figure2/figure3 write their files (default: results/<scale> for the paper's E-ATT "
                        "recipe, results/<recipe>/<scale> for another)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    args = p.parse_args(argv)
    study = any(r.startswith("study") for r in args.recipe.split(","))
    if study and args.eatt_recipe not in (None, "paper"):
        p.error(f"--eatt-recipe {args.eatt_recipe}: the study recipes build their configurations on the paper's "
                f"recipe (e.g. eatt+prenorm, eatt+authors); choose them with --configs")
    if args.eatt_recipe is not None and args.recipe == "energy":
        p.error("--eatt-recipe: the energy recipe trains nothing and counts every variant with its default options; "
                "use fairseq-eatt-energy for other options")
    if "--eatt-recipe" in args.train_args:
        p.error("--train-args: give the E-ATT recipe with --eatt-recipe, which names the runs and their results")
    args.eatt_recipe = args.eatt_recipe or ("paper" if study else DEFAULT_RECIPE)
    if args.figures is None:
        args.figures = os.path.join(R.recipe_folder("results", args.eatt_recipe), args.scale)
    args.recipes = args.recipe.split(",")
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or (len(args.recipes) > 1 and any(r not in R.TRAINING_RECIPES for r in args.recipes)):
        p.error(f"recipe {args.recipe!r}: valid recipes are {', '.join(RECIPES)}; only training recipes "
                f"({', '.join(R.TRAINING_RECIPES)}) can be joined with commas")
    args.recipe = args.recipes[0]
    if args.results is None:
        args.results = {"study-long": os.path.join("results", "study", "long"),
                        "study-convert": os.path.join("results", "study", "convert")}.get(
            args.recipe, os.path.join("results", "runs"))
    for own_budget in ("study-long", "study-convert"):
        if own_budget in args.recipes and len(args.recipes) > 1:
            p.error(f"{own_budget} trains at its own budget: run it alone, not joined with other recipes")
    args.teacher_results = args.teacher_results or (args.results if args.recipe == "study-long"
                                                    else os.path.join("results", "study", "long"))
    if args.curve_every is not None and (args.recipe not in ("study-long", "study-diagnose", "study-convert")
                                         or args.curve_every <= 0):
        p.error(f"--curve-every applies to study-long, study-diagnose and study-convert and must be positive, got "
                f"{args.curve_every}")
    # the vanilla teacher of distillation and conversion is a study-long run with its dev curve
    args.teacher_curve_every = args.curve_every or R.STUDY_CURVE_EVERY[args.scale]
    if args.recipe in ("study-long", "study-diagnose"):
        args.curve_every = args.curve_every or R.STUDY_CURVE_EVERY[args.scale]
    else:
        args.curve_every = None
    try:
        args.convert_point_list = [int(n) for n in args.convert_points.split(",")] if args.convert_points \
            else list(R.CONVERT_POINTS[args.scale])
    except ValueError:
        p.error(f"--convert-points must be comma-separated integers, got {args.convert_points!r}")
    if args.convert_points and (args.recipe != "study-convert" or args.convert_point_list[0] != 0
                                or args.convert_point_list != sorted(set(args.convert_point_list))):
        p.error(f"--convert-points applies to study-convert and must rise from 0 (the converted model), got "
                f"{args.convert_points!r}")
    if args.recipe == "study-convert" and args.max_update is None:
        args.max_update = args.convert_point_list[-1]
    if args.recipe == "study-long" and args.max_update is None and args.scale == "small":
        args.max_update = R.STUDY_LONG_UPDATES
    if args.configs is not None and not any(r.startswith("study") or r == "techniques" for r in args.recipes):
        p.error("--configs applies to the study and techniques recipes only")
    try:
        R.study_configs(args.configs, args.recipe)
    except ValueError as err:
        p.error(str(err))
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    for flag in ("max_update", "max_tokens", "bpe_merges", "warmup_updates", "plateau_updates"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",")] if args.seeds else \
            R.default_seeds(args.recipe, args.scale)
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    args.task_list = args.tasks.split(",") if args.tasks else R.default_tasks(args.recipe, args.scale)
    try:
        args.settings = {t: setting(t, args.scale, max_update=args.max_update, arch=args.arch,
                                    max_tokens=args.max_tokens, bpe_merges=args.bpe_merges,
                                    warmup_updates=args.warmup_updates, plateau_updates=args.plateau_updates)
                         for t in args.task_list}
    except ValueError as err:
        p.error(f"--tasks: {err}")
    return args


def log(msg: str):
    print(f"[experiment] {msg}", flush=True)


def prepare(args, task: str) -> runner.PreparedData:
    return runner.prepare_task(args.settings[task], os.path.join(args.workdir, "data"), args.local_dir,
                               verify=not args.skip_checksum)


def training_runs(args, recipe: str, seeds: List[int]) -> List[R.RunSpec]:
    runs = R.runs_for(recipe, args.scale, args.task_list, seeds, args.configs)
    runs = [dataclasses.replace(r, recipe=args.eatt_recipe) for r in runs]
    if args.only:
        try:
            runs = R.select(runs, args.only)
        except ValueError as err:
            raise SystemExit(f"fairseq-eatt-experiment: {err}")
    return runs


def train_extra(args) -> List[str]:
    """The fairseq-train flags every run of this call adds (part of their identity)."""
    every = getattr(args, "curve_every", None)
    if args.recipe == "study-convert":  # checkpoints at every fine-tuning point
        every = math.gcd(*[n for n in args.convert_point_list if n])
    return shlex.split(args.train_args) + runner.curve_flags(every)


def run_threads(args) -> Optional[int]:
    """Threads of each training: the cores shared among --jobs runs (None: fairseq's default, all cores)."""
    return max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None


def teacher_of(args, run: R.RunSpec):
    """(spec, setting, flags, hash) of the vanilla run that distillation translates with and conversion starts
    from: the study-long run of TEACHER_CONFIG with ``run``'s seed."""
    spec = dataclasses.replace(R.study_run(run.task, run.scale, R.TEACHER_CONFIG, run.seed), recipe=run.recipe)
    budget = R.STUDY_LONG_UPDATES if run.scale == "small" else None
    base = setting(run.task, run.scale, max_update=budget, arch=args.arch, max_tokens=args.max_tokens,
                   bpe_merges=args.bpe_merges, warmup_updates=args.warmup_updates,
                   plateau_updates=args.plateau_updates)
    if args.recipe == "study-long":  # the same budget as the runs of this call (--max-update too)
        base = args.settings[run.task]
    elif args.long_max_update:
        base = dataclasses.replace(base, max_update=args.long_max_update)
    extra = shlex.split(args.train_args) + runner.curve_flags(args.teacher_curve_every)
    return spec, base, extra, runner.config_hash(spec, base, extra)


def with_origins(args, runs: List[R.RunSpec]) -> List[R.RunSpec]:
    """Runs of a road (distillation, conversion) name the teacher run they come from: part of their identity."""
    out = []
    for run in runs:
        road = R.ROADS.get(run.tag)
        if road:
            spec, _, _, thash = teacher_of(args, run)
            run = dataclasses.replace(run, origin=f"{road}:{spec.name}.{thash}")
        out.append(run)
    return out


def teacher_checkpoint(args, run: R.RunSpec, data: runner.PreparedData) -> str:
    """The teacher's best checkpoint, trained (with its dev curve) first where its result does not exist yet."""
    spec, base, extra, thash = teacher_of(args, run)
    done = runner.existing_result(args.teacher_results, spec, thash)
    run_dir = runner.run_dir_of(args.workdir, spec, thash)
    best = os.path.join(run_dir, "checkpoint_best.pt")
    if done is None or "curve" not in done:
        log(f"training the teacher {spec.name} first (for {run.name})")
        runner.execute(spec, base, data, args.workdir, args.teacher_results, extra, echo=args.jobs == 1,
                       curve_every=args.teacher_curve_every, threads=run_threads(args))
    elif not os.path.exists(best):
        # its result exists but its checkpoint is not on this machine: train it again beside the result and check
        # that it reproduces the stored scores (CPU training is deterministic for one torch build)
        log(f"the teacher {spec.name} has a result but no checkpoint here: training it again to reproduce it")
        scratch = os.path.join(args.workdir, "reproduced-results")
        # with the stored run's threads: a float reduction split another way changes the model
        again = runner.execute(spec, base, data, args.workdir, scratch, extra, echo=args.jobs == 1,
                               threads=done.get("threads"))
        for split in ("valid", "test"):
            if again[split]["bleu"] != done[split]["bleu"]:
                raise runner.RunFailed(
                    f"{run.name}: its teacher {spec.name}, trained again here, scores {split} BLEU "
                    f"{again[split]['bleu']} where its result in {args.teacher_results} says {done[split]['bleu']} "
                    f"(another machine or torch build?); give --workdir where it was trained, or --teacher-results "
                    f"of a folder to train a teacher of this machine into")
    return best


def road_inputs(args, run: R.RunSpec, data: runner.PreparedData):
    """(data, checkpoint training starts from) of a run: distilled data for "kd", a converted model for
    "convert", the run's own data otherwise."""
    road = R.ROADS.get(run.tag)
    if not road:
        return data, None
    if road == "kd":
        return distilled_inputs(args, run, data), None
    teacher = teacher_checkpoint(args, run, data)
    if road == "convert":
        from ..models.conversion import ConversionError, convert_checkpoint

        converted = os.path.join(os.path.dirname(teacher), f"converted-{run.encoder_self}-{run.decoder_self}-"
                                                          f"{run.decoder_cross}.pt")
        if not os.path.exists(converted):
            try:
                report = convert_checkpoint(teacher, converted, run.attention)
            except ConversionError as err:
                raise runner.RunFailed(f"{run.name}: {err}") from None
            log(f"converted {teacher} -> {converted}: {len(report.started_from)} tensors started from vanilla "
                f"ones, {len(report.fresh)} fresh")
        return data, converted
    raise ValueError(f"{run.name}: unknown road {road!r}")


def distilled_inputs(args, run: R.RunSpec, data: runner.PreparedData) -> runner.PreparedData:
    """The training set translated by the vanilla teacher of ``run``'s seed (binarized with the teacher's
    dictionary); the teacher is trained or reproduced first only where its translations are not kept yet."""
    from ..experiments.distill import DistillConfig, distilled_data

    teacher_id = run.origin.split(":", 1)[1]
    # kept beside the teacher's result: a later call trains students from them without the teacher's checkpoint
    kept = os.path.join(args.teacher_results, f"{run.task}-{run.scale}", "distilled", teacher_id)
    have_kept = os.path.exists(os.path.join(kept, "distillation.json"))
    teacher = "" if have_kept else teacher_checkpoint(args, run, data)
    folder = os.path.join(args.workdir, f"{run.task}-{run.scale}", "distilled", teacher_id)
    config = DistillConfig(data=data.data_bin, teacher=teacher, workdir=folder, source_lang=data.src,
                           target_lang=data.tgt, teacher_beam=args.settings[run.task].beam, teacher_id=teacher_id,
                           kept_dir=kept)
    return runner.PreparedData(distilled_data(config), data.src, data.tgt, data.references)


def train_all(args, runs: List[R.RunSpec]) -> Dict[R.RunSpec, dict]:
    """Train, decode and score ``runs`` (skipping finished ones); returns the results that exist."""
    runs = with_origins(args, runs)
    extra = train_extra(args)
    points = args.convert_point_list if args.recipe == "study-convert" else None
    pending, results = [], {}
    for run in runs:
        chash = runner.config_hash(run, args.settings[run.task], extra)
        try:
            done = runner.existing_result(args.results, run, chash)
        except runner.RunFailed as err:
            raise SystemExit(f"fairseq-eatt-experiment: {err}")
        curve_missing = done and getattr(args, "curve_every", None) and "curve" not in done
        state = "done" if done else "to run"
        if curve_missing:
            state, done = "trained, dev curve to decode", None
        elif done and points and "points" not in done:
            state, done = "trained, fine-tuning points to decode", None
        log(f"{run.task}-{run.scale}/{run.name}: {state}" + (f" (valid BLEU {done['valid']['bleu']}, test BLEU "
                                                               f"{done['test']['bleu']})" if done else ""))
        if done:
            results[run] = done
        else:
            pending.append(run)
    if not args.dry_run:
        keep_finished_hypotheses(args, results, extra)
    if args.dry_run or not pending:
        return results
    data = {task: prepare(args, task)
            for task in sorted({r.task for r in pending})}
    threads = run_threads(args)
    failures = []

    inputs = {}
    for run in pending:  # teachers, distilled data and converted models first, one at a time
        try:
            inputs[run] = road_inputs(args, run, data[run.task])
        except runner.RunFailed as err:
            raise SystemExit(f"fairseq-eatt-experiment: {err}")

    def one(run):
        log(f"start {run.task}-{run.scale}/{run.name}")
        run_data, start = inputs[run]
        try:
            result = runner.execute(run, args.settings[run.task], run_data, args.workdir, args.results, extra,
                                    echo=args.jobs == 1, threads=threads,
                                    curve_every=getattr(args, "curve_every", None), finetune_from=start,
                                    points=points)
        except runner.RunBusy as err:
            log(f"skipped {run.name}: {err}")
            return
        except runner.RunFailed as err:
            failures.append(f"{run.name}: {err}")
            log(f"FAILED {run.name}: {err}")
            return
        results[run] = result
        log(f"finished {run.task}-{run.scale}/{run.name}: valid BLEU {result['valid']['bleu']}, test BLEU "
            f"{result['test']['bleu']} (sacreBLEU {result['test']['signature']}) -> "
            f"{runner.result_path(args.results, run)}")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, pending))
    if failures:
        raise SystemExit("fairseq-eatt-experiment: runs failed:\n  " + "\n  ".join(failures))
    return results


def keep_finished_hypotheses(args, results: Dict[R.RunSpec, dict], extra: List[str]):
    """Finished runs whose result keeps no hypotheses yet (made before runs kept them) get them from their
    folder in --workdir where it is still there."""
    from ..experiments.significance import hypotheses_path

    data = {}
    for run in results:
        result_json = runner.result_path(args.results, run)
        if os.path.exists(hypotheses_path(result_json, "test")):
            continue
        run_dir = runner.run_dir_of(args.workdir, run, runner.config_hash(run, args.settings[run.task], extra))
        if not os.path.exists(os.path.join(run_dir, "test.hyp")):
            continue
        data[run.task] = data.get(run.task) or prepare(args, run.task)
        if runner.keep_run_hypotheses(run_dir, data[run.task], result_json):
            runner.add_chrf(result_json)
            log(f"kept the hypotheses of {run.name} beside {result_json}")


def recipe_options(variant: str, recipe: str) -> Dict[str, dict]:
    """The constructor options of ``variant`` in self- and cross-attention under E-ATT recipe ``recipe``."""
    from ..attention import DECODER_CROSS, ENCODER_SELF, get_attention_class

    cls, args = get_attention_class(variant), argparse.Namespace(eatt_recipe=recipe)
    return {"self_options": cls.kwargs_from_args(args, ENCODER_SELF),
            "cross_options": cls.kwargs_from_args(args, DECODER_CROSS)}


def checkpoint_of(args, run: R.RunSpec, result: dict) -> str:
    return os.path.join(runner.run_dir_of(args.workdir, run, result["config_hash"]), "checkpoint_best.pt")


def seed1_run(args, variant: str) -> R.RunSpec:
    task = args.task_list[0]
    return dataclasses.replace(R.uniform(task, args.scale, variant, args.seed_list[0]), recipe=args.eatt_recipe)


def figure1(args):
    """Distill the vanilla seed-1 model into vanilla and E-ATT students of halved dimensions."""
    from ..energy.report import model_counts
    from ..energy.tables import BUILTIN
    from ..experiments.aggregate import figure1_name
    from ..experiments import distill

    teacher_run = seed1_run(args, "vanilla")
    done = train_all(args, [teacher_run])
    if args.dry_run:
        return
    teacher = done[teacher_run]
    s = args.settings[teacher_run.task]
    tm = teacher["model"]
    layers = tm["encoder_layers"]  # students keep the teacher's depth and halve its width, down to 64
    halvings = [tm["embed_dim"] >> i for i in range(8) if (tm["embed_dim"] >> i) >= 64] or [tm["embed_dim"]]
    dims = args.student_dims or ",".join(str(d) for d in halvings)
    data = prepare(args, teacher_run.task)
    base = os.path.join(args.workdir, f"{teacher_run.task}-{args.scale}", "figure1" + R.recipe_label(args.eatt_recipe))
    flags = optimization_flags(lr=s.lr, warmup_updates=s.warmup_updates, plateau_updates=s.plateau_updates,
                               max_tokens=s.max_tokens, max_update=s.max_update, seed=teacher_run.seed,
                               update_freq=s.update_freq)
    flags += ["--dropout", str(s.dropout), "--eatt-recipe", args.eatt_recipe,
              "--share-all-embeddings" if s.embeddings == "all" else "--share-decoder-input-output-embed"]
    train_args = shlex.join(flags) + (" " + args.train_args if args.train_args else "")
    teacher_ckpt = checkpoint_of(args, teacher_run, teacher)
    asic = BUILTIN["paper-asic"]
    l_mean = round(teacher["lengths"]["test"]["src"])
    reference = model_counts("vanilla", "vanilla", l_mean, tm["embed_dim"], tm["heads"], "paper", layers=layers)
    for attention in ("vanilla", "eatt"):
        out = os.path.join(args.results, f"{teacher_run.task}-{args.scale}",
                           figure1_name(attention, args.eatt_recipe))
        if os.path.exists(out):
            log(f"{out}: done")
            continue
        workdir = os.path.join(base, attention)
        config = distill.DistillConfig(
            data.data_bin, teacher_ckpt, workdir, data.src, data.tgt, student_dims=dims, student_layers=layers,
            attention=attention, teacher_beam=s.beam, beam=s.beam, lenpen=s.lenpen, train_args=train_args,
            distilled_dir=base)
        summary = distill.run(config)
        for student in summary["students"]:
            heads = distill.student_heads(student["dim"], config.max_heads)
            counts = model_counts(attention, attention, l_mean, student["dim"], heads, "paper", layers=layers,
                                  **recipe_options(attention, args.eatt_recipe))
            student["energy_vs_vanilla_teacher_size"] = round(asic.energy(counts) / asic.energy(reference), 4)
        summary["teacher_test"]["dim"] = tm["embed_dim"]
        summary.update(task=teacher_run.task, scale=args.scale, teacher_run=teacher_run.name, layers=layers,
                       energy_note=f"ASIC (paper's Table 1), paper convention, l = {l_mean} (mean test source "
                                   f"length), relative to the vanilla model of the teacher's size",
                       bleu_note="fairseq-generate's sacreBLEU on test (BPE removed, tokenized text)",
                       train_args=train_args, **{**provenance(), "date": teacher["date"]})
        with atomic_output(out) as handle:
            json.dump(summary, handle, indent=2)
        log(f"wrote {out}")


def figure2(args):
    from ..data.corpora import CORPORA
    from ..data.prepare import bpe_codes_path
    from ..analysis.heatmap import draw

    runs = [seed1_run(args, v) for v in ("vanilla", "eatt")]
    done = train_all(args, runs)
    if args.dry_run:
        return
    task = runs[0].task
    corpus = CORPORA[task]
    s = args.settings[task]
    data = prepare(args, task)
    prep = os.path.join(args.workdir, "data", task)
    tok_or_raw = "tok" if corpus.tokenized else "raw"
    suffix = "" if corpus.tokenized else ".joined"
    src = open(os.path.join(prep, tok_or_raw, f"test.{corpus.src}{suffix}"), encoding="utf-8").read().splitlines()
    tgt = open(os.path.join(prep, tok_or_raw, f"test.{corpus.tgt}{suffix}"), encoding="utf-8").read().splitlines()
    if not 0 <= args.sentence < len(src):
        raise SystemExit(f"--sentence {args.sentence}: the test set has {len(src)} sentences (0..{len(src) - 1})")
    codes = bpe_codes_path(os.path.join(prep, f"bpe{s.bpe_merges}"), (corpus.src, corpus.tgt))
    if not corpus.joint_bpe:
        raise SystemExit(f"figure2: {task} has separate BPE models per language; the heat map command takes one")
    for run in runs:
        out = os.path.join(args.figures, f"figure2_{task}-{args.scale}_{run.encoder_self}.png")
        draw(data.data_bin, checkpoint_of(args, run, done[run]), src[args.sentence], tgt[args.sentence], out,
             layer="all", tokenize="none" if corpus.tokenized else "moses", bpe_codes=codes)
        log(f"wrote {out}")


def figure3(args):
    from ..analysis.binarization import write_report

    runs = [dataclasses.replace(R.uniform(args.task_list[0], args.scale, "eatt", seed), recipe=args.eatt_recipe)
            for seed in args.seed_list]
    done = train_all(args, runs)
    if args.dry_run:
        return
    data = prepare(args, runs[0].task)
    for run in runs:
        out = os.path.join(args.figures, f"figure3_{run.task}-{args.scale}_seed{run.seed}")
        write_report(data.data_bin, checkpoint_of(args, run, done[run]), out, "valid")
        log(f"wrote {out}.md, .json, .png")


def study_diagnose(args):
    """fairseq-eatt-diagnose over the study's runs, one report per budget, from the checkpoints on this machine."""
    from ..analysis.diagnostics import write_report

    task = args.task_list[0]
    data = None
    configs = R.study_configs(args.configs, "study-diagnose")
    study_dir = os.path.join(os.path.dirname(os.path.normpath(args.results)) or ".", "study")
    long_update = args.long_max_update or (R.STUDY_LONG_UPDATES if args.scale == "small" else None)
    demo_setting = args.settings[task]
    long_setting = dataclasses.replace(demo_setting, max_update=long_update) if long_update else demo_setting
    for budget, extra, setting_ in (("demo", [], demo_setting),
                                    ("long", runner.curve_flags(args.curve_every), long_setting)):
        found, missing = [], []
        for config in configs:
            run = R.study_run(task, args.scale, config, args.seed_list[0])
            chash = runner.config_hash(run, setting_, extra)
            best = os.path.join(runner.run_dir_of(args.workdir, run, chash), "checkpoint_best.pt")
            (found if os.path.exists(best) else missing).append((config, best))
        for config, best in missing:
            log(f"{budget} budget, {config}: no checkpoint on this machine ({best}); train it to diagnose it")
        if not found or args.dry_run:
            continue
        data = data or prepare(args, task)
        out = os.path.join(study_dir, f"diagnostics_{budget}")
        flags = [data.data_bin, "--subset", "valid", "--out", out] + [
            flag for config, best in found for flag in ("--path", f"{config}={best}")]
        write_report(data.data_bin, found, out, "valid", command="fairseq-eatt-diagnose " + shlex.join(flags))
        log(f"wrote {out}.md, .json, .png")


def energy(args):
    """Tables 1, 2 and 7 (paper setting l = 22, d = 512) for both conventions: what ``fairseq-eatt-energy
    --convention both --table horowitz-45nm-fp32 --table horowitz-45nm-int8 --out results/energy`` writes."""
    from .. import reports
    from ..energy import files
    from ..attention.counts import CONVENTIONS
    from ..energy.tables import BUILTIN

    extra = ("horowitz-45nm-fp32", "horowitz-45nm-int8")
    out = os.path.join(os.path.dirname(os.path.normpath(args.results)) or ".", "energy")
    command = shlex.join(["fairseq-eatt-energy", "--convention", "both"]
                         + [w for name in extra for w in ("--table", name)] + ["--out", out])
    reports.write(out, files.tables_record(command, CONVENTIONS, [BUILTIN[name] for name in extra]))
    log(f"wrote {out}.md and {out}.json")


def main(argv=None):
    args = parse_args(argv)
    if args.recipe in R.TRAINING_RECIPES:
        runs: List[R.RunSpec] = []
        for recipe in args.recipes:
            seeds = args.seed_list if args.seeds else R.default_seeds(recipe, args.scale)
            runs += [r for r in training_runs(args, recipe, seeds) if r not in runs]
        train_all(args, runs)
    else:
        {"figure1": figure1, "figure2": figure2, "figure3": figure3, "energy": energy,
         "study-diagnose": study_diagnose}[args.recipe](args)


if __name__ == "__main__":
    sys.exit(main())

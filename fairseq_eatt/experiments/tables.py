"""The paper's tables and figures as markdown reports, each with its status (complete / partial with the missing
runs / not run) and provenance (command, E-ATT recipe, machine, dates, commits)."""
import dataclasses
import glob
import json
import os
import statistics
from typing import Dict, List, Optional, Tuple

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from ..attention.eatt import RECIPE_NOTES
from . import recipes as R
from ..plots import finish, plot_points, pyplot
from .results import SCALE_NOTES, Collection, attention_energy, describe_setting, mean_std
from .significance import LEGEND, UNTESTED, verdict

PAPER_TABLE4 = {"iwslt15-en-vi": (30.26, 29.48), "wmt14-en-de": (27.60, 27.45), "wmt17-zh-en": (24.28, 24.23)}
PAPER_TABLE5 = {"vanilla": 28.12, "eatt_select": 27.51, "eatt_l1": 28.05, "eatt": 27.45}
PAPER_TABLE6 = {  # (self, cross) -> En-Vi dev BLEU
    ("vanilla", "vanilla"): 28.12, ("vanilla", "synth_dense"): 19.92, ("vanilla", "synth_random"): 19.31,
    ("vanilla", "eatt"): 27.72, ("synth_dense", "vanilla"): 27.48, ("synth_dense", "synth_dense"): 19.43,
    ("synth_dense", "synth_random"): 19.21, ("synth_dense", "eatt"): 27.60, ("synth_random", "vanilla"): 27.36,
    ("synth_random", "synth_dense"): 18.98, ("synth_random", "synth_random"): 18.83, ("synth_random", "eatt"): 27.48,
    ("eatt", "vanilla"): 28.08, ("eatt", "synth_dense"): 19.85, ("eatt", "synth_random"): 19.67,
    ("eatt", "eatt"): 27.45,
}


def status_and_provenance(col: Collection, needed: List[R.RunSpec], recipe: str,
                          scale: str) -> Tuple[str, List[str], List[Dict]]:
    needed = [dataclasses.replace(s, recipe=col.recipe) for s in needed]
    found = [col.get(s) for s in needed]
    have = [r for r in found if r is not None]
    missing = [s.name for s, r in zip(needed, found) if r is None]
    if not needed:
        status = "no runs defined"
    elif not missing:
        status = f"complete ({len(have)} of {len(needed)} runs)"
    elif have:
        status = f"partial ({len(have)} of {len(needed)} runs; missing: {', '.join(missing)})"
    else:
        status = f"not run (0 of {len(needed)} runs)"
    lines = [f"Status: {status}.", ""]
    if have:
        lines += [f"Scale: {describe_setting(have[0]['setting'])}", ""]
        machines = sorted({f"{r['machine']['cpu']}, {r['machine']['cores']} cores, GPU: {r['machine']['gpu'] or 'none'}"
                           f", torch {r['machine']['torch']}, fairseq {r['machine']['fairseq']}" for r in have})
        dates = sorted({r["date"] for r in have})
        commits = sorted({r.get("git_commit") or "?" for r in have})
        threads = sorted({str(r.get("threads")) for r in have})
        signature = have[0]["test"]["signature"]
        scoring = ("tokenized output vs tokenized references" if "tok:none" in signature
                   else "detokenized output vs raw references")
        lines += [f"E-ATT recipe: `--eatt-recipe {col.recipe}` ({RECIPE_NOTES[col.recipe]}), for every run of "
                  f"this table, vanilla included.", "",
                  f"Command: `fairseq-eatt-experiment {recipe} --scale {scale} --eatt-recipe {col.recipe}` (or "
                  f"`bash examples/{recipe}.sh {scale} --eatt-recipe {col.recipe}`), then "
                  f"`fairseq-eatt-aggregate --eatt-recipe {col.recipe}`. Each run's exact fairseq-train command is "
                  f"in its JSON under `results/runs/`.",
                  "", f"Machine: {'; '.join(machines)}; threads per run: {'/'.join(threads)}.",
                  "", f"Dates: {', '.join(dates)}. Code: commit {', '.join(commits)}.",
                  "", f"Data: {have[0]['task']} as prepared by `fairseq_eatt.data.prepare` "
                  f"({have[0]['setting']['bpe_merges']:,} BPE merges); dev {have[0]['valid']['sentences']:,} and "
                  f"test {have[0]['test']['sentences']:,} sentences.",
                  "", f"BLEU: sacreBLEU `{signature}` ({scoring}); beam {have[0]['setting']['beam']}, "
                  f"length penalty {have[0]['setting']['lenpen']}; the "
                  "checkpoint with the best dev loss.", ""]
    return status, lines, have


def start(col: Collection, recipe: str, scale: str, title: str, seeds: Optional[List[int]] = None):
    """(status, the document's opening lines, tasks) of a table made from training recipe ``recipe``."""
    tasks = R.default_tasks(recipe, scale)
    needed = R.runs_for(recipe, scale, tasks, seeds or R.default_seeds(recipe, scale))
    status, lines, _ = status_and_provenance(col, needed, recipe, scale)
    return status, [f"# {title} ({scale} scale)", ""] + lines, tasks


def table4(col: Collection, scale: str) -> Tuple[str, str]:
    status, out, tasks = start(col, "table4", scale, "Table 4: vanilla attention vs E-ATT")
    out += ["| task | attention | test BLEU | dev BLEU | test BLEU per seed | attention energy, ASIC % | FPGA % | "
            "paper (test BLEU) |", "|---|---|---|---|---|---|---|---|"]
    deltas = []
    for task in tasks:
        base, eatt = (col.group(task, scale, v, v, v) for v in ("vanilla", "eatt"))
        test, dev = verdict(eatt, base, "test"), verdict(eatt, base, "valid")
        if test and dev:
            deltas.append(f"| {task} | {','.join(map(str, test.seeds.seeds))} | {test.cell} | {dev.cell} |")
        for i, (variant, label) in enumerate((("vanilla", "Vanilla"), ("eatt", "E-ATT"))):
            runs = col.group(task, scale, variant, variant, variant)
            tests = [r["test"]["bleu"] for r in runs]
            energy = (f"{attention_energy(runs[0]):.2f}", f"{attention_energy(runs[0], 'paper-fpga'):.2f}") \
                if runs else ("-", "-")
            paper = PAPER_TABLE4.get(task)
            per_seed = ", ".join(f"s{r['seed']}: {r['test']['bleu']:.2f}" for r in runs) or "-"
            out.append(f"| {task} | {label} | {mean_std(tests)} | {mean_std([r['valid']['bleu'] for r in runs])} | "
                       f"{per_seed} | "
                       f"{energy[0]} | {energy[1]} | {paper[i] if paper else 'n/a (not in the paper)'} |")
    out += ["", "Mean ± sample standard deviation over seeds. Attention energy: all attention layers of the model, "
            "declared operation counts (paper convention) at the model's dimensions and the test set's mean "
            "sentence lengths, as % of the same model with vanilla attention (the paper's 34.10 / 33.83 is for "
            "l = 22, d = 512)."]
    if deltas:
        out += ["", "E-ATT minus vanilla, paired by seed. " + LEGEND, "",
                "| task | seeds | Δ test BLEU [95% CI] | Δ dev BLEU [95% CI] |", "|---|---|---|---|", *deltas]
    return status, "\n".join(out) + "\n"


def table5(col: Collection, scale: str) -> Tuple[str, str]:
    status, out, tasks = start(col, "table5", scale, "Table 5: ablations")
    out += ["| task | model | dev BLEU | test BLEU | test BLEU vs vanilla | params | paper (En-Vi dev BLEU) |",
            "|---|---|---|---|---|---|---|"]
    for task in tasks:
        base = col.group(task, scale, "vanilla", "vanilla", "vanilla")
        for variant, label in R.TABLE5_ROWS:
            runs = col.group(task, scale, variant, variant, variant)
            params = f"{runs[0]['model']['params']:,}" if runs else "-"
            judged = verdict(runs, base) if variant != "vanilla" else None
            out.append(f"| {task} | {label} (`{variant}`) | {mean_std([r['valid']['bleu'] for r in runs])} | "
                       f"{mean_std([r['test']['bleu'] for r in runs])} | {judged.cell if judged else '-'} | {params} "
                       f"| {PAPER_TABLE5[variant]} |")
    out += ["", "Where more than one seed exists (vanilla and E-ATT from Table 4), the mean over seeds is shown; "
            "the difference to vanilla pairs the seeds both ran. " + LEGEND]
    return status, "\n".join(out) + "\n"


def table6(col: Collection, scale: str) -> Tuple[str, str]:
    status, out, tasks = start(col, "table6", scale, "Table 6: hybrids of self-attention (rows) and "
                               "cross-attention (columns)")
    seed = R.default_seeds("table6", scale)[0]
    def grid(title: str, task: str, cell) -> List[str]:
        lines = [title, "", "| self \\ cross | " + " | ".join(lbl for _, lbl in R.TABLE6_AXIS) + " |",
                 "|---|" + "---|" * len(R.TABLE6_AXIS)]
        for s, s_label in R.TABLE6_AXIS:
            cells = [cell(s, c, col.get(R.RunSpec(task, scale, s, s, c, seed))) for c, _ in R.TABLE6_AXIS]
            lines.append(f"| {s_label} | " + " | ".join(cells) + " |")
        return lines + [""]

    for task in tasks:
        for split, label in (("valid", "dev BLEU"), ("test", "test BLEU")):
            out += grid(f"{task}, {label} (seed {seed}):", task,
                        lambda s, c, run: f"{run[split]['bleu']:.2f}" if run else "-")
        base = col.get(R.RunSpec(task, scale, "vanilla", "vanilla", "vanilla", seed))

        def delta(s, c, run):
            judged = verdict([run], [base]) if run and base and (s, c) != ("vanilla", "vanilla") else None
            return judged.cell if judged else "-"

        out += grid(f"{task}, test BLEU minus the all-vanilla cell (seed {seed}). {LEGEND}", task, delta)
    out += ["The paper's Table 6 (En-Vi dev BLEU), same layout:", "",
            "| self \\ cross | " + " | ".join(lbl for _, lbl in R.TABLE6_AXIS) + " |",
            "|---|" + "---|" * len(R.TABLE6_AXIS)]
    for s, s_label in R.TABLE6_AXIS:
        out.append(f"| {s_label} | " + " | ".join(f"{PAPER_TABLE6[(s, c)]:.2f}" for c, _ in R.TABLE6_AXIS) + " |")
    return status, "\n".join(out) + "\n"


def variants(col: Collection, scale: str, figure_dir: Optional[str]) -> Tuple[str, str]:
    status, out, tasks = start(col, "variants", scale, "All registered attention variants", [1])
    out += ["Each variant sits in every position it supports, vanilla attention in the others.", "",
            "| variant | enc self / dec self / cross | params | dev BLEU | test BLEU | test BLEU vs vanilla | "
            "attention energy, ASIC % | FPGA % |", "|---|---|---|---|---|---|---|---|"]
    points = []
    for task in tasks:
        base = col.get(R.uniform(task, scale, "vanilla", 1))
        for variant in available_attentions():
            p = R.everywhere_allowed(variant)
            run = col.get(R.RunSpec(task, scale, p[ENCODER_SELF], p[DECODER_SELF], p[DECODER_CROSS], 1))
            where = " / ".join(p[pos] for pos in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS))
            if run is None:
                out.append(f"| `{variant}` | {where} | - | - | - | - | - | - |")
                continue
            judged = verdict([run], [base]) if base and variant != "vanilla" else None
            delta = judged.cell if judged else "-"
            asic, fpga = attention_energy(run), attention_energy(run, "paper-fpga")
            points.append((variant, asic, run["test"]["bleu"]))
            out.append(f"| `{variant}` | {where} | {run['model']['params']:,} | {run['valid']['bleu']:.2f} | "
                       f"{run['test']['bleu']:.2f} | {delta} | {asic:.2f} | {fpga:.2f} |")
    out += ["", "Seed 1 for every variant. " + LEGEND + " Attention energy as in Table 4 (paper convention; see "
            "`energy.md` for the "
            "complete convention, which also charges selections and comparisons).", "",
            "Rows with the survey's techniques (ternary and binary weights, encoder token pruning, early exit) on "
            "vanilla and E-ATT, with parameters, stored size and decoding energy: `results/techniques.md` "
            "(`fairseq-eatt-experiment techniques`, then `fairseq-eatt-techniques`)."]
    if points and figure_dir:
        name = plot_points(points, os.path.join(figure_dir, "variants.png"),
                           "attention energy, ASIC (% of vanilla)", "test BLEU", f"All variants ({scale} scale)")
        out += ["", f"![variants]({name})"]
    return status, "\n".join(out) + "\n"


def not_run(out: List[str], recipe: str) -> Tuple[str, str]:
    return "not run", "\n".join(out + [f"Status: not run (`fairseq-eatt-experiment {recipe}`)."]) + "\n"


def distillation_note(record: Optional[dict]) -> str:
    if not record:
        return "Distilled data: every teacher translation kept (made before degenerate ones were replaced)."
    return (f"Distilled data: teacher beam {record['teacher_beam']}; {record['reference_fallbacks']:,} of "
            f"{record['sentences']:,} teacher translations were degenerate (over {record['max_len_a']} * n + "
            f"{record['max_len_b']} tokens for n source tokens) and keep their reference translation.")


def figure1_name(attention: str, recipe: str) -> str:
    """The file name of Figure 1's summary for students with ``attention``, distilled under ``recipe``."""
    return f"figure1.{attention}{R.recipe_label(recipe)}.json"


def figure1(results: str, scale: str, figure_dir: Optional[str], recipe: str = "paper") -> Tuple[str, str]:
    files = sorted(p for p in glob.glob(os.path.join(results, f"*-{scale}", "figure1.*.json"))
                   if os.path.basename(p) in {figure1_name(a, recipe) for a in ("vanilla", "eatt")})
    out = [f"# Figure 1 ({scale} scale): distillation into students of halved dimensions", ""]
    if not files:
        if figure_dir and os.path.exists(os.path.join(figure_dir, "figure1.png")):
            os.remove(os.path.join(figure_dir, "figure1.png"))  # a plot of withdrawn runs must not stay behind
        return not_run(out, "figure1")
    summaries = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            summaries.append(json.load(handle))
    attentions = [s["attention"] for s in summaries]
    status = "complete" if {"vanilla", "eatt"} <= set(attentions) else f"partial (students: {', '.join(attentions)})"
    s0 = summaries[0]
    out += [f"Status: {status}.", "", f"Scale: {SCALE_NOTES.get(scale, scale)}", "",
            f"E-ATT recipe: `--eatt-recipe {recipe}` ({RECIPE_NOTES[recipe]}), teacher and students.", "",
            f"Teacher: the vanilla seed-1 run of Table 4 ({s0['teacher_run']}). Students: {s0['layers']}+"
            f"{s0['layers']} layers, ffn = 4d, trained on the teacher's beam-search translations of the training "
            f"set with `{s0['train_args']}`.", "", distillation_note(s0.get("distillation")), "",
            f"Energy: {s0['energy_note']}.", "", f"BLEU: {s0['bleu_note']}; length ratio = hypothesis / reference "
            f"length on test (far above 1: repeating outputs).",
            "", f"Date {s0['date']}; machine: {s0['machine']['cpu']}, {s0['machine']['cores']} cores; commit "
            f"{s0.get('git_commit')}.", "",
            "Test BLEU vs teacher: the student's minus the teacher's. " + LEGEND, "",
            "| students | d | params | test BLEU | vs teacher | length ratio "
            "| energy (vanilla teacher-size model = 1) |",
            "|---|---|---|---|---|---|---|"]
    series = []
    teacher = s0.get("teacher_test")
    if teacher:  # scored like the students; its energy is the reference (1) by definition
        ratio = teacher.get("length_ratio")
        out.append(f"| teacher (vanilla) | {teacher.get('dim', '-')} | {teacher['params']:,} | {teacher['bleu']} | - | "
                   f"{'-' if ratio is None else f'{ratio:.2f}'} | 1.0000 |")
    for s in summaries:
        xs, ys = [], []
        for st in s["students"]:
            ratio = st.get("length_ratio")
            # one seed, outputs not kept (made before runs kept their hypotheses): no test is possible
            vs = (f"{st['bleu'] - teacher['bleu']:+.2f}{UNTESTED}"
                  if teacher and teacher.get("bleu") is not None and st["bleu"] is not None else "-")
            out.append(f"| {s['attention']} | {st['dim']} | {st['params']:,} | {st['bleu']} | {vs} | "
                       f"{'-' if ratio is None else f'{ratio:.2f}'} | {st['energy_vs_vanilla_teacher_size']:.4f} |")
            if st["bleu"] is not None:
                xs.append(st["energy_vs_vanilla_teacher_size"])
                ys.append(st["bleu"])
        series.append((s["attention"], xs, ys))
    if figure_dir:
        fig, ax = pyplot().subplots(figsize=(5.5, 3.8))
        for label, xs, ys in series:
            ax.plot(xs, ys, marker="o", label=label)
        if teacher and teacher["bleu"] is not None:
            ax.plot([1.0], [teacher["bleu"]], marker="*", markersize=12, linestyle="none", color="black",
                    label="teacher (vanilla)")
        ax.set_xscale("log")
        finish(fig, ax, "energy per sentence (vanilla teacher-size model = 1, ASIC)", "test BLEU",
               f"Distillation with halved dimensions ({scale} scale)", os.path.join(figure_dir, "figure1.png"))
        out += ["", "![figure 1](figure1.png)"]
    return status, "\n".join(out) + "\n"


def figure_header(status: str, recipe: str, scale: str, eatt_recipe: str, how: str) -> List[str]:
    """A figure report's status, scale and command lines; ``how`` continues the command's parenthesis."""
    return [f"Status: {status}.", "", f"Scale: {SCALE_NOTES.get(scale, scale)}", "",
            f"Command: `fairseq-eatt-experiment {recipe} --scale {scale} --eatt-recipe {eatt_recipe}` ({how}", ""]


def figure3(figure_dir: str, scale: str, recipe: str = "paper") -> Tuple[str, str]:
    files = sorted(glob.glob(os.path.join(figure_dir, "figure3_*_seed*.json")))
    out = [f"# Figure 3 ({scale} scale): ratio of nonzero binarized values per layer (E-ATT models, dev set)", ""]
    if not files:
        return not_run(out, "figure3")
    values: Dict[Tuple[str, int], List[float]] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for row in json.load(handle)["ratios"]:
                values.setdefault((row["position"], row["layer"]), []).append(row["ratio"])
    positions = sorted({p for p, _ in values}, key=["encoder_self", "decoder_self", "cross_query",
                                                    "cross_key"].index)
    layers = sorted({layer for _, layer in values})
    expected = len(R.default_seeds("figure3", scale))
    status = (f"complete ({len(files)} seeds)" if len(files) >= expected
              else f"partial ({len(files)} of {expected} seeds)")
    out += figure_header(f"{status}: {', '.join(os.path.basename(f) for f in files)}", "figure3", scale, recipe,
                         "fairseq-eatt-binarization on each E-ATT seed's best checkpoint, dev set, padding "
                         "excluded). Mean ± std over seeds.")
    out += ["| layer | " + " | ".join(positions) + " |", "|---|" + "---|" * len(positions)]
    for layer in layers:
        cells = []
        for p in positions:
            v = values.get((p, layer), [])
            cells.append("-" if not v else f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}"
                                                                           if len(v) > 1 else ""))
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    fig, ax = pyplot().subplots(figsize=(5.5, 3.8))
    for p in positions:
        xs = [layer for layer in layers if (p, layer) in values]
        means = [statistics.mean(values[(p, x)]) for x in xs]
        errs = [statistics.stdev(values[(p, x)]) if len(values[(p, x)]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=p.replace("_", " "))
    ax.set_xticks(layers)
    finish(fig, ax, "layer", "ratio of nonzero binarized values",
           f"E-ATT binarization ratios ({scale} scale, {len(files)} seed(s))",
           os.path.join(figure_dir, "figure3.png"))
    out += ["", "![figure 3](figure3.png)"]
    return status, "\n".join(out) + "\n"


def figure2(figure_dir: str, scale: str, recipe: str = "paper") -> Tuple[str, str]:
    files = sorted(glob.glob(os.path.join(figure_dir, "figure2_*.png")))
    out = [f"# Figure 2 ({scale} scale): cross-attention heat maps", ""]
    if not files:
        return not_run(out, "figure2")
    out += figure_header(f"complete ({len(files)} heat maps)", "figure2", scale, recipe,
                         "fairseq-eatt-heatmap on the seed-1 checkpoints, first test sentence, teacher-forced on its "
                         "reference, weights averaged over heads, one panel per decoder layer).")
    out += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in files]
    return "complete", "\n".join(out) + "\n"

"""Turn the runs' JSON results into the paper's tables (markdown) and figures (PNG), with their status.

Every table says which runs it needs, which exist, and where they came from (command, machine, dates, commits),
so a partially finished recipe is reported as partial, never as complete.
"""
import dataclasses
import glob
import json
import logging
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from ..attention import (DECODER_CROSS, DECODER_SELF, ENCODER_SELF, POSITION_FLAGS, available_attentions,
                         get_attention_class)
from ..attention.eatt import RECIPE_NOTES
from ..energy.tables import BUILTIN
from . import recipes as R
from .settings import SETTINGS

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
SCALE_NOTES = {
    "small": "**reduced scale**: Multi30k En-De (29k training pairs), `transformer_eatt_small` (d 256, 3+3 layers), "
             "650 updates of 2,048 tokens on a 2-core CPU. It shows trends at a small budget; its numbers are not "
             "comparable to the paper's.",
    "paper": "the paper's scale (Transformer-base, the paper's corpora, update counts and decoding settings).",
}


def describe_setting(setting: Dict) -> str:
    """The scale a run was made at; a setting that differs from the preset says so."""
    preset = SETTINGS.get((setting["task"], setting["scale"]))
    custom = preset is not None and preset.as_dict() != {k: (tuple(v) if isinstance(v, list) else v)
                                                          for k, v in setting.items()}
    text = (f"{setting['task']}, `{setting['arch']}`, {setting['max_update']:,} updates of {setting['max_tokens']:,} "
            f"tokens x {setting['update_freq']} (update-freq), dropout {setting['dropout']}, peak lr {setting['lr']}, "
            f"warm-up {setting['warmup_updates']:,}. ")
    if custom:
        return text + f"**Custom settings** (they differ from the {setting['scale']}-scale preset)."
    return text + SCALE_NOTES.get(setting["scale"], "")


class ResultError(ValueError):
    pass


def load_runs(results: str) -> List[Dict]:
    """Every run JSON under ``results`` (``<task>-<scale>/<run>.json``); malformed files are named in the error."""
    runs = []
    for path in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        if os.path.basename(path).startswith("figure"):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            for key in ("task", "scale", "seed", "attention", "valid", "test", "model", "config_hash"):
                if key not in data:
                    raise ResultError(f"missing key {key!r}")
            data["_path"] = path
        except (OSError, json.JSONDecodeError, ResultError) as err:
            raise ResultError(f"{path}: not a run result ({err})") from None
        runs.append(data)
    return runs


def key_of(run: Dict) -> Tuple:
    a = run["attention"]
    return (run["task"], run["scale"], a["encoder_self"], a["decoder_self"], a["decoder_cross"], run["seed"],
            run.get("tag", ""), run.get("eatt_recipe", "paper"))  # runs made before recipes used the paper's


def spec_key(spec: R.RunSpec) -> Tuple:
    return (spec.task, spec.scale, spec.encoder_self, spec.decoder_self, spec.decoder_cross, spec.seed, spec.tag,
            spec.recipe)


def mean_std(values: Sequence[float], count: bool = True) -> str:
    """``mean ± std (n)`` with the sample standard deviation; a single value is shown alone. ``count=False``
    leaves out ``(n)`` (tables that list the seeds)."""
    if not values:
        return "-"
    n = f" (n={len(values)})" if count else ""
    if len(values) == 1:
        return f"{values[0]:.2f}{n}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}{n}"


def attention_energy(run: Dict, table_name: str = "paper-asic", part: str = "attention") -> float:
    """Energy of all attention layers (``part``: attention, or alignment = the scores alone) of the run's model as
    % of the same model with vanilla attention: the declared operation counts (paper convention) at the model's
    dimensions and options and the test set's mean lengths."""
    table = BUILTIN[table_name]
    m, lengths = run["model"], run["lengths"]["test"]
    src, tgt = max(1, round(lengths["src"])), max(1, round(lengths["tgt"]))
    shapes = {"encoder_self": (src, src, m["encoder_layers"]), "decoder_self": (tgt, tgt, m["decoder_layers"]),
              "decoder_cross": (tgt, src, m["decoder_layers"])}
    total = base = 0.0
    options = m.get("attention_options", {})  # recorded since the E-ATT study; older runs used the defaults
    for position, variant in run["attention"].items():
        lq, lk, layers = shapes[position]
        cls = get_attention_class(variant)
        own = options.get(POSITION_FLAGS[position], {})
        ops = cls.op_counts(lq, lk, m["embed_dim"], m["heads"], "paper", None, **own)[part]
        ref = get_attention_class("vanilla").op_counts(lq, lk, m["embed_dim"], m["heads"], "paper", None)[part]
        total += layers * table.energy(ops)
        base += layers * table.energy(ref)
    return 100.0 * total / base


class Collection:
    """The runs of one folder; tables read those of one E-ATT recipe (``--eatt-recipe`` of the runs)."""

    def __init__(self, runs: List[Dict], recipe: str = "paper"):
        self.recipe = recipe
        self.by_key: Dict[Tuple, Dict] = {}
        for run in runs:
            key = key_of(run)
            if key in self.by_key:
                raise ResultError(f"{run['_path']} and {self.by_key[key]['_path']} are the same run")
            self.by_key[key] = run

    def scales(self) -> List[str]:
        return sorted({k[1] for k in self.by_key if k[7] == self.recipe})

    def get(self, spec: R.RunSpec) -> Optional[Dict]:
        return self.by_key.get(spec_key(dataclasses.replace(spec, recipe=self.recipe)))

    def group(self, task: str, scale: str, enc: str, dec: str, cross: str) -> List[Dict]:
        return [r for k, r in sorted(self.by_key.items(), key=lambda kv: kv[0][5])
                if k[:5] == (task, scale, enc, dec, cross) and not k[6]  # no study options
                and k[7] == self.recipe]


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
    for task in tasks:
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
    return status, "\n".join(out) + "\n"


def table5(col: Collection, scale: str) -> Tuple[str, str]:
    status, out, tasks = start(col, "table5", scale, "Table 5: ablations")
    out += ["| task | model | dev BLEU | test BLEU | params | paper (En-Vi dev BLEU) |", "|---|---|---|---|---|---|"]
    for task in tasks:
        for variant, label in R.TABLE5_ROWS:
            runs = col.group(task, scale, variant, variant, variant)
            params = f"{runs[0]['model']['params']:,}" if runs else "-"
            out.append(f"| {task} | {label} (`{variant}`) | {mean_std([r['valid']['bleu'] for r in runs])} | "
                       f"{mean_std([r['test']['bleu'] for r in runs])} | {params} | {PAPER_TABLE5[variant]} |")
    out += ["", "Where more than one seed exists (vanilla and E-ATT from Table 4), the mean over seeds is shown."]
    return status, "\n".join(out) + "\n"


def table6(col: Collection, scale: str) -> Tuple[str, str]:
    status, out, tasks = start(col, "table6", scale, "Table 6: hybrids of self-attention (rows) and "
                               "cross-attention (columns)")
    seed = R.default_seeds("table6", scale)[0]
    for task in tasks:
        for split, label in (("valid", "dev BLEU"), ("test", "test BLEU")):
            out += [f"{task}, {label} (seed {seed}):", "",
                    "| self \\ cross | " + " | ".join(lbl for _, lbl in R.TABLE6_AXIS) + " |",
                    "|---|" + "---|" * len(R.TABLE6_AXIS)]
            for s, s_label in R.TABLE6_AXIS:
                cells = []
                for c, _ in R.TABLE6_AXIS:
                    run = col.get(R.RunSpec(task, scale, s, s, c, seed))
                    cells.append(f"{run[split]['bleu']:.2f}" if run else "-")
                out.append(f"| {s_label} | " + " | ".join(cells) + " |")
            out.append("")
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
            delta = f"{run['test']['bleu'] - base['test']['bleu']:+.2f}" if base else "-"
            asic, fpga = attention_energy(run), attention_energy(run, "paper-fpga")
            points.append((variant, asic, run["test"]["bleu"]))
            out.append(f"| `{variant}` | {where} | {run['model']['params']:,} | {run['valid']['bleu']:.2f} | "
                       f"{run['test']['bleu']:.2f} | {delta} | {asic:.2f} | {fpga:.2f} |")
    out += ["", "Seed 1 for every variant. Attention energy as in Table 4 (paper convention; see `energy.md` for the "
            "complete convention, which also charges selections and comparisons)."]
    if points and figure_dir:
        name = plot_points(points, os.path.join(figure_dir, "variants.png"),
                           "attention energy, ASIC (% of vanilla)", "test BLEU", f"All variants ({scale} scale)")
        out += ["", f"![variants]({name})"]
    return status, "\n".join(out) + "\n"


def plot_points(points, path: str, xlabel: str, ylabel: str, title: str) -> str:
    """A scatter plot with one marker style per point and a legend beside the axes: variants often share
    energy and BLEU, and names written next to the points would overlap."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors, markers = plt.get_cmap("tab20").colors, "osD^vPX*<>"
    for i, (label, x, y) in enumerate(points):
        ax.scatter([x], [y], label=label, color=colors[i % len(colors)], marker=markers[i % len(markers)],
                   s=36, edgecolors="black", linewidths=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save(fig, path)
    return os.path.basename(path)


def finish(fig, ax, xlabel: str, ylabel: str, title: str, path: str):
    """Label a plot with a legend and write it as PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def save(fig, path: str):
    from ..data.text import atomic_output
    import matplotlib.pyplot as plt

    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


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
    return f"figure1.{attention}{'' if recipe == 'paper' else '@' + recipe}.json"


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
            "| students | d | params | test BLEU | length ratio | energy (vanilla teacher-size model = 1) |",
            "|---|---|---|---|---|---|"]
    series = []
    teacher = s0.get("teacher_test")
    if teacher:  # scored like the students; its energy is the reference (1) by definition
        ratio = teacher.get("length_ratio")
        out.append(f"| teacher (vanilla) | {teacher.get('dim', '-')} | {teacher['params']:,} | {teacher['bleu']} | "
                   f"{'-' if ratio is None else f'{ratio:.2f}'} | 1.0000 |")
    for s in summaries:
        xs, ys = [], []
        for st in s["students"]:
            ratio = st.get("length_ratio")
            out.append(f"| {s['attention']} | {st['dim']} | {st['params']:,} | {st['bleu']} | "
                       f"{'-' if ratio is None else f'{ratio:.2f}'} | {st['energy_vs_vanilla_teacher_size']:.4f} |")
            if st["bleu"] is not None:
                xs.append(st["energy_vs_vanilla_teacher_size"])
                ys.append(st["bleu"])
        series.append((s["attention"], xs, ys))
    if figure_dir:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.8))
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
    out += [f"Status: {status}: {', '.join(os.path.basename(f) for f in files)}.", "",
            f"Scale: {SCALE_NOTES.get(scale, scale)}", "",
            f"Command: `fairseq-eatt-experiment figure3 --scale {scale} --eatt-recipe {recipe}` "
            "(fairseq-eatt-binarization on each "
            "E-ATT seed's best checkpoint, dev set, padding excluded). Mean ± std over seeds.", "",
            "| layer | " + " | ".join(positions) + " |", "|---|" + "---|" * len(positions)]
    for layer in layers:
        cells = []
        for p in positions:
            v = values.get((p, layer), [])
            cells.append("-" if not v else f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}"
                                                                           if len(v) > 1 else ""))
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
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
    out += [f"Status: complete ({len(files)} heat maps).", "", f"Scale: {SCALE_NOTES.get(scale, scale)}", "",
            f"Command: `fairseq-eatt-experiment figure2 --scale {scale} --eatt-recipe {recipe}` "
            "(fairseq-eatt-heatmap on the seed-1 "
            "checkpoints, first test sentence, teacher-forced on its reference, weights averaged over heads, one "
            "panel per decoder layer).", ""]
    out += [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in files]
    return "complete", "\n".join(out) + "\n"


def aggregate(results: str, out_root: str, scales: Optional[Sequence[str]] = None,
              recipe: str = "paper") -> Dict[str, Dict[str, str]]:
    """Write ``out_root/<scale>/{table4,table5,table6,variants,figure1,figure2,figure3}.md`` (+ PNGs); returns
    the status of each."""
    from ..data.text import atomic_output

    col = Collection(load_runs(results), recipe)
    chosen = list(scales) if scales else (col.scales() or ["small"])
    report: Dict[str, Dict[str, str]] = {}
    for scale in chosen:
        if not any(s == scale for _, s in SETTINGS):
            raise ResultError(f"unknown scale {scale!r}")
        folder = os.path.join(out_root, scale)
        os.makedirs(folder, exist_ok=True)
        parts = {
            "table4": table4(col, scale), "table5": table5(col, scale), "table6": table6(col, scale),
            "variants": variants(col, scale, folder), "figure1": figure1(results, scale, folder, recipe),
            "figure2": figure2(folder, scale, recipe), "figure3": figure3(folder, scale, recipe),
        }
        report[scale] = {}
        for name, (status, text) in parts.items():
            with atomic_output(os.path.join(folder, name + ".md")) as handle:
                handle.write(text)
            report[scale][name] = status
        update_index(os.path.join(out_root, "README.md"), scale, report[scale])
    return report


INDEX_ROWS = (("table4", "Table 4: vanilla vs E-ATT, several seeds"), ("table5", "Table 5: ablations"),
              ("table6", "Table 6: hybrids of self- and cross-attention"),
              ("figure1", "Figure 1: distillation with halved dimensions"),
              ("figure2", "Figure 2: cross-attention heat maps"),
              ("figure3", "Figure 3: binarization ratios per layer"),
              ("variants", "All registered variants: quality, parameters, energy"))


def update_index(readme: str, scale: str, statuses: Dict[str, str]):
    """Rewrite the status table between ``<!-- status:SCALE:begin -->`` and ``end`` markers, if the file has them."""
    from ..data.text import atomic_output

    begin, end = f"<!-- status:{scale}:begin -->", f"<!-- status:{scale}:end -->"
    if not os.path.exists(readme):
        return
    text = open(readme, encoding="utf-8").read()
    if begin not in text or end not in text:
        return
    rows = [f"| paper item | {scale} scale: status | file |", "|---|---|---|"]
    rows += [f"| {label} | {statuses[name]} | `{scale}/{name}.md` |" for name, label in INDEX_ROWS]
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_output(readme) as handle:
        handle.write(head + begin + "\n" + "\n".join(rows) + "\n" + end + tail)

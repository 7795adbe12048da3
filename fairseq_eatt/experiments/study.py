"""The E-ATT study's report: each lever at the demo budget, and the dev BLEU curves at the longer budget.

Writes ``OUT/levers.md`` (one row per configuration: mean over its seeds) and ``OUT/curve.md`` + ``curve.png``
(dev BLEU every 500 updates of the long runs), each with its status and provenance. Runs are the JSON results of
``fairseq-eatt-experiment study`` (in the usual results folder) and ``study-long`` (their own folder).
"""
import os
import statistics
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import recipes as R
from ..plots import pyplot, save
from ..provenance import machine_label
from .results import ResultError, attention_energy, describe_setting, load_runs, mean_std
from .index import update_block
from .significance import LEGEND, Verdict, seed_difference, verdict

BASELINE_OF_BLOCK = {False: "vanilla", True: "vanilla+prenorm"}  # a pre-norm E-ATT is compared with a pre-norm vanilla


def _uniform(run: Dict) -> bool:
    a = run["attention"]
    return a["encoder_self"] == a["decoder_self"] == a["decoder_cross"]


def study_runs(results: str, task: str, scale: str) -> Dict[str, List[Dict]]:
    """{configuration: its runs (one per seed)} of the study's configurations among the results."""
    wanted = ["vanilla", "eatt", *R.STUDY_CONFIGS, *R.LONG_STUDY_CONFIGS]
    found: Dict[str, List[Dict]] = {}
    if not os.path.isdir(results):
        return found
    for run in load_runs(results):
        if run["task"] != task or run["scale"] != scale or not _uniform(run) \
                or run.get("eatt_recipe", "paper") != "paper":  # the study's configurations build on the paper's
            continue
        name = run.get("tag") or run["attention"]["encoder_self"]
        if name in wanted:
            found.setdefault(name, []).append(run)
    return {name: sorted(found[name], key=lambda r: r["seed"]) for name in wanted if name in found}


def _mean(values: List[float]) -> Optional[float]:
    return statistics.mean(values) if values else None


def _cell(values: List[float]) -> str:
    return mean_std(values, count=False)


def _description(name: str) -> str:
    configs = {**R.STUDY_CONFIGS, **R.LONG_STUDY_CONFIGS}
    if name in configs:
        return configs[name][1]
    return {"vanilla": "vanilla attention, post-norm (the paper's baseline)",
            "eatt": "E-ATT as in the paper's text (tau = 1, post-norm)"}.get(name, name)


def _prenorm(run: Dict) -> bool:
    return bool(run["model"].get("normalize_before",
                                 "--encoder-normalize-before" in run.get("options", [])))


def _cross_key_ratio(run: Dict) -> Optional[float]:
    values = [v for k, v in run.get("binarization_last_valid", {}).items() if k.startswith("cross_key")]
    return _mean(values)


def levers_table(runs: Dict[str, List[Dict]], title: str) -> Tuple[str, str]:
    if not runs:
        return "not run", f"# {title}\n\nNot run yet: `fairseq-eatt-experiment study --scale small`.\n"
    missing = [n for n in ["vanilla", "eatt", *R.STUDY_CONFIGS] if n not in runs]
    status = "complete" if not missing else f"partial ({len(runs)} of {len(runs) + len(missing)} configurations)"
    any_run = next(iter(runs.values()))[0]
    baseline_runs = {prenorm: runs.get(name, []) for prenorm, name in BASELINE_OF_BLOCK.items()}
    lines = [f"# {title}\n", f"Status: {status}." + (f" Not run yet: {', '.join(missing)}." if missing else ""),
             "", "Setting: " + describe_setting(any_run["setting"]), "",
             "Test BLEU on test_2016 (sacreBLEU, detokenized); the checkpoint is chosen by dev loss. Gap: test BLEU "
             "minus vanilla attention's in the same kind of block (post-norm or pre-norm), paired by seed, when that "
             "vanilla run exists. " + LEGEND + " Energy: all attention layers (alignment = the scores alone) as "
             "% of the same "
             "model with vanilla attention, ASIC pJ of the paper's Table 1, paper convention, at the model's "
             "options and the test set's mean lengths. Cross-key ratio: nonzero ratio of cross-attention key "
             "codes at the last validation.", "",
             "| configuration | what it changes | seeds | dev BLEU | test BLEU | gap | dev loss | cross-key ratio "
             "| alignment energy | attention energy | params |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, group in runs.items():
        prenorm = _prenorm(group[0])
        tests = [r["test"]["bleu"] for r in group]
        judged = verdict(group, baseline_runs[prenorm]) if name not in BASELINE_OF_BLOCK.values() else None
        gap = judged.cell if judged else "-"
        losses = [r["valid_losses"][-1]["loss"] for r in group if r.get("valid_losses")]
        ratio = _mean([x for x in (_cross_key_ratio(r) for r in group) if x is not None])
        lines.append(
            f"| {name} | {_description(name)} | {','.join(str(r['seed']) for r in group)} "
            f"| {_cell([r['valid']['bleu'] for r in group])} | {_cell(tests)} | {gap} | {_cell(losses)} "
            f"| {'-' if ratio is None else f'{ratio:.3f}'} "
            f"| {attention_energy(group[0], part='alignment'):.1f}% | {attention_energy(group[0]):.1f}% "
            f"| {group[0]['model']['params'] / 1e6:.2f} M |")
    lines += ["", "Runs (command, machine, date, commit):", ""]
    for name, group in runs.items():
        for r in group:
            lines.append(f"- {r['run']}: `{r['_path']}`; {_made(r)}")
    return status, "\n".join(lines) + "\n"


def _made(run: Dict) -> str:
    """A run's provenance in a report's list of runs: date, processor, commit."""
    return f"{run['date']}, {machine_label(run['machine'])}, commit {run.get('git_commit')}"


def curve_report(runs: Dict[str, List[Dict]], title: str, png: str) -> Tuple[str, str]:
    """Dev BLEU along the longer budget (runs with a curve) and the final scores of every run of each
    configuration (a run without a curve still counts for the final columns)."""
    with_curve = {name: [r for r in group if r.get("curve")] for name, group in runs.items()}
    with_curve = {name: group for name, group in with_curve.items() if group}
    if not with_curve:
        return "not run", (f"# {title}\n\nNot run yet: `fairseq-eatt-experiment study-long --scale small` "
                           f"(its runs train {R.STUDY_LONG_UPDATES:,} updates).\n")
    any_run = next(iter(with_curve.values()))[0]
    points = sorted({p["num_updates"] for g in with_curve.values() for r in g for p in r["curve"]})
    lines = [f"# {title}\n", "Setting: " + describe_setting(any_run["setting"]), "",
             "Dev BLEU (valid = Multi30k val, sacreBLEU, beam search as for the tables) of the checkpoint kept every "
             f"{points[0]:,} updates, mean over the seeds with a curve; the last columns give, over every seed, the "
             "best dev loss and the dev and test BLEU of the checkpoint with the best dev loss.", "",
             "| configuration | seeds (with a curve) | " + " | ".join(f"{n:,}" for n in points)
             + " | best dev loss | dev BLEU | test BLEU |",
             "|---|---|" + "---|" * len(points) + "---|---|---|"]
    for name, group in runs.items():
        curved = with_curve.get(name, [])
        if not curved:
            continue
        cells = []
        for n in points:
            values = [p["valid_bleu"] for r in curved for p in r["curve"] if p["num_updates"] == n]
            cells.append(_cell(values))
        best = [min(v["loss"] for v in r["valid_losses"]) for r in group if r.get("valid_losses")]
        seeds = ",".join(str(r["seed"]) for r in group)
        if len(curved) < len(group):
            seeds += f" ({','.join(str(r['seed']) for r in curved)})"
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {_cell(best)} "
                     f"| {_cell([r['valid']['bleu'] for r in group])} | {_cell([r['test']['bleu'] for r in group])} |")
    _plot_curves(with_curve, png, title)
    lines += ["", f"![dev BLEU curves]({os.path.basename(png)})", "", "Runs:", ""]
    for name in with_curve:
        for r in runs[name]:
            note = r.get("curve_note") or "no dev curve (its checkpoints kept along the way were not decoded)"
            lines.append(f"- {r['run']}: `{r['_path']}`; trained {_made(r)}; {note}")
    status = "measured" if len(with_curve) >= 2 else "partial"
    return status, "\n".join(lines) + "\n"


def _plot_curves(runs: Dict[str, List[Dict]], png: str, title: str):
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    for name, group in runs.items():
        points = sorted({p["num_updates"] for r in group for p in r["curve"]})
        means = [statistics.mean([p["valid_bleu"] for r in group for p in r["curve"] if p["num_updates"] == n])
                 for n in points]
        ax.plot(points, means, marker="o", label=name)
    ax.set_xlabel("updates")
    ax.set_ylabel("dev BLEU")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, png)


def _same_machine(system: List[Dict], baseline: List[Dict]) -> Tuple[List[Dict], List[Dict], List[int]]:
    """The two systems' runs of the seeds trained on the same kind of processor (CPU, or the same GPU), and the
    seeds left out because their two runs were not."""
    base = {r["seed"]: r for r in baseline}
    kept, left = [], []
    for run in system:
        partner = base.get(run["seed"])
        if partner is not None and machine_label(partner["machine"]) != machine_label(run["machine"]):
            left.append(run["seed"])
        else:
            kept.append(run)
    return kept, [r for r in baseline if r["seed"] not in left], left


class Comparison(NamedTuple):
    """A system's runs against its baseline's, paired by seed on one kind of machine, with their verdicts."""

    system: List[Dict]
    baseline: List[Dict]
    left: List[int]  # seeds left out: their two runs were trained on different machines
    dev: Verdict
    test: Verdict

    @property
    def paired(self) -> List[Dict]:
        return [r for r in self.system if r["seed"] in self.test.seeds.seeds]

    @property
    def seeds(self) -> str:
        return ",".join(map(str, self.test.seeds.seeds)) + (f" (left out, other machine: {self.left})"
                                                            if self.left else "")


def compare(system_runs: List[Dict], baseline_runs: List[Dict]) -> Optional[Comparison]:
    """The comparison of two configurations' runs, or None if they share no seed."""
    system, baseline, left = _same_machine(system_runs, baseline_runs)
    dev, test = verdict(system, baseline, "valid"), verdict(system, baseline, "test")
    if dev is None or test is None:
        return None
    return Comparison(system, baseline, left, dev, test)


def comparisons(runs: Dict[str, List[Dict]]) -> List[Tuple[str, str]]:
    """(system, baseline) pairs of the verdict: each configuration against vanilla in its kind of block; a
    distilled student also against vanilla trained on the same distilled data."""
    pairs = []
    for name, group in runs.items():
        if name in BASELINE_OF_BLOCK.values():
            continue
        pairs.append((name, BASELINE_OF_BLOCK[_prenorm(group[0])]))
        if name.endswith("+kd") and name.startswith("eatt") and "vanilla+prenorm+kd" in runs:
            pairs.append((name, "vanilla+prenorm+kd"))
    return [(a, b) for a, b in pairs if b in runs]


def _bootstrap_cells(system: List[Dict], baseline: List[Dict], split: str) -> str:
    """Per shared seed, sacreBLEU's paired bootstrap of BLEU and chrF where both runs kept their hypotheses."""
    from .significance import compare_runs

    base = {r["seed"]: r for r in baseline}
    cells = []
    for run in system:
        if run["seed"] not in base:
            continue
        boot = compare_runs(run, base[run["seed"]], split)
        if boot is None:
            continue
        b, c = boot["BLEU"], boot["chrF"]
        cells.append(f"s{run['seed']}: BLEU {b.difference:+.2f} (p {b.p_value:.3f}){'' if b.significant else ' n.s.'}, "
                     f"chrF {c.difference:+.2f} (p {c.p_value:.3f}){'' if c.significant else ' n.s.'}")
    return "; ".join(cells) or "no hypotheses kept"


def _alignment_energy(runs: List[Dict]) -> str:
    paper = statistics.mean(attention_energy(r, part="alignment") for r in runs)
    executed = statistics.mean(attention_energy(r, part="alignment", convention="complete") for r in runs)
    return f"{paper:.1f}% / {executed:.1f}%"


def verdict_report(runs: Dict[str, List[Dict]], gpu_runs: Dict[str, List[Dict]], title: str) -> Tuple[str, str]:
    """Every configuration at the longer budget against its vanilla baseline, with 95% intervals: across seeds
    (paired by seed, same machine) and within each seed (sacreBLEU's paired bootstrap, BLEU and chrF)."""
    if not runs:
        return "not run", f"# {title}\n\nNot run yet: `fairseq-eatt-experiment study-long --scale small`.\n"
    any_run = next(iter(runs.values()))[0]
    lines = [f"# {title}\n", "Setting: " + describe_setting(any_run["setting"]), "",
             "Dev BLEU (Multi30k val) and test BLEU (test_2016) of the checkpoint with the best dev loss, mean ± "
             "sample std over seeds. Δ: the configuration minus its baseline, paired by seed; only pairs trained on "
             "the same kind of processor are compared; chrF where the runs recorded it. " + LEGEND + " Within a "
             "seed: sacreBLEU's paired bootstrap "
             "of the test hypotheses (BLEU and chrF, p-value; n.s. = p >= 0.05), where both runs kept them.", "",
             "Alignment energy: the scores of all attention layers as % of the same model with vanilla attention "
             "(ASIC pJ of the paper's Table 1, test set mean lengths): in the paper's convention, and as the code "
             "executes it (complete convention, with the run's measured ratios of ones in the binarized inputs; "
             "mean over seeds).", "",
             "| configuration | what it changes | baseline | seeds | dev BLEU | test BLEU | test chrF "
             "| Δ dev BLEU [95% CI] "
             "| Δ test BLEU [95% CI] | within each seed, test (paired bootstrap) | alignment energy, paper / as "
             "executed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    findings, rows = [], 0
    for name, base_name in comparisons(runs):
        c = compare(runs[name], runs[base_name])
        if c is None:
            continue
        paired = c.paired
        lines.append(f"| {name} | {_description(name)} | {base_name} | {c.seeds} "
                     f"| {_cell([r['valid']['bleu'] for r in paired])} | {_cell([r['test']['bleu'] for r in paired])} "
                     f"| {_cell([r['test']['chrf'] for r in paired if 'chrf' in r['test']])} "
                     f"| {c.dev.cell} | {c.test.cell} | {_bootstrap_cells(c.system, c.baseline, 'test')} "
                     f"| {_alignment_energy(paired)} |")
        rows += 1
        if c.test.finding:
            findings.append(f"- {name} vs {base_name}: {c.test.text} test BLEU ({len(c.test.seeds.seeds)} seed(s)); "
                            f"dev {c.dev.cell}.")
    lines += ["", "Baselines:", "", "| baseline | seeds | dev BLEU | test BLEU | machine |", "|---|---|---|---|---|"]
    for name in sorted({b for _, b in comparisons(runs)}):
        group = runs[name]
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in group)} | "
                     f"{_cell([r['valid']['bleu'] for r in group])} | {_cell([r['test']['bleu'] for r in group])} | "
                     f"{'; '.join(sorted({machine_label(r['machine']) for r in group}))} |")
    lines += ["", "Significant differences (test BLEU; the interval excludes 0):", ""]
    lines += findings or ["- none"]
    if gpu_runs:
        lines += ["", "Runs trained on a GPU (another machine and torch build: kept, not compared with the CPU runs):",
                  "", "| configuration | seeds | dev BLEU | test BLEU | machine | file |", "|---|---|---|---|---|---|"]
        for name, group in gpu_runs.items():
            for r in group:
                lines.append(f"| {name} | {r['seed']} | {r['valid']['bleu']:.2f} | {r['test']['bleu']:.2f} | "
                             f"{machine_label(r['machine'])}, torch {r['machine']['torch']} | `{r['_path']}` |")
    lines += ["", "Runs (command in each JSON; machine, date, commit):", ""]
    for group in runs.values():
        for r in group:
            lines.append(f"- {r['run']}: `{r['_path']}`; {_made(r)}")
    status = "measured" if rows else "not run (no configuration has its baseline yet)"
    return status, "\n".join(lines) + "\n"


def verdict_summary(runs: Dict[str, List[Dict]], source: str, converted: Optional[List[Dict]] = None) -> str:
    """The verdict's rows in short, for the READMEs' generated block: each comparison with its intervals, and the
    converted models against their teachers."""
    lines = ["| configuration | baseline | seeds | test BLEU | Δ test BLEU [95% CI] | Δ dev BLEU "
             "[95% CI] | alignment energy vs vanilla, paper / as executed |", "|---|---|---|---|---|---|---|"]
    rows = [(f"{name} (4,000 updates)", base_name, runs[name], runs[base_name])
            for name, base_name in comparisons(runs)]
    if converted and R.TEACHER_CONFIG in runs:
        budget = converted[0]["setting"]["max_update"]
        rows.append((f"eatt+prenorm+convert ({budget:,} fine-tuning updates from the baseline)", R.TEACHER_CONFIG,
                     converted, runs[R.TEACHER_CONFIG]))
    for label, base_name, system_runs, baseline_runs in rows:
        c = compare(system_runs, baseline_runs)
        if c is None:
            continue
        lines.append(f"| {label} | {base_name} | {','.join(map(str, c.test.seeds.seeds))} | "
                     f"{_cell([r['test']['bleu'] for r in c.paired])} | {c.test.cell} | {c.dev.cell} "
                     f"| {_alignment_energy(c.paired)} |")
    machines = sorted({machine_label(r["machine"]) for g in runs.values() for r in g})
    sources = f"`{source}`" + (" and `results/study/convert`" if converted else "")
    return "\n".join(lines) + (f"\n\nRendered by `fairseq-eatt-aggregate --eatt-recipe paper` from {sources} "
                               f"(Multi30k En-De, `transformer_eatt_small`, reduced scale; {', '.join(machines)}); "
                               f"details in `results/study/verdict.md` and `results/study/convert.md`. (n.s.) = not "
                               f"significant, (untested) = one seed without kept hypotheses: neither is a finding.\n")


def convert_runs(results: str, task: str, scale: str) -> List[Dict]:
    if not os.path.isdir(results):
        return []
    return sorted((r for r in load_runs(results) if r["task"] == task and r["scale"] == scale and r.get("origin", "")
                   .startswith("convert:")), key=lambda r: (r["run"], r["seed"]))


def convert_report(runs: List[Dict], teachers: Dict[str, List[Dict]], title: str, png: str) -> Tuple[str, str]:
    """Converted models against their vanilla teacher (same seed, same machine) after their fine-tuning, with
    intervals, and their BLEU along the fine-tuning where the points were decoded."""
    if not runs:
        return "not run", (f"# {title}\n\nNot run yet: `fairseq-eatt-experiment study-convert --scale small` "
                           f"(converts the vanilla pre-norm run of each seed, fine-tunes "
                           f"{R.CONVERT_POINTS['small'][-1]:,} updates).\n")
    system, baseline, _ = _same_machine(runs, teachers.get(R.TEACHER_CONFIG, []))
    budget = runs[0]["setting"]["max_update"]
    teacher_updates = sorted({r["setting"]["max_update"] for r in baseline})
    lines = [f"# {title}\n", "Setting of the fine-tuning: " + describe_setting(runs[0]["setting"]), "",
             f"Each model is built by `fairseq-eatt-convert` from the vanilla pre-norm run of the same seed "
             f"({R.TEACHER_CONFIG}, {', '.join(f'{n:,}' for n in teacher_updates)} updates; embeddings, feed-forward "
             f"layers, norms and V/O copied, E-ATT's selections started from W_Q / W_K), then fine-tuned "
             f"{budget:,} updates with `fairseq-train --finetune-from-model` (the learning-rate schedule restarts). "
             f"Dev BLEU (Multi30k val) and test BLEU (test_2016) of the checkpoint with the best dev loss, mean ± "
             f"sample std over seeds; Δ: minus the teacher, paired by seed. " + LEGEND, "",
             "| seeds | fine-tuning updates | dev BLEU | test BLEU | test chrF | teacher dev / test BLEU "
             "| Δ dev BLEU [95% CI] | Δ test BLEU [95% CI] | within each seed, test (paired bootstrap) "
             "| alignment energy, paper / as executed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    c = compare(runs, teachers.get(R.TEACHER_CONFIG, []))
    if c is not None:
        paired = c.paired
        partners = [r for r in c.baseline if r["seed"] in c.test.seeds.seeds]
        lines.append(f"| {c.seeds} | {budget:,} | {_cell([r['valid']['bleu'] for r in paired])} "
                     f"| {_cell([r['test']['bleu'] for r in paired])} "
                     f"| {_cell([r['test']['chrf'] for r in paired if 'chrf' in r['test']])} "
                     f"| {_cell([r['valid']['bleu'] for r in partners])} / "
                     f"{_cell([r['test']['bleu'] for r in partners])} | {c.dev.cell} | {c.test.cell} "
                     f"| {_bootstrap_cells(c.system, c.baseline, 'test')} | {_alignment_energy(paired)} |")
    else:
        lines.append("| - | - | - | - | - | no teacher result of the same seed and machine | - | - | - | - |")
    lines += ["", "## Along the fine-tuning", ""]
    curved = [r for r in system if r.get("points")]
    if curved:
        lines += _convert_points(curved, {r["seed"]: r["test"]["bleu"] for r in baseline}, title, png)
    else:
        lines.append("Not measured: no run has its points decoded (`fairseq-eatt-experiment study-convert` trains "
                     "a run again where its checkpoints kept along the way are gone).")
    lines += ["", "Runs:", ""]
    for r in runs:
        lines.append(f"- {r['run']}: `{r['_path']}`; from {r['origin']}; {_made(r)}"
                     + "".join(f"; {r[k]}" for k in ("points_note", "retrained_note") if r.get(k)))
    return "measured", "\n".join(lines) + "\n"


def _convert_points(runs: List[Dict], teacher_test: Dict[int, float], title: str, png: str) -> List[str]:
    """Test BLEU after each number of fine-tuning updates (a table and a figure)."""
    points = sorted({p["num_updates"] for r in runs for p in r["points"]})
    seeds = sorted({r["seed"] for r in runs})
    lines = ["Test BLEU of the checkpoint after each number of fine-tuning updates (0: as converted); Δ: minus the "
             "teacher's test BLEU, with its 95% interval.", "",
             "| seeds | " + " | ".join(f"{n:,}" for n in points) + " | teacher |",
             "|---|" + "---|" * len(points) + "---|"]
    by_point = {n: {r["seed"]: p["test"]["bleu"] for r in runs for p in r["points"] if p["num_updates"] == n}
                for n in points}
    lines.append(f"| {','.join(map(str, seeds))} | "
                 + " | ".join(_cell(list(by_point[n].values())) for n in points)
                 + f" | {_cell([teacher_test[s] for s in seeds if s in teacher_test])} |")
    deltas = []
    for n in points:
        diff = seed_difference(by_point[n], teacher_test)
        deltas.append("-" if diff is None else diff.text() + diff.mark)
    lines.append("| Δ vs teacher | " + " | ".join(deltas) + " | - |")
    fig, ax = pyplot().subplots(figsize=(6, 3.8))
    for r in runs:
        ax.plot([p["num_updates"] for p in r["points"]], [p["test"]["bleu"] for p in r["points"]], marker="o",
                label=f"converted E-ATT, seed {r['seed']}")
        if r["seed"] in teacher_test:
            ax.axhline(teacher_test[r["seed"]], linestyle="--", linewidth=1, color="gray")
    ax.set_xlabel("fine-tuning updates")
    ax.set_ylabel("test BLEU")
    ax.set_title(title + " (dashed: vanilla teacher)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, png)
    return lines + ["", f"![BLEU along fine-tuning]({os.path.basename(png)})"]


def study_report(short_results: str, long_results: str, out_dir: str, task: str = R.SMALL_TASK,
                 scale: str = "small", gpu_long_results: Optional[str] = None,
                 convert_results: Optional[str] = None, index_files: Tuple[str, ...] = ()) -> Dict[str, str]:
    """Write OUT/levers.md, OUT/curve.md and OUT/curve.png, OUT/verdict.md (the longer budget's comparisons
    with intervals) and OUT/convert.md (+ convert.png) where conversion runs exist; returns their status.
    ``gpu_long_results``: longer-budget runs trained on a GPU, listed beside the CPU runs, never compared."""
    from ..data.text import atomic_output

    os.makedirs(out_dir, exist_ok=True)
    short = study_runs(short_results, task, scale)
    if short:  # only the demo-budget runs: other budgets have their own folder
        budgets = {r["setting"]["max_update"] for g in short.values() for r in g}
        if len(budgets) > 1:
            raise ResultError(f"{short_results}: study runs with different budgets {sorted(budgets)}")
    parts = {
        "levers": levers_table(short, f"E-ATT levers at the demo budget ({task}, {scale} scale)"),
        "curve": curve_report(study_runs(long_results, task, scale),
                              f"Dev BLEU along the longer budget ({task}, {scale} scale)",
                              os.path.join(out_dir, "curve.png")),
        "verdict": verdict_report(study_runs(long_results, task, scale),
                                  study_runs(gpu_long_results, task, scale) if gpu_long_results else {},
                                  f"E-ATT against vanilla at the longer budget, with intervals ({task}, {scale} "
                                  f"scale)"),
    }
    converted = convert_runs(convert_results, task, scale) if convert_results else []
    if converted:
        parts["convert"] = convert_report(converted, study_runs(long_results, task, scale),
                                          f"E-ATT converted from a trained vanilla model ({task}, {scale} scale)",
                                          os.path.join(out_dir, "convert.png"))
    for name, (_, text) in parts.items():
        with atomic_output(os.path.join(out_dir, name + ".md")) as handle:
            handle.write(text)
    long_runs = study_runs(long_results, task, scale)
    for readme in index_files:  # the READMEs' verdict block
        update_block(readme, "verdict", verdict_summary(long_runs, long_results, converted))
    return {name: status for name, (status, _) in parts.items()}

"""The E-ATT study's report (issue 15): each lever at the demo budget, and the dev BLEU curves at the longer budget.

Writes ``OUT/levers.md`` (one row per configuration: mean over its seeds) and ``OUT/curve.md`` + ``curve.png``
(dev BLEU every 500 updates of the long runs), each with its status and provenance. Runs are the JSON results of
``fairseq-eatt-experiment study`` (in the usual results folder) and ``study-long`` (their own folder).
"""
import os
import statistics
from typing import Dict, List, Optional, Tuple

from . import recipes as R
from .plots import pyplot, save
from .results import ResultError, attention_energy, describe_setting, load_runs, mean_std

BASELINE_OF_BLOCK = {False: "vanilla", True: "vanilla+prenorm"}  # a pre-norm E-ATT is compared with a pre-norm vanilla


def _uniform(run: Dict) -> bool:
    a = run["attention"]
    return a["encoder_self"] == a["decoder_self"] == a["decoder_cross"]


def study_runs(results: str, task: str, scale: str) -> Dict[str, List[Dict]]:
    """{configuration: its runs (one per seed)} of the study's configurations among the results."""
    wanted = ["vanilla", "eatt", *R.STUDY_CONFIGS]
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
    if name in R.STUDY_CONFIGS:
        return R.STUDY_CONFIGS[name][1]
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
    baseline_test = {prenorm: [r["test"]["bleu"] for r in runs.get(name, [])]
                     for prenorm, name in BASELINE_OF_BLOCK.items()}
    lines = [f"# {title}\n", f"Status: {status}." + (f" Not run yet: {', '.join(missing)}." if missing else ""),
             "", "Setting: " + describe_setting(any_run["setting"]), "",
             "Test BLEU on test_2016 (sacreBLEU, detokenized); the checkpoint is chosen by dev loss. Gap: test BLEU "
             "minus the mean of vanilla attention in the same kind of block (post-norm or pre-norm), when that "
             "vanilla run exists. Energy: all attention layers (alignment = the scores alone) as % of the same "
             "model with vanilla attention, ASIC pJ of the paper's Table 1, paper convention, at the model's "
             "options and the test set's mean lengths. Cross-key ratio: nonzero ratio of cross-attention key "
             "codes at the last validation.", "",
             "| configuration | what it changes | seeds | dev BLEU | test BLEU | gap | dev loss | cross-key ratio "
             "| alignment energy | attention energy | params |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, group in runs.items():
        prenorm = _prenorm(group[0])
        tests = [r["test"]["bleu"] for r in group]
        base = baseline_test[prenorm]
        gap = f"{statistics.mean(tests) - statistics.mean(base):+.2f}" if base and name not in BASELINE_OF_BLOCK.values() \
            else "-"
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
            lines.append(f"- {r['run']}: `{r['_path']}`; {r['date']}, {machine_label(r['machine'])}, commit "
                         f"{r.get('git_commit')}")
    return status, "\n".join(lines) + "\n"


def machine_label(machine: Dict) -> str:
    """The processor a run trained on: its CPU, or its GPU (and host CPU) where it had one."""
    return f"{machine['gpu']} ({machine['cpu']} host)" if machine.get("gpu") else machine["cpu"]


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
            lines.append(f"- {r['run']}: `{r['_path']}`; trained {r['date']}, {machine_label(r['machine'])}, "
                         f"commit {r.get('git_commit')}; {note}")
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


def study_report(short_results: str, long_results: str, out_dir: str, task: str = R.SMALL_TASK,
                 scale: str = "small") -> Dict[str, str]:
    """Write OUT/levers.md, OUT/curve.md and OUT/curve.png; returns their status."""
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
    }
    for name, (_, text) in parts.items():
        with atomic_output(os.path.join(out_dir, name + ".md")) as handle:
            handle.write(text)
    return {name: status for name, (status, _) in parts.items()}

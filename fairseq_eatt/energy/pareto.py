"""BLEU against decoding energy for every variant's small-scale run: the Pareto view, in three forms.

BLEU: each variant's small-scale run (its run JSON under results/runs/: the variant in every position it supports,
vanilla elsewhere). Energy per sentence: the decoding report of the same mixes (fairseq's beam search counted as it
runs, every hypothesis at its source's length so that every variant does the same work): arithmetic only, with
memory traffic (weights in DRAM), and measured joules where a report of measured energy gives them for the mix
(none where no hardware counter was readable: nothing is estimated in a measurement's place).
"""
import json
import os
from typing import Dict, List, Optional

from ..provenance import provenance
from ..reports import renderer

FORMS = (("arithmetic", "arithmetic only"), ("dram", "with memory traffic (weights in DRAM)"),
         ("measured", "measured (hardware counters)"))


def run_bleu(runs_dir: str, variant: str, recipe_suffix: str = "") -> Optional[Dict]:
    """The test and dev BLEU of ``variant``'s run (its everywhere-allowed mix, seed 1), or None."""
    from ..attention import everywhere_allowed

    mix = everywhere_allowed(variant)
    name = f"{mix['encoder_self']}-{mix['decoder_self']}-{mix['decoder_cross']}{recipe_suffix}.seed1.json"
    path = os.path.join(runs_dir, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        run = json.load(handle)
    return {"test": run["test"]["bleu"], "dev": run.get("valid", {}).get("bleu"), "run": name}


def parse_measured(specs: List[str]) -> Dict[str, Dict]:
    """``VARIANT=JSON@SENTENCES`` (a ``fairseq-eatt-energy --measure --out`` report of decoding SENTENCES
    sentences): joules above idle per sentence, summed over the report's counters, by variant."""
    out = {}
    for spec in specs:
        try:
            variant, rest = spec.split("=", 1)
            path, sentences = rest.rsplit("@", 1)
            sentences = int(sentences)
        except ValueError:
            raise ValueError(f"--measured {spec!r}: expected VARIANT=JSON@SENTENCES") from None
        if sentences <= 0 or not os.path.isfile(path):
            raise ValueError(f"--measured {spec!r}: SENTENCES must be positive and JSON an existing file")
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        if report.get("kind") != "energy-measured":
            raise ValueError(f"--measured {path}: not a fairseq-eatt-energy --measure report")
        if report["result"].get("returncode", 0) != 0:  # written before failed runs were refused
            raise ValueError(f"--measured {path}: its command exited with status {report['result']['returncode']}; "
                             f"measure a run that succeeds")
        counters = report["result"]["counters"]
        out[variant] = {"path": path, "sentences": sentences, "machine": report["machine"],
                        "counters": sorted(counters),
                        "j_per_sentence": sum(c["joules_above_idle"] for c in counters.values()) / sentences}
    return out


def points(decoding: Dict, runs_dir: str, batch: str, measured: Optional[Dict] = None) -> List[Dict]:
    out = []
    for row in decoding["rows"]:
        variant = row.get("variant")
        if variant is None or batch not in row["batches"]:
            continue
        bleu = run_bleu(runs_dir, variant)
        if bleu is None:
            continue
        energy = row["batches"][batch]["energy_uj_per_sentence"]
        point = {"variant": variant, "bleu": bleu["test"], "run": bleu["run"],
                 "arithmetic": energy["arithmetic"], "dram": energy["dram"], "measured": None}
        if measured and variant in measured:
            point["measured"] = measured[variant]["j_per_sentence"] * 1e6
        out.append(point)
    return out


def pareto_front(pts: List[Dict], form: str) -> List[str]:
    """Variants no other variant beats on both BLEU (higher) and energy (lower) in ``form``."""
    have = [p for p in pts if p[form] is not None]
    return sorted(p["variant"] for p in have
                  if not any(q["bleu"] >= p["bleu"] and q[form] <= p[form] and (q["bleu"] > p["bleu"] or
                                                                                 q[form] < p[form]) for q in have))


def record(command: str, decoding_path: str, runs_dir: str, batch: str, measured: Dict) -> Dict:
    with open(decoding_path, encoding="utf-8") as handle:
        decoding = json.load(handle)
    pts = points(decoding, runs_dir, batch, measured)
    return {"kind": "pareto", "batch": batch, "decoding": decoding_path, "runs": runs_dir,
            "measured": measured, "points": pts,
            "fronts": {form: pareto_front(pts, form) for form, _ in FORMS}, **provenance(command)}


@renderer("pareto")
def markdown(rec: Dict) -> str:
    lines = ["# BLEU against decoding energy, every variant (small scale)", "",
             f"Made by `{rec['command']}`. Date, machine and commit: the JSON file beside this one.", "",
             f"BLEU: each variant's small-scale run (`{rec['runs']}`, seed 1; reduced scale). Energy per sentence: "
             f"`{rec['decoding']}` at batch {rec['batch']} (beam search counted as it runs, hypotheses forced to "
             "their source's length). Measured: " + ("; ".join(
                 f"`{v}`: `{m['path']}` ({', '.join(m['counters'])} on "
                 f"{m['machine'].get('gpu') or m['machine']['cpu']}, "
                 f"joules above idle / {m['sentences']} sentences, its own batch and process)"
                 for v, m in sorted(rec["measured"].items())) if rec["measured"] else
                 "no hardware energy counter was readable; nothing shown") + ". Figure: the PNG beside this file.", "",
             "| variant | test BLEU | µJ / sentence, arithmetic | µJ / sentence, with traffic (dram) | measured µJ |",
             "|---|---|---|---|---|"]
    for p in sorted(rec["points"], key=lambda p: -p["bleu"]):
        measured = f"{p['measured']:.0f}" if p["measured"] is not None else "not measured"
        lines.append(f"| `{p['variant']}` | {p['bleu']:.2f} | {p['arithmetic']:.1f} | {p['dram']:.1f} | {measured} |")
    lines += ["", "Pareto front (no other variant has higher BLEU and lower energy):", ""]
    for form, label in FORMS:
        front = rec["fronts"][form]
        lines.append(f"- {label}: " + (", ".join(f"`{v}`" for v in front) if front else "no data"))
    return "\n".join(lines) + "\n"


def figure(rec: Dict, path: str):
    from ..plots import pyplot, save

    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4.5))
    for ax, (form, label) in zip(axes, FORMS):
        pts = [p for p in rec["points"] if p[form] is not None]
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("µJ per sentence (log)")
        ax.set_ylabel("test BLEU")
        if not pts:
            ax.text(0.5, 0.5, "no readable hardware counter:\nnothing measured", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        front = set(rec["fronts"][form])
        for p in pts:
            ax.scatter(p[form], p["bleu"], color="C3" if p["variant"] in front else "C0")
            ax.annotate(p["variant"], (p[form], p["bleu"]), fontsize=7)
        ax.set_xscale("log")
    fig.suptitle(f"BLEU vs decoding energy at batch {rec['batch']} (small scale; red: Pareto front)")
    fig.tight_layout()
    save(fig, path)


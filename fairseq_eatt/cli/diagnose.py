"""fairseq-eatt-diagnose: what the attention of trained checkpoints does, per layer and position (no training).

    fairseq-eatt-diagnose DATA --path vanilla=ckpt_a.pt --path eatt=ckpt_b.pt --subset valid --out OUT

For each checkpoint (``LABEL=PATH`` or a plain path) over one split: attention entropy and maximum weight per head,
and for E-ATT-style attention the nonzero ratio of the binarized codes, dead and saturated features, how distinct
one sentence's codes are, and the correlation between the attention a key receives and its number of ones (see
:mod:`fairseq_eatt.analysis.diagnostics`). Writes OUT.md, OUT.json and OUT.png (one line per checkpoint).
"""
import argparse
import datetime
import json
import os
import platform
import sys
from typing import Dict, List, Tuple

from ..analysis.diagnostics import diagnose
from .common import load_checkpoint, write_atomically

SHORT = {"encoder_self": "enc", "decoder_self": "dec", "cross": "x"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory (fairseq-preprocess output)")
    p.add_argument("--path", action="append", required=True, metavar="[LABEL=]CHECKPOINT",
                   help="a transformer_eatt checkpoint, optionally labelled; repeat to compare several")
    p.add_argument("--subset", default="valid", help="dataset split (train, valid, test; default: valid)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (default: 4096)")
    p.add_argument("--max-sentences", type=int, default=None, help="stop after this many sentences")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md, OUT.json, OUT.png")
    args = p.parse_args(argv)
    args.checkpoints = []
    for item in args.path:
        label, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        label = label or os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        if not os.path.isfile(path):
            p.error(f"--path {item}: no such checkpoint file")
        args.checkpoints.append((label, path))
    labels = [label for label, _ in args.checkpoints]
    if len(set(labels)) != len(labels):
        p.error(f"--path: labels must differ, got {', '.join(labels)} (use LABEL=PATH)")
    if args.max_tokens <= 0:
        p.error(f"--max-tokens must be positive, got {args.max_tokens}")
    if args.max_sentences is not None and args.max_sentences <= 0:
        p.error(f"--max-sentences must be positive, got {args.max_sentences}")
    return args


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: List[Dict]) -> str:
    head = ("| position | layer | variant | rel. entropy | max weight | nonzero q / k | dead q / k | saturated q / k "
            "| distinct codes q / k | Hamming q / k | r(attention, key ones) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        q, k = r.get("query_codes") or {}, r.get("key_codes") or {}

        def pair(key, digits=3):
            return "-" if not q else f"{_fmt(q.get(key), digits)} / {_fmt(k.get(key), digits)}"

        lines.append(f"| {r['position']} | {r['layer']} | {r['variant']} | {_fmt(r.get('relative_entropy'))} "
                     f"| {_fmt(r.get('max_weight'))} | {pair('nonzero_ratio')} | {pair('dead_features')} "
                     f"| {pair('saturated_features')} | {pair('distinct_code_fraction')} "
                     f"| {pair('mean_hamming_fraction')} | {_fmt(r.get('attention_vs_key_ones_r'))} |")
    return "\n".join(lines) + "\n"


def plot(results: List[Tuple[str, List[Dict]]], out_png: str, title: str):
    from ..experiments.plots import pyplot, save

    panels = [("relative_entropy", None, "attention entropy / log(keys)"),
              ("nonzero_ratio", "key_codes", "nonzero ratio (key side)"),
              ("mean_hamming_fraction", "key_codes", "Hamming distance between a sentence's key codes"),
              ("attention_vs_key_ones_r", None, "r(attention received, key ones)")]
    fig, axes = pyplot().subplots(2, 2, figsize=(10, 6.5))
    for ax, (key, side, name) in zip(axes.flat, panels):
        for index, (label, rows) in enumerate(results):  # one colour per checkpoint in every panel
            xs, ys = [], []
            for i, r in enumerate(rows):
                value = (r.get(side) or {}).get(key) if side else r.get(key)
                if value is not None:
                    xs.append(i)
                    ys.append(value)
            ax.plot(xs, ys, marker="o", label=label, color=f"C{index % 10}")
        ticks = results[0][1]
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels([f"{SHORT[r['position']]}{r['layer']}" for r in ticks], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    save(fig, out_png, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    results = []
    for label, path in args.checkpoints:
        model, task = load_checkpoint(path, args.data)
        rows = diagnose(model, task, args.subset, args.max_tokens, args.max_sentences)
        results.append((label, rows))
        print(f"[diagnose] {label}: {len(rows)} attention modules", file=sys.stderr)
    layouts = {tuple((r["position"], r["layer"]) for r in rows) for _, rows in results}
    if len(layouts) > 1:
        sys.exit("fairseq-eatt-diagnose: the checkpoints have different layers; compare models of one shape")
    when = datetime.date.today().isoformat()
    command = "fairseq-eatt-diagnose " + " ".join(sys.argv[1:] if argv is None else argv)
    parts = [f"# Attention diagnostics on `{args.subset}`\n",
             f"Command: `{command}`; {platform.node() or 'this machine'}, {when}. Decoder inputs teacher-forced, "
             "padding excluded. Columns: entropy relative to log(visible keys) (1 = uniform) and largest weight, "
             "averaged over heads and real queries; for binarized inputs (query / key side): nonzero ratio, "
             "features never on (dead) or always on (saturated) over the split, fraction of distinct codes within "
             "a sentence and mean Hamming distance between two of its tokens (fraction of the features), and the "
             "within-sentence Pearson r between the attention a key receives and its number of ones.\n"]
    for label, rows in results:
        path = dict(args.checkpoints)[label]
        parts.append(f"## {label}\n\nCheckpoint `{path}`\n\n" + table(rows))
    write_atomically(args.out + ".md", lambda f: f.write("\n".join(parts)))
    payload = {"command": command, "date": when, "subset": args.subset, "data": args.data,
               "max_sentences": args.max_sentences,
               "checkpoints": [{"label": label, "path": dict(args.checkpoints)[label], "modules": rows}
                               for label, rows in results]}
    write_atomically(args.out + ".json", lambda f: json.dump(payload, f, indent=2))
    plot(results, args.out + ".png", f"attention diagnostics on {args.subset}")
    print("\n".join(parts))
    print(f"wrote {args.out}.md, {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    main()

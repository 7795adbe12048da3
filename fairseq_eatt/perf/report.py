"""fairseq-eatt-bench's report: markdown tables with ratios to the stock transformer, and the raw JSON."""
import json
import math
import statistics
from typing import Dict, List, Optional

from ..data.text import atomic_output

CPU_TARGETS = TARGETS = {"train": 0.95, "generate": 0.95, "memory": 1.10, "scores": 3.0}
GPU_TARGETS = {"train": 0.9, "generate": 0.95, "memory": 1.10, "scores": 2.0}  # the GPU targets, Transformer-base


def med(values: List[float]) -> float:
    return statistics.median(values)


def fmt_spread(values: List[float], digits: int = 1) -> str:
    return f"{med(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def ratio(a: float, b: Optional[float]) -> str:
    return f"{a / b:.3f}" if b else "-"


def throughput_ratio(row: Dict, ref: Optional[Dict], key: str) -> Optional[float]:
    """Median of the per-round (paired) ratios to the stock transformer; older reports: ratio of medians."""
    if "ratio_per_round" in row:
        return med(row["ratio_per_round"])
    return med(row[key]) / med(ref[key]) if ref else None


def fmt_ratio(row: Dict, ref: Optional[Dict], key: str) -> str:
    value = throughput_ratio(row, ref, key)
    if value is None:
        return "-"
    per_round = row.get("ratio_per_round", [])
    return f"{value:.3f} [{min(per_round):.3f}-{max(per_round):.3f}]" if len(per_round) > 1 else f"{value:.3f}"


def throughput_table(report: Dict, mode: str) -> List[str]:
    key, unit = ("target_tokens_per_s", "target tokens/s") if mode == "train" else ("sentences_per_s",
                                                                                       "sentences/s")
    rows = report.get(mode, {})
    if not rows:
        return []
    ref = rows.get("transformer")
    ref_mem = ref["peak_rss_mib"] if ref else None
    mem_key = "peak_gpu_mib" if report.get("gpu") else "peak_rss_mib"
    lines = [f"| model | {unit}, median [min-max] | vs stock transformer, median [min-max] of rounds | "
             f"peak memory (MiB) | vs stock | "
             f"working memory (MiB) | vs stock |" + (" params |" if mode == "train" else " mean output tokens |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        label = "stock fairseq `transformer`" if name == "transformer" else (
            "`transformer_eatt`, vanilla attention" if name == "vanilla" else f"`transformer_eatt`, `{name}`")
        mem = r.get(mem_key, r["peak_rss_mib"])
        ref_m = ref.get(mem_key, ref_mem) if ref else None
        extra = f"{r['params']:,}" if mode == "train" else f"{med(r['mean_output_tokens']):.1f}"
        work, ref_w = r["working_rss_mib"], (ref["working_rss_mib"] if ref else None)
        if report.get("gpu"):
            work, ref_w = mem, ref_m
        lines.append(f"| {label} | {fmt_spread(r[key])} | {fmt_ratio(r, ref, key)} | {mem:.0f} | "
                     f"{ratio(mem, ref_m)} | {work:.0f} | {ratio(work, ref_w)} | {extra} |")
    return lines


L1_IMPLEMENTATIONS = (("fast", "L1, compiled kernel", "kernel"), ("triton", "L1, Triton kernel", "Triton"),
                      ("reference", "L1, reference", "reference"))


def scores_table(report: Dict) -> List[str]:
    rows = report.get("scores")
    if not rows:
        return []
    present = [(key, label, short) for key, label, short in L1_IMPLEMENTATIONS if f"l1_{key}_s" in rows[0]]
    head = ("| length | dot product (ms) |" + "".join(f" {label} (ms) | {short} / dot |" for _, label, short in present)
            + " largest tensor / (N x L x L x d) |")
    lines = [head, "|---|---|" + "---|---|" * len(present) + "---|"]
    for r in rows:
        dot = r["dot_s"]["median"]
        cells = [str(r["length"]), f"{dot * 1e3:.3f}"]
        for key, _, _ in present:
            cells += [f"{r[f'l1_{key}_s']['median'] * 1e3:.3f}", f"{r[f'l1_{key}_s']['median'] / dot:.2f}"]
        first = present[0][0]
        cells.append(f"{r[f'l1_{first}_largest_vs_5d']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def growth(rows: List[Dict], field: str) -> str:
    """Exponent of growth between the two longest lengths (1 = linear, 2 = quadratic)."""
    if len(rows) < 2:
        return "-"
    a, b = rows[-2], rows[-1]
    va = a["seconds"]["median"] if field == "seconds" else a["peak_bytes"]
    vb = b["seconds"]["median"] if field == "seconds" else b["peak_bytes"]
    if va <= 0 or vb <= 0:
        return "-"
    return f"{math.log(vb / va) / math.log(b['length'] / a['length']):.2f}"


def lengths_table(report: Dict) -> List[str]:
    data = report.get("lengths")
    if not data:
        return []
    lengths = [r["length"] for r in next(iter(data.values()))]
    lines = ["| variant | " + " | ".join(f"L={n}: ms / MiB" for n in lengths) + " | time growth | memory growth |",
             "|---|" + "---|" * (len(lengths) + 2)]
    for name, rows in data.items():
        cells = [f"{r['seconds']['median'] * 1e3:.1f} / {r['peak_bytes'] / 2**20:.1f}" for r in rows]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {growth(rows, 'seconds')} | "
                                                           f"{growth(rows, 'peak_bytes')} |")
    return lines


def targets(report: Dict) -> List[str]:
    TARGETS = GPU_TARGETS if report.get("gpu") else CPU_TARGETS  # noqa: N806
    lines = []
    train, gen = report.get("train", {}), report.get("generate", {})
    mem_key = "peak_gpu_mib" if report.get("gpu") else "peak_rss_mib"
    if "eatt" in train and "transformer" in train:
        t = throughput_ratio(train["eatt"], train["transformer"], "target_tokens_per_s")
        m = train["eatt"][mem_key] / train["transformer"][mem_key]
        w = train["eatt"]["working_rss_mib"] / max(1e-9, train["transformer"]["working_rss_mib"])
        lines.append(f"- E-ATT training throughput {t:.3f}x the stock transformer (target >= "
                     f"{TARGETS['train']}): {'met' if t >= TARGETS['train'] else 'NOT met'}")
        lines.append(f"- E-ATT peak training memory {m:.3f}x (target <= {TARGETS['memory']}): "
                     f"{'met' if m <= TARGETS['memory'] else 'NOT met'}; working memory (peak minus the loaded "
                     f"model) {w:.3f}x")
    if "eatt" in gen and "transformer" in gen:
        g = throughput_ratio(gen["eatt"], gen["transformer"], "sentences_per_s")
        m = gen["eatt"][mem_key] / gen["transformer"][mem_key]
        lines.append(f"- E-ATT generation throughput {g:.3f}x (target >= {TARGETS['generate']}): "
                     f"{'met' if g >= TARGETS['generate'] else 'NOT met'}; peak generation memory {m:.3f}x")
    for key, what in (("fast", "compiled kernel"), ("triton", "Triton kernel")):
        if report.get("scores") and f"l1_{key}_s" in report["scores"][0]:
            worst = max(r[f"l1_{key}_s"]["median"] / r["dot_s"]["median"] for r in report["scores"])
            lines.append(f"- E-ATT L1 scores ({what}), forward + backward, at most {worst:.2f}x dot-product "
                         f"scores over lengths {', '.join(str(r['length']) for r in report['scores'])} (target <= "
                         f"{TARGETS['scores']}): {'met' if worst <= TARGETS['scores'] else 'NOT met'}")
    return lines


def markdown(report: Dict) -> str:
    m = report["machine"]
    out = ["# Performance: attention variants against the stock fairseq transformer", "",
           f"Command: `{report['command']}`; date {report['date']}; {report['seconds']} s.", ""] + [
           f"- {part}: `{p['command']}` ({p['date']}, {p.get('seconds')} s)"
           for part, p in report.get("provenance", {}).items()] + ["",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, GPU: "
           f"{m['gpu'] if report.get('gpu') else 'not used'}; torch {m['torch']}, fairseq {m['fairseq']}.", "",
           f"Preset `{report['preset']}`: {json.dumps(report['preset_values'])}; data `{report['data']}`.", "",
           "All models have the same dimensions and see the same batches. Each throughput is measured in its own "
           "process after warm-up, repeated (median [min-max]), in rounds that measure every model once in "
           "alternating order; a ratio to the stock transformer is taken within each round and the table gives "
           "the median [min-max] over rounds. Peak memory (median over rounds) is that process's peak resident set "
           "(CPU) or the allocator's peak (GPU); working memory is the peak minus the resident set once the model, "
           "optimizer and batches are loaded (on a GPU: the allocator peak). Generation forces every hypothesis to "
           "the length of its source (`match_source_len`), so every model does the same decoding work whether "
           "trained or not.", ""]
    lines = targets(report)
    if lines:
        out += ["## Targets", ""] + lines + [""]
    for title, table in (("Training (forward, backward, Adam step)", throughput_table(report, "train")),
                         ("Beam-search generation (beam 4, incremental decoding)",
                          throughput_table(report, "generate")),
                         ("Score operation alone: E-ATT's L1 distances vs dot products, forward + backward",
                          scores_table(report)),
                         ("Growth with sentence length: one self-attention layer, batch 8, forward + backward; "
                          "peak memory of live tensors", lengths_table(report))):
        if table:
            out += [f"## {title}", ""] + table + [""]
    return "\n".join(out)


def write(report: Dict, prefix: str):
    with atomic_output(prefix + ".json") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    with atomic_output(prefix + ".md") as handle:
        handle.write(markdown(report))

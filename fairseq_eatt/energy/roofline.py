"""The roofline view: each variant's arithmetic intensity against a machine's balance point.

A call is memory-bound when its operations per byte moved fall below the machine's balance point (peak
operations per second / bandwidth in bytes per second): then its speed, and much of its energy, is set by the
bytes. Operations are the complete convention's (what the code executes), bytes the declared traffic
(each variant's ``cost.byte_counts``) under a memory assumption. :func:`measure_machine` measures this machine's two
numbers with a matrix product and a copy of a large buffer.
"""
import argparse
import time
from typing import Dict, List

import torch

from ..provenance import provenance
from ..reports import renderer
from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions, get_attention_class
from ..attention.counts import intensity

# the calls a translator makes: the encoder's full pass, and decoding's incremental steps
CALLS = (("encoder_self full pass", ENCODER_SELF, None), ("decoder self step", DECODER_SELF, 1),
         ("cross step (cached source)", DECODER_CROSS, 0))


def measure_machine(gemm_n: int = 1024, copy_mib: int = 256, repeats: int = 5) -> Dict[str, float]:
    """Peak fp32 operations per second (a gemm_n^3 matrix product, 2 n^3 operations) and memory bandwidth (a copy
    of copy_mib MiB: read + written), the best of ``repeats``."""
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    src = torch.empty(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return {"peak_gops": 2 * gemm_n**3 / best / 1e9, "bandwidth_gbs": 2 * src.numel() * 4 / copy / 1e9,
            "gemm_n": gemm_n, "copy_mib": copy_mib, "threads": torch.get_num_threads()}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows(l: int, d: int, heads: int, peak_gops: float, bandwidth_gbs: float, memory: str = "dram",  # noqa: E741
         precision: str = "fp32", batch: int = 1) -> List[Dict]:
    """Intensity, attainable throughput and bound of each variant's calls at length ``l`` (keys so far for the
    steps) and ``batch`` rows sharing the weights."""
    balance = peak_gops / bandwidth_gbs
    out = []
    for name in available_attentions():
        cls = get_attention_class(name)
        for label, position, new_keys in CALLS:
            if position not in cls.capabilities.allowed_positions():
                continue
            lq = l if new_keys is None else 1
            self_attention = position != DECODER_CROSS
            options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=max(512, l)), position)
            ops = cls.cost.op_counts(lq, l, d, heads, "complete", None, new_keys=new_keys, self_attention=self_attention,
                                **options)["attention"].scaled(batch)
            traffic = cls.cost.byte_counts(lq, l, d, heads, precision, new_keys=new_keys, self_attention=self_attention,
                                      rows=batch, **options)
            operations = ops.mul + ops.add + ops.cmp
            ai = intensity(operations, traffic, memory)
            attainable = min(peak_gops, ai * bandwidth_gbs)
            out.append({"variant": name, "call": label, "operations": operations, "bytes": traffic.total,
                        "intensity": ai, "attainable_gops": attainable,
                        "bound": "memory" if ai < balance else "compute"})
    return out


def record(command: str, machine: Dict, l: int, d: int, heads: int, precision: str,  # noqa: E741
           batches=(1, 64)) -> Dict:
    from ..attention.counts import MEMORY

    return {"kind": "roofline", "measured_machine": machine, "l": l, "d": d, "heads": heads, "precision": precision,
            "rows": {memory: {str(b): rows(l, d, heads, machine["peak_gops"], machine["bandwidth_gbs"], memory,
                                           precision, b) for b in batches} for memory in MEMORY},
            **provenance(command)}


@renderer("roofline")
def markdown(rec: Dict) -> str:
    from ..attention.counts import MEMORY_HELP

    m = rec["measured_machine"]
    balance = m["peak_gops"] / m["bandwidth_gbs"]
    how = (f" (measured: a {m['gemm_n']}^3 fp32 matrix product and a copy of {m['copy_mib']} MiB, {m['threads']} "
           "threads, best of 5)" if "gemm_n" in m else " (given)")
    lines = ["# Roofline: arithmetic intensity of every variant's calls", "",
             f"Made by `{rec['command']}`. Date, machine and commit: the JSON file beside this one.", "",
             f"Machine: {m['peak_gops']:.1f} GOP/s peak, {m['bandwidth_gbs']:.1f} GB/s{how}; balance point "
             f"{balance:.1f} operations per byte. Calls at d = {rec['d']}, {rec['heads']} heads, length {rec['l']} "
             f"(keys so far for decoding steps), {rec['precision']}. Operations: the complete convention (what the "
             "code executes); bytes: each variant's declared traffic. A call whose operations per byte fall below "
             "the balance point is memory-bound.", ""]
    for memory, by_batch in rec["rows"].items():
        for batch, rows_ in by_batch.items():
            lines += [f"## Memory `{memory}` ({MEMORY_HELP[memory]}), batch {batch}", "",
                      "| variant | call | operations | bytes | operations / byte | attainable GOP/s | bound |",
                      "|---|---|---|---|---|---|---|"]
            for r in rows_:
                lines.append(f"| `{r['variant']}` | {r['call']} | {r['operations']:,.0f} | {r['bytes']:,.0f} | "
                             f"{r['intensity']:.2f} | {r['attainable_gops']:.1f} | {r['bound']} |")
            lines.append("")
    return "\n".join(lines)


def figure(rec: Dict, path: str, memory: str = "dram", batch: str = "1"):
    from ..plots import pyplot, save

    m = rec["measured_machine"]
    pts = rec["rows"][memory][batch]
    xs = [r["intensity"] for r in pts]
    lo, hi = min(xs + [0.01]) / 2, max(xs + [m["peak_gops"] / m["bandwidth_gbs"]]) * 4
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = pyplot().subplots(figsize=(8, 5))
    ax.loglog(grid, [min(m["peak_gops"], x * m["bandwidth_gbs"]) for x in grid], "k-", label="roofline")
    markers = {"encoder_self full pass": "o", "decoder self step": "s", "cross step (cached source)": "^"}
    for call, marker in markers.items():
        sel = [r for r in pts if r["call"] == call]
        ax.scatter([r["intensity"] for r in sel], [r["attainable_gops"] for r in sel], marker=marker, label=call)
        for r in sel:
            if r["variant"] in ("vanilla", "eatt"):
                ax.annotate(r["variant"], (r["intensity"], r["attainable_gops"]), fontsize=7)
    ax.set_xlabel("operations per byte (DRAM traffic)" if memory == "dram" else "operations per byte")
    ax.set_ylabel("attainable GOP/s")
    ax.set_title(f"Roofline, memory {memory}, batch {batch}, d {rec['d']}, length {rec['l']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)

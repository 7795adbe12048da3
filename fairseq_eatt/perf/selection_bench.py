"""How E-ATT's selection pays on a CPU: the selected rows (gather_select, cpp_select) against nn.Linear on the
bits, and a whole decoding step of E-ATT's attention against fairseq's stock MultiheadAttention, both at the row
counts of beam search (batch x beam hypotheses per step), one thread, in one run.

    python scripts/bench_selection.py [--dim 256] [--heads 4] [--ratio 0.2] [--rows 1,4,16,32,64,128]
        [--repeats 200] [--out results/selection_bench]

The ratio of ones in the binarized inputs is set (random bits at ``--ratio``; the demo's trained models measured
about a fifth, results/figure3). The crossover is the largest row count at which cpp_select is faster than
nn.Linear (the backend choice's ``auto`` is set from it)."""
import argparse
import statistics
import sys
import time
from typing import Dict, List

import torch

from ..provenance import provenance
from ..reports import publish, renderer


def _median_seconds(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):  # warm-up
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def selection_rows(dim: int, ratio: float, rows: List[int], repeats: int) -> List[Dict]:
    from ..attention.backends import BACKENDS
    from ..attention.eatt import selection

    out = []
    linear = torch.nn.Linear(dim, dim)
    weight_rows = linear.weight.detach().t().contiguous()
    bias = linear.bias.detach()
    have_kernel = BACKENDS["cpp_select"].unavailable() is None
    for n in rows:
        torch.manual_seed(n)
        bits = (torch.rand(n, dim) < ratio).float()
        with torch.no_grad():
            row = {"rows": n, "dense_us": 1e6 * _median_seconds(lambda: linear(bits), repeats),
                   "gather_us": 1e6 * _median_seconds(lambda: selection.gather_rows(bits, weight_rows, bias),
                                                      repeats)}
            if have_kernel:
                row["cpp_us"] = 1e6 * _median_seconds(lambda: selection.compiled_rows(bits, weight_rows, bias),
                                                      repeats)
        row["ones"] = float(bits.sum())
        row["rows_read_vs_dense"] = row["ones"] / dim  # rows of W^T read / rows the dense product reads
        out.append(row)
    return out


def _onnx_graphs(rows, bias, folder: str):
    """Two ONNX graphs of Q from bits (n, d): MatMul with W^T and Add (the exported path), and the selected rows
    (NonZero, Gather of the rows, ScatterND with add reduction per token, Add), built with onnx.helper."""
    import os

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d, o = rows.shape
    inits = [numpy_helper.from_array(rows.numpy(), "rows"), numpy_helper.from_array(bias.numpy(), "bias")]
    bits = helper.make_tensor_value_info("bits", TensorProto.FLOAT, ["n", d])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", o])
    dense = helper.make_graph([helper.make_node("MatMul", ["bits", "rows"], ["mm"]),
                               helper.make_node("Add", ["mm", "bias"], ["q"])], "dense", [bits], [q], inits)
    consts = [numpy_helper.from_array(__import__("numpy").array(v, dtype="int64"), n)
              for n, v in (("zero", 0), ("one", 1), ("out_width", [o]), ("axis1", [1]))]
    nodes = [
        helper.make_node("NonZero", ["bits"], ["where"]),  # (2, nnz): token, feature
        helper.make_node("Gather", ["where", "zero"], ["token"], axis=0),
        helper.make_node("Gather", ["where", "one"], ["feature"], axis=0),
        helper.make_node("Gather", ["rows", "feature"], ["picked"], axis=0),  # (nnz, o)
        helper.make_node("Unsqueeze", ["token", "axis1"], ["token_index"]),  # (nnz, 1)
        helper.make_node("Shape", ["bits"], ["bits_shape"], end=1),
        helper.make_node("Concat", ["bits_shape", "out_width"], ["out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["out_shape"], ["zeros"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("ScatterND", ["zeros", "token_index", "picked"], ["sums"], reduction="add"),
        helper.make_node("Add", ["sums", "bias"], ["q"]),
    ]
    gather = helper.make_graph(nodes, "gather", [bits], [q], inits + consts)
    paths = {}
    for name, graph in (("dense", dense), ("gather", gather)):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        onnx.checker.check_model(model)
        paths[name] = os.path.join(folder, f"{name}.onnx")
        onnx.save(model, paths[name])
    return paths


def onnx_selection_rows(dim: int, ratio: float, rows: List[int], repeats: int) -> List[Dict]:
    """The same Q in ONNX Runtime: MatMul against the selected rows (one thread); values checked equal."""
    import tempfile

    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    linear = torch.nn.Linear(dim, dim)
    weight_rows, bias = linear.weight.detach().t().contiguous(), linear.bias.detach()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    out = []
    with tempfile.TemporaryDirectory() as folder:
        paths = _onnx_graphs(weight_rows, bias, folder)
        sessions = {n: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for n, p in paths.items()}
        for n in rows:
            torch.manual_seed(n)
            bits = (torch.rand(n, dim) < ratio).float().numpy()
            values = {k: s.run(None, {"bits": bits})[0] for k, s in sessions.items()}
            if not np.allclose(values["gather"], values["dense"], atol=1e-5):
                raise RuntimeError("the ONNX selected-rows graph computes something else than MatMul")
            row = {"rows": n}
            for k, s in sessions.items():
                row[f"{k}_us"] = 1e6 * _median_seconds(lambda s=s: s.run(None, {"bits": bits}), repeats)
            out.append(row)
    return out


def attention_steps(dim: int, heads: int, ratio: float, rows: List[int], repeats: int, prefix: int = 12
                    ) -> List[Dict]:
    """One decoder self-attention step (a new token against ``prefix`` cached ones) of E-ATT with each selection
    backend and of fairseq's MultiheadAttention, with ``rows`` hypotheses."""
    import os

    from fairseq.modules import MultiheadAttention

    from ..attention import DECODER_SELF, build_attention

    torch.manual_seed(0)
    # tau set so that about ``ratio`` of the (standard normal) inputs binarize to 1
    tau = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - ratio)))
    eatt = build_attention("eatt", dim, heads, DECODER_SELF, threshold=tau).eval()
    stock = MultiheadAttention(dim, heads, self_attention=True).eval()
    out = []
    for n in rows:
        x = torch.randn(prefix + 1, n, dim)

        def step(module):
            """One new token against the cached prefix (a fresh copy of the cache each call)."""
            saved = {}
            module(x[:prefix], x[:prefix], x[:prefix], incremental_state=saved)
            new = x[prefix:]
            return lambda: module(new, new, new, incremental_state={k: dict(v) for k, v in saved.items()})

        row = {"rows": n}
        previous = os.environ.get("FAIRSEQ_EATT_BACKEND")
        try:
            with torch.no_grad():
                row["vanilla_us"] = 1e6 * _median_seconds(step(stock), repeats)
                for backend in ("dense_select", "cpp_select"):
                    os.environ["FAIRSEQ_EATT_BACKEND"] = backend
                    try:
                        row[f"eatt_{backend}_us"] = 1e6 * _median_seconds(step(eatt), repeats)
                    except RuntimeError as err:  # the kernel is not built here
                        row[f"eatt_{backend}_us"] = None
                        row["note"] = str(err)
        finally:
            if previous is None:
                os.environ.pop("FAIRSEQ_EATT_BACKEND", None)
            else:
                os.environ["FAIRSEQ_EATT_BACKEND"] = previous
        out.append(row)
    return out


def crossover(rows: List[Dict]) -> int:
    """The largest row count up to which cpp_select beats nn.Linear at every measured count (0: never)."""
    best = 0
    for r in sorted(rows, key=lambda r: r["rows"]):
        if r.get("cpp_us") is None or r["cpp_us"] >= r["dense_us"]:
            break
        best = r["rows"]
    return best


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_selection", description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=256, help="model dimension d (the demo's: 256)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ratio", type=float, default=0.2, help="ratio of ones in the binarized inputs")
    p.add_argument("--rows", default="1,4,16,32,64,128", help="hypotheses per step (batch x beam), comma-separated")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    try:
        rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        p.error(f"--rows must be comma-separated integers, got {args.rows!r}")
    if not 0 < args.ratio < 1 or any(r < 1 for r in rows):
        p.error("--ratio must lie in (0, 1) and every --rows value must be at least 1")
    torch.set_num_threads(1)
    selection = selection_rows(args.dim, args.ratio, rows, args.repeats)
    rec = {"kind": "selection_bench", "dim": args.dim, "heads": args.heads, "ratio": args.ratio, "threads": 1,
           "selection": selection, "steps": attention_steps(args.dim, args.heads, args.ratio, rows, args.repeats),
           "onnx": onnx_selection_rows(args.dim, args.ratio, rows, args.repeats),
           "crossover_rows": crossover(selection),
           **provenance("python scripts/bench_selection.py " + " ".join(argv if argv is not None else sys.argv[1:]))}
    publish(args.out, rec)


@renderer("selection_bench")
def markdown(rec: Dict) -> str:
    lines = ["# E-ATT's selection on a CPU: the selected rows against the dense product", "",
             f"Made by `{rec['command']}`; machine, date and commit in the JSON beside this file. d = {rec['dim']}, "
             f"{rec['heads']} heads, ratio of ones {rec['ratio']}, one thread, median of repeated calls.", "",
             "Q from the bits of `rows` tokens (hypotheses of one beam-search step):", "",
             "| rows | nn.Linear (us) | gather_select (us) | cpp_select (us) | cpp / nn.Linear | rows of W^T read / "
             "dense |", "|---|---|---|---|---|---|"]
    for r in rec["selection"]:
        cpp = r.get("cpp_us")
        shown = "- | -" if cpp is None else f"{cpp:.1f} | {cpp / r['dense_us']:.2f}"
        lines.append(f"| {r['rows']} | {r['dense_us']:.1f} | {r['gather_us']:.1f} | {shown} | "
                     f"{r['rows_read_vs_dense']:.2f} |")
    cross = rec["crossover_rows"]
    lines += ["", f"cpp_select is faster than nn.Linear up to {cross} rows per call." if cross else
              "cpp_select is never faster than nn.Linear here.", "",
              "One decoder self-attention step (a new token against 12 cached ones), E-ATT against fairseq's stock "
              "MultiheadAttention:", "",
              "| rows | vanilla (us) | E-ATT, nn.Linear selection (us) | E-ATT, cpp_select (us) | E-ATT best / "
              "vanilla |", "|---|---|---|---|---|"]
    for r in rec["steps"]:
        times = [t for t in (r.get("eatt_dense_select_us"), r.get("eatt_cpp_select_us")) if t is not None]
        cpp = r.get("eatt_cpp_select_us")
        lines.append(f"| {r['rows']} | {r['vanilla_us']:.1f} | {r['eatt_dense_select_us']:.1f} | "
                     f"{'-' if cpp is None else f'{cpp:.1f}'} | {min(times) / r['vanilla_us']:.2f} |")
    if rec.get("onnx"):
        lines += ["", "The same Q in ONNX Runtime (what the exported graphs run): MatMul against the selected rows "
                      "(NonZero, Gather, ScatterND with add reduction):", "",
                  "| rows | MatMul (us) | selected rows (us) | selected / MatMul |", "|---|---|---|---|"]
        for r in rec["onnx"]:
            lines.append(f"| {r['rows']} | {r['dense_us']:.1f} | {r['gather_us']:.1f} | "
                         f"{r['gather_us'] / r['dense_us']:.2f} |")
    return "\n".join(lines) + "\n"

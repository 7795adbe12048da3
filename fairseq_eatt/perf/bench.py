"""fairseq-eatt-bench's measurements: each model measured in its own process (perf/worker.py) in alternating
rounds, E-ATT's score operation alone, and time and memory against the sentence length; report.py writes them."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import weakref
from typing import Dict, List

import torch

PRESETS = {  # dims of the architectures; tokens per training batch; generation batches
    "tiny": dict(dim=32, ffn=64, heads=2, layers=1, max_tokens=256, warmup=1, steps=2, repeats=1, rounds=2,
                 gen_batches=1, gen_batch_size=4, lengths=(16, 32), op_n=2),
    "small": dict(dim=256, ffn=1024, heads=4, layers=3, max_tokens=2048, warmup=4, steps=12, repeats=2, rounds=3,
                  gen_batches=3, gen_batch_size=128, lengths=(32, 64, 128, 256, 512), op_n=32),
    "base": dict(dim=512, ffn=2048, heads=8, layers=6, max_tokens=4096, warmup=5, steps=20, repeats=2, rounds=3,
                 gen_batches=4, gen_batch_size=128, lengths=(32, 64, 128, 256, 512), op_n=64),
}



def log(msg: str):
    print(f"[bench] {msg}", flush=True)


def spread(values: List[float]) -> Dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def model_args(name: str, preset: Dict) -> List[str]:
    """fairseq arguments of one benchmarked model; all share the preset's dimensions."""
    from ..attention.eatt import BLOCK_DEFAULTS, DEFAULT_RECIPE
    from ..attention import everywhere_allowed

    dims = []
    for side in ("encoder", "decoder"):
        dims += [f"--{side}-embed-dim", str(preset["dim"]), f"--{side}-ffn-embed-dim", str(preset["ffn"]),
                 f"--{side}-attention-heads", str(preset["heads"]), f"--{side}-layers", str(preset["layers"])]
    common = dims + ["--share-all-embeddings", "--dropout", "0.1"]
    if name == "transformer":  # in the blocks the plugin's default recipe gives every other model
        blocks = [f"--{attr.replace('_', '-')}" for attr, on in BLOCK_DEFAULTS[DEFAULT_RECIPE].items() if on]
        return ["--arch", "transformer"] + common + blocks
    positions = everywhere_allowed(name)
    flags = ["--encoder-self-attention", positions["encoder_self"], "--decoder-self-attention",
             positions["decoder_self"], "--decoder-cross-attention", positions["decoder_cross"]]
    return ["--arch", "transformer_eatt"] + common + flags + ["--max-source-positions", "512",
                                                               "--max-target-positions", "512"]


def criterion(name: str) -> str:
    """The auxiliary-loss criterion where the variant has one (adaptive span), the plain one otherwise."""
    from ..attention import get_attention_class
    from ..criterions.label_smoothed_cross_entropy_with_aux import NAME as AUX_CRITERION

    if name != "transformer" and get_attention_class(name).has_auxiliary_loss(argparse.Namespace()):
        return AUX_CRITERION
    return "label_smoothed_cross_entropy"


def run_worker(spec: Dict) -> Dict:
    proc = subprocess.run([sys.executable, "-m", "fairseq_eatt.perf.worker", json.dumps(spec)], capture_output=True,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"[bench] {spec['mode']} of {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def merge_rounds(results: List[Dict], reference: List[Dict], key: str) -> Dict:
    """One model's measurements over all rounds: every repeat, the median memory, and its throughput ratio to the
    stock transformer within each round (``ratio_per_round``)."""
    merged = dict(results[0])
    merged[key] = [v for r in results for v in r[key]]
    for field in ("peak_rss_mib", "working_rss_mib", "rss_before_mib", "peak_gpu_mib"):
        if field in results[0]:
            merged[field] = statistics.median(r[field] for r in results)
    if "mean_output_tokens" in results[0]:
        merged["mean_output_tokens"] = [v for r in results for v in r["mean_output_tokens"]]
    merged["ratio_per_round"] = [statistics.median(r[key]) / statistics.median(ref[key])
                                 for r, ref in zip(results, reference)]
    merged["rounds"] = len(results)
    return merged


PARTS = ("train", "generate", "scores", "lengths")


def merge_previous(report: Dict, args):
    """Fill the parts this run skipped from the existing OUT.json, saying which came from which run."""
    path = args.out + ".json"
    if not os.path.exists(path):
        raise SystemExit(f"fairseq-eatt-bench: --merge: {path} does not exist (nothing to merge with)")
    with open(path, encoding="utf-8") as handle:
        previous = json.load(handle)
    here = {"command": report["command"], "date": report["date"], "seconds": report["seconds"]}
    before = {"command": previous["command"], "date": previous["date"], "seconds": previous.get("seconds")}
    provenance = {}
    for part in PARTS:
        if part in args.skip_set and previous.get(part):
            report[part] = previous[part]
            provenance[part] = previous.get("provenance", {}).get(part, before)
        elif part not in args.skip_set:
            provenance[part] = here
    if any(provenance.get(part) is not here for part in ("train", "generate") if part in provenance):
        report["preset_values"] = previous.get("preset_values", report["preset_values"])
    report["provenance"] = provenance


def default_data(args) -> str:
    from ..data.corpora import CORPORA
    from ..data.prepare import prepare

    return prepare(CORPORA["multi30k-en-de"], os.path.join(args.workdir, "multi30k-en-de"),
                   local_dir=os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                       os.path.abspath(__file__)))), "data_prep", "multi30k"), merges=8000)["data_bin"]


def timed(fn, repeats: int, sync) -> List[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


class PeakLiveTensors(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of tensors alive at once among those created by operations (forward and backward), and the
    largest single tensor: a CPU stand-in for an allocator's peak."""

    def __init__(self):
        super().__init__()
        self.live: Dict[int, List[int]] = {}
        self.current = self.peak = self.largest = 0

    def _release(self, key: int):
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.largest = max(self.largest, t.numel())
                key = t.untyped_storage().data_ptr()
                if key == 0:
                    continue
                if key not in self.live:
                    self.live[key] = [t.untyped_storage().nbytes(), 0]
                    self.current += self.live[key][0]
                    self.peak = max(self.peak, self.current)
                self.live[key][1] += 1
                weakref.finalize(t, self._release, key)
        return out


def score_op(args, preset: Dict) -> List[Dict]:
    """E-ATT's L1 scores (compiled kernel and reference) against dot-product scores, forward + backward."""
    import os as _os

    from ..attention import functional as F
    from ..attention.backends import SETTING

    device = torch.device("cuda" if args.gpu else "cpu")
    sync = torch.cuda.synchronize if args.gpu else (lambda: None)
    repeats = args.op_repeats
    rows = []
    for length in preset["lengths"]:
        n, d = preset["op_n"], 64
        dtype = torch.float16 if getattr(args, "fp16", False) else torch.float32
        q = torch.randn(n, length, d, device=device, dtype=dtype)
        k = torch.randn(n, length, d, device=device, dtype=dtype)
        g = torch.randn(n, length, length, device=device, dtype=dtype)
        g32 = g.float()  # the L1 scores are float32 whatever the inputs

        def dot():
            qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
            torch.bmm(qq, kk.transpose(1, 2)).backward(g)

        def l1(choice):
            def run():
                _os.environ[SETTING] = BENCH_BACKENDS[choice]
                qq, kk = q.clone().requires_grad_(), k.clone().requires_grad_()
                F.pairwise_l1(qq, kk).backward(g32)
            return run

        row = {"length": length, "n": n, "head_dim": d, "dot_s": spread(timed(dot, repeats, sync))}
        previous = _os.environ.get(SETTING)
        try:
            implementations = l1_implementations(args.gpu)
            for choice in implementations:
                reps = repeats if choice != "reference" or length <= 256 else 1  # the reference is slow at 512
                row[f"l1_{choice}_s"] = spread(timed(l1(choice), reps, sync))
                with PeakLiveTensors() as probe:
                    l1(choice)()
                row[f"l1_{choice}_largest_vs_5d"] = probe.largest / (n * length * length * d)
        finally:
            if previous is None:
                _os.environ.pop(SETTING, None)
            else:
                _os.environ[SETTING] = previous
        rows.append(row)
        log(f"scores L={length}: dot {row['dot_s']['median'] * 1e3:.2f} ms, L1 "
            + ", ".join(f"{c} {row[f'l1_{c}_s']['median'] * 1e3:.2f} ms" for c in implementations))
    return rows


# the row labels of the L1 benchmark (kept in its results) and the backend each measures
BENCH_BACKENDS = {"fast": "cpp_l1", "triton": "triton_l1", "reference": "reference"}


def l1_implementations(gpu: bool) -> List[str]:
    """The L1 score implementations measured: the compiled kernel on a CPU, the Triton kernels on a GPU (each when
    available), and the reference."""
    from ..attention import functional as F
    from ..attention.eatt.triton_kernels import triton_error

    if gpu:
        return (["triton"] if triton_error() is None else []) + ["reference"]
    return (["fast"] if F.l1_kernel() is not None else []) + ["reference"]


def length_scaling(args, preset: Dict, variants: List[str]) -> Dict[str, List[Dict]]:
    """One self-attention layer of each variant: forward + backward time and peak live tensor memory per length."""
    from ..attention import ENCODER_SELF, build_attention, get_attention_class

    device = torch.device("cuda" if args.gpu else "cpu")
    sync = torch.cuda.synchronize if args.gpu else (lambda: None)
    batch, dim, heads = 8, preset["dim"], preset["heads"]
    ns = argparse.Namespace(max_source_positions=max(preset["lengths"]),
                            max_target_positions=max(preset["lengths"]), attention_max_length=None)
    out: Dict[str, List[Dict]] = {}
    for name in variants:
        cls = get_attention_class(name)
        if ENCODER_SELF not in cls.capabilities.allowed_positions():
            continue
        torch.manual_seed(0)
        module = build_attention(name, dim, heads, ENCODER_SELF, args=ns).to(device)
        rows = []
        for length in preset["lengths"]:
            x = torch.randn(length, batch, dim, device=device)

            def step():
                xx = x.clone().requires_grad_()
                y, _ = module(xx, xx, xx, need_weights=False)
                y.sum().backward()

            times = timed(step, args.op_repeats, sync)
            if args.gpu:
                torch.cuda.reset_peak_memory_stats()
                step()
                peak = torch.cuda.max_memory_allocated()
            else:
                with PeakLiveTensors() as probe:
                    step()
                peak = probe.peak
            rows.append({"length": length, "seconds": spread(times), "peak_bytes": peak})
        out[name] = rows
        log(f"length scaling {name}: " + ", ".join(f"L={r['length']} {r['seconds']['median'] * 1e3:.1f} ms "
                                                     f"{r['peak_bytes'] / 2**20:.1f} MiB" for r in rows))
    return out


def run(args, command: str) -> Dict:
    """Measure what ``args`` (fairseq-eatt-bench's parsed flags) choose; writes OUT.md and OUT.json."""
    from ..provenance import provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = dict(PRESETS[args.preset])
    if args.repeats:
        preset["repeats"] = args.repeats
    if args.rounds:
        preset["rounds"] = args.rounds
    started = time.time()
    data = args.data or default_data(args)
    models = ["transformer", "vanilla"] + [v for v in args.variant_list if v != "vanilla"]
    report = {**provenance(command, threads=True), "preset": args.preset,
              "preset_values": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()},
              "data": data, "gpu": args.gpu, "fp16": bool(getattr(args, "fp16", False)), "train": {}, "generate": {}}
    base = {"data": data, "src": args.source_lang, "tgt": args.target_lang, "max_tokens": preset["max_tokens"],
            "gpu": args.gpu, "fp16": report["fp16"], "threads": args.threads, "warmup": preset["warmup"],
            "steps": preset["steps"],
            "repeats": preset["repeats"], "beam": 4, "gen_subset": args.gen_subset,
            "gen_batches": preset["gen_batches"], "gen_batch_size": preset["gen_batch_size"]}
    for mode in ("train", "generate"):
        if mode in args.skip_set:
            continue
        key = "target_tokens_per_s" if mode == "train" else "sentences_per_s"
        rounds: Dict[str, List[Dict]] = {name: [] for name in models}
        for r in range(preset["rounds"]):
            for name in (models if r % 2 == 0 else models[::-1]):  # alternate the order against drift
                spec = dict(base, mode=mode, name=name, model_args=model_args(name, preset),
                            criterion=criterion(name))
                result = run_worker(spec)
                rounds[name].append(result)
                log(f"{mode} {name} (round {r + 1}/{preset['rounds']}): {statistics.median(result[key]):.1f} "
                    f"{key.replace('_', ' ')}, peak RSS {result['peak_rss_mib']:.0f} MiB")
        report[mode] = {name: merge_rounds(rounds[name], rounds["transformer"], key) for name in models}
    if "scores" not in args.skip_set:
        report["scores"] = score_op(args, preset)
    if "lengths" not in args.skip_set:
        report["lengths"] = length_scaling(args, preset, ["vanilla"] + [v for v in args.variant_list
                                                                        if v != "vanilla"])
    report["seconds"] = round(time.time() - started, 1)
    if args.merge:
        merge_previous(report, args)
    from .report import write

    write(report, args.out)
    log(f"wrote {args.out}.md and {args.out}.json ({report['seconds']} s)")

    return report

"""The ONNX Runtime way of fairseq-eatt-deploy-bench, run as a file (``python ort_bench_worker.py SPEC OUT``) so that
its process imports what a deployment imports (numpy, onnxruntime, the exported ort_translate.py) and neither torch
nor fairseq: its peak memory is the runtime's own."""
import importlib.util
import json
import os
import sys
import time


def peak_mib() -> float:
    """The process's peak resident set (VmHWM: kept per address space, so not inherited from the parent)."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(spec_path: str, out_path: str):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    export_dir = spec["export_dir"]
    loader = importlib.util.spec_from_file_location("ort_translate", os.path.join(export_dir, "ort_translate.py"))
    runtime = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(runtime)
    translator = runtime.Translator(export_dir, threads=1)
    times, hyps = [], []
    for number, line in enumerate(spec["sources"], 1):
        ids = translator.source_ids(line.split(), number)
        start = time.perf_counter()
        best = translator.translate_ids([ids], spec["beam"], spec["lenpen"], 0.0, spec["max_len_b"])[0]
        times.append(time.perf_counter() - start)
        hyps.append(translator.tgt_dict.decode(best[0][0]) if best else "")
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        size = sum(json.load(handle)["files"].values())
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump({"hypotheses": hyps, "seconds": times, "bytes": size, "peak_mib": peak_mib()}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""The ways of fairseq-eatt-deploy-bench that run without torch, each run as a file
(``python runtime_bench_worker.py ENGINE SPEC OUT``) so that its process imports what a deployment imports and neither
torch nor fairseq: its peak memory is the runtime's own.

ENGINE: ``onnxruntime`` / ``onnxruntime-int8`` (a fairseq-eatt-export directory, its float32 or int8 graphs and its
ort_translate.py: numpy and onnxruntime) or
``ctranslate2-float32`` / ``ctranslate2-int8`` (a CTranslate2 model directory: ctranslate2 only).

Each translates the sources one at a time (batch 1, time per sentence) and in consecutive chunks of each of the
spec's larger batch sizes (time per chunk), with one thread."""
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


def timed(translate, sources, batch_sizes):
    """Batch 1: (hypotheses, seconds per sentence); each larger batch size: the seconds of each chunk.
    ``translate(lines, first)``: ``first`` is the line number of lines[0] (for its errors)."""
    times, hyps = [], []
    for number, line in enumerate(sources, 1):
        start = time.perf_counter()
        hyps.append(translate([line], number)[0])
        times.append(time.perf_counter() - start)
    batched = {}
    for size in [b for b in batch_sizes if b > 1]:
        chunks = []
        for first in range(0, len(sources), size):
            start = time.perf_counter()
            translate(sources[first:first + size], first + 1)
            chunks.append(time.perf_counter() - start)
        batched[str(size)] = chunks
    return hyps, times, batched


def onnxruntime_way(spec, precision="float32"):
    export_dir = spec["export_dir"]
    loader = importlib.util.spec_from_file_location("ort_translate", os.path.join(export_dir, "ort_translate.py"))
    runtime = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(runtime)
    # an export written before the int8 graphs has a translator without ``precision``: float32 needs none
    translator = runtime.Translator(export_dir, threads=1, **({"precision": precision} if precision != "float32"
                                                              else {}))

    def translate(lines, first=1):
        ids = [translator.source_ids(line.split(), number) for number, line in enumerate(lines, first)]
        best = translator.translate_ids(ids, spec["beam"], spec["lenpen"], 0.0, spec["max_len_b"])
        return [translator.tgt_dict.decode(hyps[0][0]) if hyps else "" for hyps in best]

    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        size = sum(json.load(handle)["int8_files" if precision == "int8" else "files"].values())
    return translate, size


def ctranslate2_way(spec, compute_type):
    import ctranslate2

    model_dir = spec["ctranslate2_dirs"][compute_type]
    translator = ctranslate2.Translator(model_dir, device="cpu", compute_type=compute_type, inter_threads=1,
                                        intra_threads=1)

    def translate(lines, first=1):
        results = translator.translate_batch([line.split() for line in lines], beam_size=spec["beam"],
                                             length_penalty=spec["lenpen"], max_decoding_length=spec["max_len_b"],
                                             max_batch_size=len(lines))
        return [" ".join(r.hypotheses[0]) for r in results]

    size = sum(os.path.getsize(os.path.join(model_dir, name)) for name in os.listdir(model_dir))
    return translate, size


def main(engine: str, spec_path: str, out_path: str):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    if engine in ("onnxruntime", "onnxruntime-int8"):
        translate, size = onnxruntime_way(spec, "int8" if engine.endswith("int8") else "float32")
    elif engine.startswith("ctranslate2-"):
        translate, size = ctranslate2_way(spec, engine.split("-", 1)[1])
    else:
        raise SystemExit(f"unknown engine {engine!r}: onnxruntime, onnxruntime-int8, ctranslate2-float32 or "
                         f"ctranslate2-int8")
    hyps, times, batched = timed(translate, spec["sources"], spec.get("batch_sizes", [1]))
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump({"hypotheses": hyps, "seconds": times, "batch_seconds": batched, "bytes": size,
                   "peak_mib": peak_mib()}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])

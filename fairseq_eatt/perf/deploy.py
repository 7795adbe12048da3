"""One checkpoint deployed four ways, compared on a test set at batch 1 (one sentence at a time, as on an edge
device): PyTorch eager (float32), PyTorch int8 (dynamic quantization of nn.Linear), TorchScript (fairseq's
SequenceGenerator scripted) and ONNX Runtime (``fairseq-eatt-export`` with its ``ort_translate.py``).

Each runs in a process of its own with one thread, so that peak memory (the process's maximum resident set) and time
are its own. Reported per way: size on disk, mean and median time per sentence, peak memory, sacreBLEU against the
references and against eager's translations, and how many translations are identical to eager's."""
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from ..provenance import provenance
from ..reports import renderer

WAYS = ("eager", "int8", "torchscript", "onnxruntime")


class DeployBenchError(RuntimeError):
    pass


def _peak_mib() -> float:
    from ..deploy.ort_bench_worker import peak_mib

    return peak_mib()


def _torch_worker(way: str, data: str, checkpoint: str, sources: List[str], beam: int, lenpen: float,
                  max_len_b: int) -> Dict:
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    from ..deploy.inference import convert, model_bytes
    from ..fairseq_tools import load_checkpoint

    torch.set_num_threads(1)
    model, task = load_checkpoint(checkpoint, data)
    if way == "int8":
        model = convert(model, "int8", "float32")
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, len_penalty=lenpen,
                                  max_len_b=max_len_b)
    size = model_bytes(model)
    if way == "torchscript":
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(generator), buffer)
        size = buffer.tell()
        buffer.seek(0)
        generator = torch.jit.load(buffer)
    d, times, hyps = task.source_dictionary, [], []
    for line in sources:
        ids = torch.tensor([[d.index(w) for w in line.split()] + [d.eos()]])
        sample = {"net_input": {"src_tokens": ids, "src_lengths": torch.tensor([ids.size(1)])}}
        start = time.perf_counter()
        with torch.no_grad():
            best = generator.forward(sample)[0][0]
        times.append(time.perf_counter() - start)
        hyps.append(task.target_dictionary.string(best["tokens"]))
    return {"hypotheses": hyps, "seconds": times, "bytes": size}


def worker(argv: Sequence[str]):
    """``python -m fairseq_eatt.perf.deploy WAY SPEC.json OUT.json``: one way, in this process."""
    way, spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    result = _torch_worker(way, spec["data"], spec["checkpoint"], spec["sources"], spec["beam"], spec["lenpen"],
                           spec["max_len_b"])
    result["peak_mib"] = _peak_mib()
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def measure(data: str, checkpoint: str, export_dir: str, sources: List[str], references: List[str],
            detokenize, beam: int = 4, lenpen: float = 1.0, max_len_b: int = 200,
            ways: Sequence[str] = WAYS) -> Dict:
    """Every way on ``sources`` (tokenized, with BPE); ``detokenize`` turns a hypothesis into text for sacreBLEU."""
    import sacrebleu

    if "eager" not in ways:
        raise DeployBenchError("the comparison needs the eager way (the reference for agreement)")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"data": data, "checkpoint": checkpoint, "export_dir": export_dir, "sources": sources, "beam": beam,
                "lenpen": lenpen, "max_len_b": max_len_b}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for way in ways:
            out = os.path.join(tmp, f"{way}.json")
            if way == "onnxruntime":  # run as a file: its process imports neither torch nor fairseq
                from ..deploy import ort_bench_worker

                command = [sys.executable, ort_bench_worker.__file__, spec_path, out]
            else:
                command = [sys.executable, "-m", "fairseq_eatt.perf.deploy", way, spec_path, out]
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise DeployBenchError(f"{way}: the worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            with open(out, encoding="utf-8") as handle:
                results[way] = json.load(handle)
    eager_text = [detokenize(h) for h in results["eager"]["hypotheses"]]
    metric = sacrebleu.BLEU()
    rows = {}
    for way, r in results.items():
        text = [detokenize(h) for h in r["hypotheses"]]
        bleu = metric.corpus_score(text, [references])
        rows[way] = {
            "size_mib": round(r["bytes"] / 2**20, 2),
            "ms_per_sentence_mean": round(1000 * statistics.mean(r["seconds"]), 1),
            "ms_per_sentence_median": round(1000 * statistics.median(r["seconds"]), 1),
            "peak_mib": round(r["peak_mib"], 1),
            "bleu": round(bleu.score, 2),
            "bleu_vs_eager": round(sacrebleu.BLEU().corpus_score(text, [eager_text]).score, 2),
            "identical_to_eager": sum(a == b for a, b in zip(text, eager_text)),
        }
    return {"sentences": len(sources), "beam": beam, "lenpen": lenpen, "max_len_b": max_len_b, "threads": 1,
            "sacrebleu_signature": str(metric.get_signature()), "ways": rows}


def record(command: str, data: str, checkpoint: str, export_dir: str, measurements: Dict,
           note: Optional[str] = None) -> Dict:
    return {"kind": "deploy", "data": data, "checkpoint": checkpoint, "export_dir": export_dir, "note": note,
            "measurements": measurements, **provenance(command)}


@renderer("deploy")
def markdown(rec: Dict) -> str:
    m = rec["measurements"]
    lines = [f"# One checkpoint deployed four ways ({m['sentences']} test sentences, batch 1)", "",
             f"Made by `{rec['command']}`" + (f" ({rec['note']})" if rec.get("note") else "") + f". Checkpoint "
             f"`{rec['checkpoint']}`. Machine: {rec['machine'].get('cpu')}; date, commit and versions: the JSON file "
             "beside this one.", "",
             f"One sentence at a time, beam {m['beam']}, lenpen {m['lenpen']}, one thread, each way in a process of "
             "its own. Size: what is loaded (eager: the float32 state dict; int8: the quantized state dict; "
             "TorchScript: the scripted SequenceGenerator; ONNX Runtime: the graphs and their weights). Peak memory: "
             "the process's maximum resident set (VmHWM: Python, libraries and model; the PyTorch ways import torch "
             "and fairseq, the ONNX Runtime way only numpy and onnxruntime). BLEU: sacreBLEU "
             f"({m['sacrebleu_signature']}) of the detokenized output against the references, and against eager's "
             "own translations.", "",
             "| way | size (MiB) | ms / sentence (mean) | ms / sentence (median) | peak memory (MiB) | BLEU | "
             "BLEU vs eager | identical to eager |", "|---|---|---|---|---|---|---|---|"]
    for way, r in m["ways"].items():
        lines.append(f"| {way} | {r['size_mib']} | {r['ms_per_sentence_mean']} | {r['ms_per_sentence_median']} | "
                     f"{r['peak_mib']} | {r['bleu']} | {r['bleu_vs_eager']} | {r['identical_to_eager']} / "
                     f"{m['sentences']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    worker(sys.argv[1:])

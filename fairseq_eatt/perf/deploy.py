"""One checkpoint deployed four ways, compared on a test set at batch 1 (one sentence at a time, as on an edge
device) and at larger batch sizes: PyTorch eager (float32), PyTorch int8 (dynamic quantization of nn.Linear),
TorchScript (fairseq's SequenceGenerator scripted) and ONNX Runtime (``fairseq-eatt-export`` with its
``ort_translate.py``); beside them, the anchor: a vanilla transformer of the same shape through CTranslate2
(float32 and int8), and each way's time as a ratio to CTranslate2 int8's.

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
from typing import Dict, List, Optional, Sequence

from ..provenance import provenance
from ..reports import renderer

WAYS = ("eager", "int8", "torchscript", "onnxruntime", "onnxruntime-int8")


class DeployBenchError(RuntimeError):
    pass


def _peak_mib() -> float:
    from ..deploy.runtime_bench_worker import peak_mib

    return peak_mib()


def _torch_worker(way: str, data: str, checkpoint: str, sources: List[str], beam: int, lenpen: float,
                  max_len_b: int, batch_sizes: Sequence[int] = (1,)) -> Dict:
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
    from fairseq.data import data_utils

    from ..deploy.runtime_bench_worker import timed

    d = task.source_dictionary

    def translate(lines, first=1):
        ids = [torch.tensor([d.index(w) for w in line.split()] + [d.eos()]) for line in lines]
        src = data_utils.collate_tokens(ids, d.pad(), left_pad=True)  # fairseq's left-padded sources
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(t) for t in ids])}}
        with torch.no_grad():
            out = generator.forward(sample)
        return [task.target_dictionary.string(hyps[0]["tokens"]) for hyps in out]

    hyps, times, batched = timed(translate, sources, batch_sizes)
    return {"hypotheses": hyps, "seconds": times, "batch_seconds": batched, "bytes": size}


def worker(argv: Sequence[str]):
    """``python -m fairseq_eatt.perf.deploy WAY SPEC.json OUT.json``: one way, in this process."""
    way, spec_path, out_path = argv
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    result = _torch_worker(way, spec["data"], spec["checkpoint"], spec["sources"], spec["beam"], spec["lenpen"],
                           spec["max_len_b"], spec.get("batch_sizes", [1]))
    result["peak_mib"] = _peak_mib()
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


ANCHOR_WAYS = ("ctranslate2-float32", "ctranslate2-int8")
ANCHOR = "ctranslate2-int8"  # the way every other is divided by


def measure(data: str, checkpoint: str, export_dir: str, sources: List[str], references: List[str],
            detokenize, beam: int = 4, lenpen: float = 1.0, max_len_b: int = 200,
            ways: Sequence[str] = WAYS, anchor_dirs: Optional[Dict[str, str]] = None,
            batch_sizes: Sequence[int] = (1,)) -> Dict:
    """Every way on ``sources`` (tokenized, with BPE); ``detokenize`` turns a hypothesis into text for sacreBLEU.
    ``anchor_dirs``: {compute type: CTranslate2 model directory} of the vanilla anchor, measured beside the ways;
    ``batch_sizes``: besides batch 1, the sources are translated in consecutive chunks of each larger size."""
    import sacrebleu

    if "eager" not in ways:
        raise DeployBenchError("the comparison needs the eager way (the reference for agreement)")
    if 1 not in batch_sizes:
        raise DeployBenchError("the batch sizes must include 1 (the hypotheses scored come from batch 1)")
    anchors = [f"ctranslate2-{q}" for q in (anchor_dirs or {})]
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        if not json.load(handle).get("int8_files"):  # an export written before the int8 graphs existed
            ways = [w for w in ways if w != "onnxruntime-int8"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"data": data, "checkpoint": checkpoint, "export_dir": export_dir, "sources": sources, "beam": beam,
                "lenpen": lenpen, "max_len_b": max_len_b, "batch_sizes": list(batch_sizes),
                "ctranslate2_dirs": anchor_dirs or {}}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump(spec, handle)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for way in list(ways) + anchors:
            out = os.path.join(tmp, f"{way}.json")
            if way.startswith("onnxruntime") or way in ANCHOR_WAYS:  # as a file: no torch, no fairseq imported
                from ..deploy import runtime_bench_worker

                command = [sys.executable, runtime_bench_worker.__file__, way, spec_path, out]
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
        same_model = way not in ANCHOR_WAYS  # the anchor is another model: agreement with eager means nothing
        rows[way] = {
            "size_mib": round(r["bytes"] / 2**20, 2),
            "ms_per_sentence_mean": round(1000 * statistics.mean(r["seconds"]), 1),
            "ms_per_sentence_median": round(1000 * statistics.median(r["seconds"]), 1),
            "peak_mib": round(r["peak_mib"], 1),
            "bleu": round(bleu.score, 2),
            "bleu_vs_eager": round(sacrebleu.BLEU().corpus_score(text, [eager_text]).score, 2) if same_model else None,
            "identical_to_eager": sum(a == b for a, b in zip(text, eager_text)) if same_model else None,
        }
        for size, chunks in r.get("batch_seconds", {}).items():
            rows[way][f"ms_per_sentence_batch{size}"] = round(1000 * sum(chunks) / len(sources), 1)
    if ANCHOR in results:  # ratios of the unrounded times
        def seconds(way, size):
            r = results[way]
            return sum(r["seconds"]) if size == 1 else sum(r["batch_seconds"][str(size)])

        for way, row in rows.items():
            for size in sorted(set(batch_sizes)):
                row[f"ratio_to_anchor_batch{size}"] = round(seconds(way, size) / max(seconds(ANCHOR, size), 1e-12), 2)
    out = {"sentences": len(sources), "beam": beam, "lenpen": lenpen, "max_len_b": max_len_b, "threads": 1,
           "sacrebleu_signature": str(metric.get_signature()), "ways": rows}
    if len(set(batch_sizes)) > 1 or anchor_dirs is not None:
        out["batch_sizes"] = sorted(set(batch_sizes))
        out["anchor"] = ANCHOR if ANCHOR in rows else None
    return out


def record(command: str, data: str, checkpoint: str, export_dir: str, measurements: Dict,
           note: Optional[str] = None, anchor: Optional[Dict] = None) -> Dict:
    """``anchor``: {"checkpoint", "data"} of the vanilla model CTranslate2 ran, or {"missing": why} where it could
    not run."""
    extra = {"anchor": anchor} if anchor is not None else {}
    return {"kind": "deploy", "data": data, "checkpoint": checkpoint, "export_dir": export_dir, "note": note,
            "measurements": measurements, **extra, **provenance(command)}


def _cell(value, suffix="") -> str:
    return "-" if value is None else f"{value}{suffix}"


def _anchored_table(rec: Dict) -> List[str]:
    """The table of a record with larger batch sizes and/or the CTranslate2 anchor."""
    m = rec["measurements"]
    larger = [b for b in m.get("batch_sizes", [1]) if b > 1]
    anchor = m.get("anchor")
    head = ["way", "size (MiB)", "ms / sentence, batch 1 (mean)"] + [f"ms / sentence, batch {b}" for b in larger]
    head += ["peak memory (MiB)", "BLEU", "BLEU vs eager", "identical to eager"]
    if anchor:
        head += [f"x {anchor}, batch {b}" for b in [1] + larger]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for way, r in m["ways"].items():
        identical = "-" if r["identical_to_eager"] is None else f"{r['identical_to_eager']} / {m['sentences']}"
        cells = [way, str(r["size_mib"]), str(r["ms_per_sentence_mean"])]
        cells += [_cell(r.get(f"ms_per_sentence_batch{b}")) for b in larger]
        cells += [str(r["peak_mib"]), str(r["bleu"]), _cell(r["bleu_vs_eager"]), identical]
        if anchor:
            cells += [_cell(r.get(f"ratio_to_anchor_batch{b}")) for b in [1] + larger]
        lines.append("| " + " | ".join(cells) + " |")
    source = rec.get("anchor") or {}
    if source.get("missing"):
        lines += ["", f"CTranslate2 anchor not measured: {source['missing']}"]
    elif source.get("checkpoint"):
        lines += ["", f"Anchor: the stock fairseq transformer `{source['checkpoint']}` converted by CTranslate2's "
                      f"fairseq converter (float32, int8) and decoded by CTranslate2 with one thread; its BLEU is "
                      f"another model's, so it has no agreement with eager. x {anchor}: time per sentence divided "
                      f"by CTranslate2 int8's at the same batch size."]
    return lines


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
    if "batch_sizes" in m or rec.get("anchor"):  # larger batches (consecutive test sentences) or the anchor
        sizes = ", ".join(str(b) for b in m.get("batch_sizes", [1]))
        against = ", against CTranslate2" if m.get("anchor") else ""
        lines[0] = f"# One checkpoint deployed every way{against} ({m['sentences']} test sentences, batch {sizes})"
        lines[4] = lines[4].replace("One sentence at a time, ", f"Batch 1 (one sentence at a time) and consecutive "
                                    f"chunks of the larger batch sizes ({sizes}), ")
        return "\n".join(lines[:-2] + _anchored_table(rec)) + "\n"
    for way, r in m["ways"].items():
        lines.append(f"| {way} | {r['size_mib']} | {r['ms_per_sentence_mean']} | {r['ms_per_sentence_median']} | "
                     f"{r['peak_mib']} | {r['bleu']} | {r['bleu_vs_eager']} | {r['identical_to_eager']} / "
                     f"{m['sentences']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    worker(sys.argv[1:])

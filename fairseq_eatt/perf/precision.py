"""float32, int8 and bfloat16 inference of one checkpoint, compared: model size, BLEU against the references,
BLEU against float32's own translations (how much the reduced precision changes them) and decoding time.

The record (JSON) holds every measurement with its provenance; the markdown is rendered from it alone."""
import os
import re
import shlex
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from ..fairseq_tools import ToolFailed, generate_scores, generate_to, read_generate_output
from ..provenance import provenance
from ..reports import renderer

MODES = {"float32": [], "int8": ["--quantize", "int8"], "bfloat16": ["--inference-dtype", "bfloat16"]}
SIZE = re.compile(r"model size ([0-9.]+) MiB \(float32\) -> ([0-9.]+) MiB")
TIMING = re.compile(r"Translated ([0-9,]+) sentences \(([0-9,]+) tokens\) in ([0-9.]+)s")


class PrecisionError(RuntimeError):
    pass


def generate_command(data: str, checkpoint: str, flags: Sequence[str], mode: str) -> List[str]:
    return [sys.executable, "-m", "fairseq_eatt.cli.generate", data, "--path", checkpoint, *flags, *MODES[mode]]


def run_mode(data: str, checkpoint: str, flags: Sequence[str], mode: str, workdir: str) -> Dict:
    out = os.path.join(workdir, f"{mode}.out")
    log = os.path.join(workdir, f"{mode}.log")
    start = time.time()
    try:
        generate_to(out, generate_command(data, checkpoint, flags, mode), log_path=log, echo=False)
    except ToolFailed as err:
        raise PrecisionError(f"{mode}: {err}") from None
    wall = time.time() - start
    with open(out, encoding="utf-8") as handle:
        stdout = handle.read()
    with open(log, encoding="utf-8") as handle:
        logged = handle.read()
    hyps = read_generate_output(stdout.splitlines())
    refs = read_generate_output(stdout.splitlines(), "T")
    if not hyps or sorted(hyps) != sorted(refs):
        raise PrecisionError(f"fairseq-eatt-generate ({mode}) printed {len(hyps)} translations for {len(refs)} "
                             f"references")
    ids = sorted(hyps)
    both = stdout + logged  # fairseq-generate logs to its stdout
    timing, size = TIMING.search(both), SIZE.search(both)
    return {"hypotheses": [hyps[i] for i in ids], "references": [refs[i] for i in ids],
            "fairseq_bleu": generate_scores(stdout)["bleu"],
            "model_mib": float(size.group(2)) if size else None,
            "float32_model_mib": float(size.group(1)) if size else None,
            "decode_seconds": float(timing.group(3)) if timing else None, "wall_seconds": round(wall, 1)}


def compare(data: str, checkpoint: str, flags: Sequence[str], modes: Sequence[str] = tuple(MODES)) -> Dict:
    """Decode with each mode; sacreBLEU of each against the references and against float32's translations."""
    import sacrebleu

    if "float32" not in modes:
        raise ValueError("the comparison needs float32, the reference of the other modes")
    with tempfile.TemporaryDirectory() as workdir:
        runs = {mode: run_mode(data, checkpoint, flags, mode, workdir) for mode in modes}
    base = runs["float32"]
    metric = sacrebleu.BLEU()
    rows = {}
    for mode, r in runs.items():
        vs_refs = metric.corpus_score(r["hypotheses"], [r["references"]])
        vs_float32 = metric.corpus_score(r["hypotheses"], [base["hypotheses"]])
        rows[mode] = {"bleu": round(vs_refs.score, 2), "bleu_vs_float32": round(vs_float32.score, 2),
                      "identical_to_float32": sum(a == b for a, b in zip(r["hypotheses"], base["hypotheses"])),
                      "distinct_hypotheses": len(set(r["hypotheses"])),
                      "model_mib": runs_size(runs) if mode == "float32" else r["model_mib"],
                      "fairseq_bleu": r["fairseq_bleu"], "decode_seconds": r["decode_seconds"],
                      "wall_seconds": r["wall_seconds"]}
    return {"sentences": len(base["hypotheses"]), "modes": rows,
            "signature": str(metric.get_signature())}


def runs_size(runs: Dict) -> Optional[float]:
    """float32's size, as the reduced-precision runs report it (float32 itself prints no conversion)."""
    sizes = [r["float32_model_mib"] for r in runs.values() if r["float32_model_mib"]]
    return sizes[0] if sizes else None


def record(command: str, data: str, checkpoint: str, flags: Sequence[str], result: Dict,
           note: Optional[str] = None) -> Dict:
    return {"kind": "precision", "data": data, "checkpoint": checkpoint, "generate_flags": list(flags),
            "note": note, **result, **provenance(command)}


@renderer("precision")
def markdown(rec: Dict) -> str:
    modes = rec["modes"]
    base = modes["float32"]["model_mib"]
    lines = ["# float32, int8 and bfloat16 inference of one checkpoint", "",
             f"Made by `{rec['command']}`" + (f" ({rec['note']})" if rec.get("note") else "") + ". Checkpoint "
             f"`{rec['checkpoint']}`, {rec['sentences']} sentences; fairseq-generate flags "
             f"`{shlex.join(rec['generate_flags'])}`. Date, machine and commit: the JSON file beside this one.", "",
             "| inference | model size (MiB) | BLEU | BLEU against float32's translations | sentences identical to "
             "float32's | decoding time (s) |", "|---|---|---|---|---|---|"]
    for mode in [m for m in MODES if m in modes]:  # the record's key order may have been sorted
        row = modes[mode]
        size = row["model_mib"]
        shown = "-" if size is None else f"{size:.2f}" + (f" ({100 * size / base:.1f}%)" if base and mode != "float32"
                                                          else "")
        seconds = "-" if row["decode_seconds"] is None else f"{row['decode_seconds']:.1f}"
        lines.append(f"| {mode} | {shown} | {row['bleu']:.2f} | {row['bleu_vs_float32']:.2f} | "
                     f"{row['identical_to_float32']} / {rec['sentences']} | {seconds} |")
    lines += ["", f"BLEU: sacreBLEU ({rec['signature']}) on the detokenized translations fairseq-generate prints "
                  f"(D lines) against its references (T lines). Decoding time: fairseq's own count, one run each on "
                  f"the machine named in the JSON; indicative, not a benchmark."]
    return "\n".join(lines) + "\n"

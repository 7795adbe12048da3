"""Sequence-level knowledge distillation with halved model dimensions (the paper's Figure 1); the stages are
described in fairseq-eatt-distill's help (fairseq_eatt/cli/distill.py)."""
import json
import os
import shlex
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..data.text import atomic_output
from ..fairseq_tools import (
    ToolFailed,
    fairseq_command,
    generate_scores,
    generate_to,
    read_generate_output,
    run_tool,
)
from ..provenance import PLUGIN_DIR
from .runner import training_finished


@dataclass
class DistillConfig:
    """What a distillation needs; the defaults are fairseq-eatt-distill's."""

    data: str  # the teacher's binarized data directory
    teacher: str  # teacher checkpoint
    workdir: str
    source_lang: str
    target_lang: str
    student_dims: str = "512,256,128,64"
    student_layers: int = 6
    max_heads: int = 8
    attention: str = "eatt"
    teacher_beam: int = 4
    beam: int = 4
    lenpen: float = 1.0
    teacher_max_len_a: float = 1.5
    teacher_max_len_b: int = 10
    batch_size: int = 128
    train_args: str = ("--optimizer adam --adam-betas (0.9,0.98) --lr 0.001 --lr-scheduler eatt --criterion "
                       "label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 --max-update 50000 "
                       "--share-all-embeddings --dropout 0.3")
    post_process: str = "subword_nmt"
    distilled_dir: Optional[str] = None
    # a name of the teacher that outlives its checkpoint (run name and config hash); default: the checkpoint's path
    teacher_id: Optional[str] = None
    # a folder where the translations are kept gzipped (e.g. in results/): a later call rebuilds the distilled data
    # from them without the teacher
    kept_dir: Optional[str] = None

    @property
    def dims(self) -> List[int]:
        return [int(d) for d in self.student_dims.split(",") if d.strip()]


def fairseq(tool: str, cmd: List, stdout_path: Optional[str] = None):
    try:
        run_tool(fairseq_command(tool, cmd), stdout_path=stdout_path, prefix="[distill] ")
    except ToolFailed as err:
        raise SystemExit(f"[distill] {err}") from None


def generate_into(out_path: str, cmd: List) -> str:
    """fairseq-generate into ``out_path``, atomically; an existing output is kept (the step is resumable)."""
    try:
        return generate_to(out_path, fairseq_command("generate", cmd), reuse=True, prefix="[distill] ")
    except ToolFailed as err:
        raise SystemExit(f"[distill] {err}") from None


def read_generate(path: str, kind: str) -> Dict[int, str]:
    with open(path, encoding="utf-8") as handle:
        return read_generate_output(handle, kind)


def distillation_record(args) -> dict:
    """What the distilled data depends on; students and reruns check it before reusing anything."""
    teacher = getattr(args, "teacher_id", None) or os.path.abspath(args.teacher)
    return {"teacher": teacher, "teacher_beam": args.teacher_beam,
            "max_len_a": args.teacher_max_len_a, "max_len_b": args.teacher_max_len_b}


def check_record(path: str, expected: dict, what: str):
    with open(path, encoding="utf-8") as handle:
        found = json.load(handle)
    differs = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
    if differs:
        detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(differs.items()))
        raise SystemExit(f"[distill] {what} was made with other distillation settings ({detail}); delete it or "
                         f"choose another --workdir / --distilled-dir")


def choose_targets(sources: Dict[int, str], hyps: Dict[int, str], refs: Dict[int, str], a: float, b: int):
    """Teacher translations, except degenerate ones (more than a * n + b tokens), which keep the reference."""
    targets, fallbacks = {}, 0
    for i, src in sources.items():
        if len(hyps[i].split()) > a * len(src.split()) + b:
            targets[i], fallbacks = refs[i], fallbacks + 1
        else:
            targets[i] = hyps[i]
    return targets, fallbacks


def distilled_data(args) -> str:
    src, tgt = args.source_lang, args.target_lang
    folder = args.distilled_dir or args.workdir
    out_bin = os.path.join(folder, "distilled-bin")
    record = distillation_record(args)
    record_path = os.path.join(out_bin, "distillation.json")
    if os.path.exists(os.path.join(out_bin, "dict." + src + ".txt")):
        if not os.path.exists(record_path):
            raise SystemExit(f"[distill] {out_bin} has no distillation.json (made by an older version that kept "
                             f"degenerate teacher translations); delete it to rebuild")
        check_record(record_path, record, out_bin)
        return out_bin
    kept_dir = getattr(args, "kept_dir", None)
    if kept_dir and os.path.exists(os.path.join(kept_dir, "distillation.json")):
        sources, targets, fallbacks = read_kept(kept_dir, record, src, tgt)
    else:
        sources, targets, fallbacks = translate_train(args, folder, record)
    stored = dict(record, sentences=len(targets), reference_fallbacks=fallbacks)
    if kept_dir and not os.path.exists(os.path.join(kept_dir, "distillation.json")):
        keep_translations(kept_dir, stored, sources, targets, src, tgt)
    text_prefix = os.path.join(folder, "distilled-text", "train")
    for lang, lines in ((src, sources), (tgt, targets)):
        with atomic_output(f"{text_prefix}.{lang}") as handle:
            handle.writelines(line + "\n" for line in lines)
    partial = out_bin + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    fairseq("preprocess", [
        "--source-lang", src, "--target-lang", tgt, "--trainpref", text_prefix, "--destdir", partial,
        "--srcdict", os.path.join(args.data, f"dict.{src}.txt"),
        "--tgtdict", os.path.join(args.data, f"dict.{tgt}.txt"), "--workers", "1",
    ])
    for split in ("valid", "test"):  # students are selected and scored against the real references
        for lang in (src, tgt):
            for ext in ("bin", "idx"):
                name = f"{split}.{src}-{tgt}.{lang}.{ext}"
                shutil.copyfile(os.path.join(args.data, name), os.path.join(partial, name))
    with open(os.path.join(partial, "distillation.json"), "w", encoding="utf-8") as handle:
        json.dump(stored, handle, indent=2)
    os.replace(partial, out_bin)
    print(f"[distill] distilled training set: {len(targets)} teacher translations in {out_bin}; {fallbacks} degenerate "
          f"ones (over {args.teacher_max_len_a} * n + {args.teacher_max_len_b} tokens) keep the reference",
          flush=True)
    return out_bin


def translate_train(args, folder: str, record: dict):
    """(sources, targets, fallbacks): the teacher's beam-search translations of the training set, in corpus order,
    degenerate ones replaced by the reference (:func:`choose_targets`)."""
    src, tgt = args.source_lang, args.target_lang
    teacher_out = os.path.join(folder, "teacher-train.out")
    if os.path.exists(teacher_out) and not os.path.exists(teacher_out + ".json"):
        os.remove(teacher_out)  # an older version's output, decoded without the length bound
    if os.path.exists(teacher_out):
        check_record(teacher_out + ".json", record, teacher_out)
    else:
        os.makedirs(folder, exist_ok=True)
        with atomic_output(teacher_out + ".json") as handle:
            json.dump(record, handle, indent=2)
    # fairseq bounds by the padded batch width (>= n + 1); b + 2 keeps every cut-off output above a * n + b
    generate_into(teacher_out, [
        args.data, "--user-dir", PLUGIN_DIR, "--path", args.teacher, "--gen-subset", "train",
        "--source-lang", src, "--target-lang", tgt, "--beam", args.teacher_beam, "--batch-size", args.batch_size,
        "--required-batch-size-multiple", 1,  # fairseq 0.12 drops the last n % 8 sentences otherwise
        "--max-len-a", args.teacher_max_len_a, "--max-len-b", args.teacher_max_len_b + 2,
    ])
    sources, hyps, refs = (read_generate(teacher_out, kind) for kind in ("S", "H", "T"))
    if not hyps or sorted(hyps) != sorted(sources) or sorted(refs) != sorted(sources):
        raise SystemExit(f"[distill] {teacher_out}: incomplete teacher output ({len(hyps)} hypotheses)")
    targets, fallbacks = choose_targets(sources, hyps, refs, args.teacher_max_len_a, args.teacher_max_len_b)
    return [sources[i] for i in sorted(sources)], [targets[i] for i in sorted(sources)], fallbacks


def keep_translations(kept_dir: str, stored: dict, sources: List[str], targets: List[str], src: str, tgt: str):
    """The distilled training set, gzipped in ``kept_dir`` with its record (``stored``: the distillation record
    with its sentence and fallback counts; written last, it marks the folder complete)."""
    from .significance import write_lines_gz

    for lang, lines in ((src, sources), (tgt, targets)):
        write_lines_gz(os.path.join(kept_dir, f"train.{lang}.gz"), lines)
    with atomic_output(os.path.join(kept_dir, "distillation.json")) as handle:
        json.dump(stored, handle, indent=2)
        handle.write("\n")


def read_kept(kept_dir: str, record: dict, src: str, tgt: str):
    """(sources, targets, fallbacks) kept by :func:`keep_translations`, checked against ``record``."""
    from .significance import read_lines_gz

    path = os.path.join(kept_dir, "distillation.json")
    check_record(path, record, kept_dir)
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    sources, targets = (read_lines_gz(os.path.join(kept_dir, f"train.{lang}.gz")) for lang in (src, tgt))
    if not len(sources) == len(targets) == stored.get("sentences"):
        raise SystemExit(f"[distill] {kept_dir}: {len(sources)} sources and {len(targets)} translations where its "
                         f"distillation.json says {stored.get('sentences')}; delete the folder to translate again")
    print(f"[distill] the teacher's translations of the training set from {kept_dir} (the teacher is not needed)",
          flush=True)
    return sources, targets, stored.get("reference_fallbacks", 0)


def student_heads(dim: int, max_heads: int) -> int:
    """Heads of a student of width ``dim``: at most ``max_heads``, at least 8 dimensions each, dividing ``dim``."""
    heads = max(1, min(max_heads, dim // 8))
    while dim % heads:
        heads -= 1
    return heads


def student_flags(args, dim: int) -> List[str]:
    heads = student_heads(dim, args.max_heads)
    flags = ["--arch", "transformer_eatt"]
    for side in ("encoder", "decoder"):
        flags += [f"--{side}-embed-dim", dim, f"--{side}-ffn-embed-dim", 4 * dim,
                  f"--{side}-attention-heads", heads, f"--{side}-layers", args.student_layers]
    for flag in ("--encoder-self-attention", "--decoder-self-attention", "--decoder-cross-attention"):
        flags += [flag, args.attention]
    return flags


def run(args) -> Dict:
    """Distil ``args.teacher`` into students of ``args.dims`` (``args``: a :class:`DistillConfig` or the CLI's
    parsed flags, which have the same fields); writes WORKDIR/summary.json and returns it."""
    os.makedirs(args.workdir, exist_ok=True)
    data = distilled_data(args)
    with open(os.path.join(data, "distillation.json"), encoding="utf-8") as handle:
        distillation = json.load(handle)
    record = distillation_record(args)
    results = []
    for dim in args.dims:
        save_dir = os.path.join(args.workdir, f"student-d{dim}")
        train_flags = [*student_flags(args, dim), "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format",
                       "simple", *shlex.split(args.train_args)]
        stamp = os.path.join(save_dir, "distillation.json")
        if os.path.exists(save_dir) and os.listdir(save_dir):
            if not os.path.exists(stamp):
                raise SystemExit(f"[distill] {save_dir}: a student trained on other (older) distilled data; delete it")
            check_record(stamp, record, save_dir)
        else:
            os.makedirs(save_dir, exist_ok=True)
            with atomic_output(stamp) as handle:
                json.dump(record, handle, indent=2)
        if not training_finished(save_dir, train_flags):  # never one update past --max-update on a rerun
            fairseq("train", [data, "--user-dir", PLUGIN_DIR, *train_flags])
        checkpoint = os.path.join(save_dir, "checkpoint_best.pt")
        results.append(dict(dim=dim, **score_on_test(args, data, checkpoint, os.path.join(save_dir, "test.out"))))
        print(f"[distill] student d={dim}: BLEU {results[-1]['bleu']}", flush=True)
    # the teacher scored exactly like its students (same data, decoding and metric), once per distilled folder
    teacher = score_on_test(args, data, args.teacher,
                            os.path.join(args.distilled_dir or args.workdir, "teacher-test.out"))
    print(f"[distill] teacher: BLEU {teacher['bleu']}", flush=True)
    summary = {"teacher": args.teacher, "attention": args.attention, "students": results,
               "teacher_test": teacher, "distillation": distillation}
    with atomic_output(os.path.join(args.workdir, "summary.json")) as handle:
        json.dump(summary, handle, indent=2)
    print(f"[distill] wrote {os.path.join(args.workdir, 'summary.json')}")
    return summary


def score_on_test(args, data: str, checkpoint: str, out_path: str) -> dict:
    out = generate_into(out_path, [
        data, "--user-dir", PLUGIN_DIR, "--path", checkpoint, "--gen-subset", "test", "--beam", args.beam,
        "--lenpen", args.lenpen, "--batch-size", args.batch_size, "--post-process", args.post_process,
        "--required-batch-size-multiple", 1, "--scoring", "sacrebleu",
    ])
    with open(out, encoding="utf-8") as handle:
        scores = generate_scores(handle.read())  # the length ratio shows degenerate outputs
    return {"checkpoint": checkpoint, "test_output": out, "bleu": scores["bleu"],
            "length_ratio": scores["length_ratio"], "params": count_parameters(checkpoint, data)}


def count_parameters(checkpoint: str, data: str) -> int:
    from ..fairseq_tools import load_checkpoint

    model, _ = load_checkpoint(checkpoint, data)
    return sum(p.numel() for p in model.parameters())

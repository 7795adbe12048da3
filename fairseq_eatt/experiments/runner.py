"""Train, decode and score one run of a recipe, resumably, and write its result as one JSON file.

Layout (``--workdir`` W, ``--results`` R):
    W/data/<task>/                       prepared corpus (fairseq_eatt.data.prepare)
    W/<task>-<scale>/<run>.<config>/     checkpoints, train.log, decoded valid/test
    R/<task>-<scale>/<run>.json          the result (written last, atomically)
``<config>`` is a hash of every setting of the run, so a changed setting never resumes an old checkpoint, and a
result JSON made with other settings is reported instead of being taken as done.
"""
import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..attention import get_attention_class
from ..criterions.label_smoothed_cross_entropy_with_aux import NAME as AUX_CRITERION
from ..data.text import atomic_output, read_lines
from ..fairseq_tools import (
    ToolFailed,
    fairseq_command,
    load_checkpoint,
    model_flags,
    optimization_flags,
    read_generate_output,
    run_tool,
)
from ..provenance import PLUGIN_DIR, git_commit, provenance
from ..data.prepare import SHIPPED_MULTI30K
from .recipes import RunSpec
from .settings import TaskSetting

SCHEMA = 1


@dataclass
class PreparedData:
    data_bin: str
    src: str
    tgt: str
    references: Dict[str, str]  # split -> reference file matching the setting's BLEU mode


def prepare_task(setting: TaskSetting, data_root: str, local_dir: Optional[str], verify: bool = True) -> PreparedData:
    from ..data.corpora import CORPORA
    from ..data.prepare import prepare

    corpus = CORPORA[setting.task]
    if local_dir is None and setting.task == "multi30k-en-de":
        local_dir = SHIPPED_MULTI30K
    out = os.path.join(data_root, setting.task)
    result = prepare(corpus, out, local_dir=local_dir, merges=setting.bpe_merges, verify=verify)
    folder, name = ("tok", "{split}.{lang}") if setting.bleu == "tokenized" else ("raw", "{split}.{lang}.joined")
    refs = {split: os.path.join(out, folder, name.format(split=split, lang=corpus.tgt)) for split in ("valid", "test")}
    return PreparedData(result["data_bin"], corpus.src, corpus.tgt, refs)


def criterion_for(run: RunSpec) -> str:
    args = argparse.Namespace()
    aux = any(get_attention_class(v).has_auxiliary_loss(args) for v in run.attention.values()) \
        or "--early-exit" in run.options  # every decoder layer's exit has a loss
    return AUX_CRITERION if aux else "label_smoothed_cross_entropy"


def train_flags(run: RunSpec, setting: TaskSetting, extra: List[str]) -> List[str]:
    flags = (model_flags(setting.arch, run.attention, setting.embeddings, setting.dropout)
             + optimization_flags(lr=setting.lr, warmup_updates=setting.warmup_updates,
                                  plateau_updates=setting.plateau_updates, max_tokens=setting.max_tokens,
                                  max_update=setting.max_update, seed=run.seed, update_freq=setting.update_freq,
                                  criterion=criterion_for(run))
             + ["--no-epoch-checkpoints",
                "--eatt-recipe", run.recipe])  # explicit, so a later change of the default recipe cannot change it
    return flags + list(run.options) + list(setting.extra_train_args) + extra


def config_hash(run: RunSpec, setting: TaskSetting, extra_train: List[str]) -> str:
    identity = {"run": run.attention, "seed": run.seed, "setting": setting.as_dict(), "extra": extra_train}
    if run.options:  # runs without model options keep the hashes they had before options existed
        identity["options"] = list(run.options)
    if run.recipe != "paper":  # runs of the paper's recipe keep the hashes they had before recipes existed
        identity["eatt_recipe"] = run.recipe
    if run.origin:  # distilled or converted from another run: that run is part of this one's identity
        identity["origin"] = run.origin
    blob = json.dumps(identity, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def curve_flags(every: Optional[int]) -> List[str]:
    """fairseq-train flags that keep a checkpoint every ``every`` updates, for a dev BLEU curve."""
    return ["--save-interval-updates", str(every)] if every else []


def updates_done(save_dir: str) -> int:
    """Updates recorded in ``save_dir``/checkpoint_last.pt (0 without one)."""
    path = os.path.join(save_dir, "checkpoint_last.pt")
    if not os.path.exists(path):
        return 0
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    history = state.get("optimizer_history") or [{}]
    return int(history[-1].get("num_updates", 0))


def training_finished(save_dir: str, flags: List[str]) -> bool:
    """True if checkpoint_last.pt already has --max-update updates: fairseq-train restarted on a finished run
    would take one more update (it checks the limit only after a step)."""
    if "--max-update" not in flags:
        return False
    return updates_done(save_dir) >= int(flags[flags.index("--max-update") + 1])


class RunBusy(RuntimeError):
    """Another process holds the run's lock (e.g. a second queue sharing a recipe): skip it here."""


@contextlib.contextmanager
def run_lock(run_dir: str):
    """An exclusive, non-blocking lock on ``run_dir``; released when its holder exits, even if killed."""
    handle = open(os.path.join(run_dir, ".lock"), "w", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{run_dir} is being trained by another process") from None
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


class RunFailed(ToolFailed):
    """A run that cannot finish: a fairseq tool failed, or its outputs are incomplete or of other settings."""


def call(cmd: List[str], log_path: str, echo: bool, threads: Optional[int], stdout_path: Optional[str] = None):
    """:func:`run_tool` with the run's log; a failure is a :class:`RunFailed`."""
    try:
        run_tool(cmd, log_path, echo, threads, stdout_path)
    except ToolFailed as err:
        raise RunFailed(str(err)) from None


def valid_log(log_path: str) -> Dict:
    """Every validation in a fairseq-train log: loss per num_updates (a resumed run may repeat one; the last
    wins), and the binarization ratios (``binz_*``) of the last validation."""
    losses: Dict[int, float] = {}
    binarization: Dict[str, float] = {}
    for line in read_lines(log_path):
        if "valid on 'valid' subset" not in line:
            continue
        fields = dict(part.strip().split(" ", 1) for part in line.split("|")[3:] if " " in part.strip())
        if "loss" in fields and "num_updates" in fields:
            losses[int(fields["num_updates"])] = float(fields["loss"])
            binarization = {k[len("binz_"):]: float(v) for k, v in fields.items() if k.startswith("binz_")}
    return {"valid_losses": [{"num_updates": n, "loss": losses[n]} for n in sorted(losses)],
            "binarization_last_valid": binarization}


def shown_path(path: str) -> str:
    """``path`` relative to the current folder when it lies below it, absolute otherwise."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


def decode(run_dir: str, data: PreparedData, setting: TaskSetting, split: str, log_path: str, echo: bool,
           threads: Optional[int], batch_size: int, checkpoint: str = "checkpoint_best.pt", label: str = "") -> Dict:
    """Beam search on ``split`` with a checkpoint of the run (the best one unless given), scored with sacreBLEU
    against the setting's references. ``label`` keeps other checkpoints' outputs apart (``split.label.out``)."""
    import sacrebleu

    stem = f"{split}.{label}" if label else split
    out_path = os.path.join(run_dir, f"{stem}.out")
    subset = "valid" if split == "valid" else "test"
    if not os.path.exists(out_path):
        cmd = [data.data_bin, "--user-dir", PLUGIN_DIR, "--path", os.path.join(run_dir, checkpoint),
               "--gen-subset", subset, "--source-lang", data.src, "--target-lang", data.tgt,
               "--beam", str(setting.beam), "--lenpen", str(setting.lenpen), "--batch-size", str(batch_size),
               "--post-process", "subword_nmt",
               "--required-batch-size-multiple", "1"]  # fairseq drops the last n % 8 sentences otherwise
        if setting.bleu == "detok":
            cmd += ["--tokenizer", "moses"]
        partial = out_path + ".partial"
        call(fairseq_command("generate", cmd), log_path, echo, threads, stdout_path=partial)
        os.replace(partial, out_path)
    hyps = read_generate_output(read_lines(out_path))
    refs = list(read_lines(data.references[split]))
    if sorted(hyps) != list(range(len(refs))):
        os.replace(out_path, out_path + ".incomplete")
        raise RunFailed(f"{out_path}: {len(hyps)} hypotheses for {len(refs)} references in "
                        f"{data.references[split]} (moved aside; rerun to decode again)")
    ordered = [hyps[i] for i in range(len(refs))]
    metric = sacrebleu.BLEU(tokenize="none" if setting.bleu == "tokenized" else "13a")
    bleu = metric.corpus_score(ordered, [refs])
    with atomic_output(os.path.join(run_dir, f"{stem}.hyp")) as handle:
        handle.write("\n".join(ordered) + "\n")
    chrf = sacrebleu.CHRF()
    return {"bleu": round(bleu.score, 2), "bleu_str": str(bleu), "signature": str(metric.get_signature()),
            "chrf": round(chrf.corpus_score(ordered, [refs]).score, 2), "chrf_signature": str(chrf.get_signature()),
            "sentences": len(refs), "references": shown_path(data.references[split])}


def mean_lengths(data: PreparedData, split: str) -> Dict[str, float]:
    """Mean BPE tokens per sentence (with end-of-sentence) of source and target in the binarized ``split``."""
    from fairseq.data import data_utils

    out = {}
    for side, lang in (("src", data.src), ("tgt", data.tgt)):
        prefix = os.path.join(data.data_bin, f"{split}.{data.src}-{data.tgt}.{lang}")
        dataset = data_utils.load_indexed_dataset(prefix, None, dataset_impl="mmap")
        out[side] = round(float(dataset.sizes.mean()), 2)
    return out


def model_info(checkpoint: str, data_bin: str) -> Dict:
    """Parameter count and the dimensions the energy accounting needs, read from the trained model."""

    from ..models.transformer_eatt import attention_settings

    model, _ = load_checkpoint(checkpoint, data_bin)
    enc, dec = model.encoder, model.decoder
    return {"params": sum(p.numel() for p in model.parameters()), "embed_dim": enc.embed_tokens.embedding_dim,
            "heads": enc.layers[0].self_attn.num_heads, "encoder_layers": len(enc.layers),
            "decoder_layers": len(dec.layers),
            "normalize_before": bool(getattr(model.args, "encoder_normalize_before", False)),
            "attention_options": {position: setting["options"]
                                  for position, setting in attention_settings(model.args).items()}}


def result_path(results: str, run: RunSpec) -> str:
    return os.path.join(results, f"{run.task}-{run.scale}", run.name + ".json")


def existing_result(results: str, run: RunSpec, chash: str) -> Optional[Dict]:
    """The stored result of ``run`` if it was made with the same settings; an error if with others."""
    path = result_path(results, run)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        stored = json.load(handle)
    if stored.get("config_hash") != chash:
        raise RunFailed(f"{path} holds run {run.name} made with other settings (config {stored.get('config_hash')}, "
                        f"now {chash}); give another --results folder, or delete that file to rerun it")
    return stored


def run_dir_of(workdir: str, run: RunSpec, chash: str) -> str:
    return os.path.join(workdir, f"{run.task}-{run.scale}", f"{run.name}.{chash}")


def execute(run: RunSpec, setting: TaskSetting, data: PreparedData, workdir: str, results: str,
            extra_train: List[str], echo: bool = True, threads: Optional[int] = None, batch_size: int = 128,
            curve_every: Optional[int] = None, finetune_from: Optional[str] = None,
            points: Optional[List[int]] = None) -> Dict:
    """Train, decode and score ``run`` unless its result exists. ``curve_every``: also decode the dev set with
    the checkpoints kept every that many updates (``extra_train`` must hold :func:`curve_flags`) and store the
    curve in the result. ``finetune_from``: a checkpoint training starts from (fairseq-train
    --finetune-from-model; a converted model); ``points``: updates at which dev and test BLEU are stored (0: that
    checkpoint itself)."""
    chash = config_hash(run, setting, extra_train)
    done = existing_result(results, run, chash)
    if done is not None and (not curve_every or "curve" in done) and (not points or "points" in done):
        return done
    run_dir = run_dir_of(workdir, run, chash)
    os.makedirs(run_dir, exist_ok=True)
    with run_lock(run_dir):
        done = existing_result(results, run, chash)  # finished by another process while we waited
        start = ["--finetune-from-model", finetune_from] if finetune_from else []
        if done is None:
            done = _execute_locked(run, setting, data, run_dir, chash, results, extra_train + start, echo, threads,
                                   batch_size, hashed_extra=extra_train)
        elif missing_checkpoints(done, run_dir, setting, curve_every, points):
            # the checkpoints kept along the way are gone (another machine, a cleaned workdir): train it again
            if training_finished(run_dir, train_flags(run, setting, extra_train)):
                missing = missing_checkpoints(done, run_dir, setting, curve_every, points)
                raise RunFailed(f"{run_dir}: a finished training without the checkpoints kept after updates "
                                f"{missing}; move the folder away to train the run again")
            again = _execute_locked(run, setting, data, run_dir, chash, results, extra_train + start, echo,
                                    threads or done.get("threads"), batch_size, hashed_extra=extra_train)
            done = note_retraining(results, run, again, done)
        if curve_every and "curve" not in done:
            done = add_curve(run, setting, data, run_dir, results, done, curve_every, echo, threads, batch_size)
        if points and "points" not in done:
            done = add_points(run, setting, data, run_dir, results, done, points, finetune_from, echo, threads,
                              batch_size)
        return done


def missing_checkpoints(done: Dict, run_dir: str, setting: TaskSetting, curve_every: Optional[int],
                        points: Optional[List[int]]) -> List[int]:
    """Updates whose kept checkpoint a dev curve or fine-tuning points still to be added need and ``run_dir``
    lacks."""
    needed = set()
    if curve_every and "curve" not in done:
        needed.update(range(curve_every, setting.max_update + 1, curve_every))
    if points and "points" not in done:
        needed.update(n for n in points if n)
    have = interval_checkpoints(run_dir) if os.path.isdir(run_dir) else {}
    return sorted(needed - set(have))


def note_retraining(results: str, run: RunSpec, again: Dict, before: Dict) -> Dict:
    """The result of a run trained a second time, saying whether it reproduced the first one's BLEU; what was added
    to the first (a curve, chrF) is kept only where it did."""
    same = all(again[split]["bleu"] == before[split]["bleu"] for split in ("valid", "test"))
    if same:
        again = {**{k: v for k, v in before.items() if k not in again and not k.startswith("_")}, **again}
    previous = {"valid_bleu": before["valid"]["bleu"], "test_bleu": before["test"]["bleu"],
                "date": before.get("date"), "git_commit": before.get("git_commit")}
    note = (f"trained again on {datetime.date.today()} at commit {git_commit()} because the checkpoints kept along "
            f"the way were gone; " + ("it reproduced the earlier valid and test BLEU exactly" if same else
                                      "the earlier training scored other BLEU (previous): this result replaces it"))
    return add_to_result(results, run, again, "retrained", {"previous": previous, "reproduced": same}, note)


def add_points(run: RunSpec, setting: TaskSetting, data: PreparedData, run_dir: str, results: str, done: Dict,
               points: List[int], start: Optional[str], echo: bool, threads: Optional[int], batch_size: int) -> Dict:
    """Dev and test BLEU of the checkpoints at ``points`` updates (0: ``start``, the model training began from),
    written into the result; each point's hypotheses are kept beside it (``<run>.u<N>.<split>.hyp.gz``)."""
    from .significance import keep_hypotheses

    checkpoints = interval_checkpoints(run_dir)
    if 0 in points and start:
        checkpoints[0] = start
    missing = [n for n in points if n not in checkpoints]
    if missing:
        raise RunFailed(f"{run_dir}: no checkpoint for updates {missing} (train with --save-interval-updates "
                        f"dividing each of {points}, and keep them: --keep-interval-updates -1)")
    log_path = os.path.join(run_dir, "train.log")
    scored = []
    stem = result_path(results, run)[:-len(".json")]
    for updates in points:
        point = {"num_updates": updates}
        for split in ("valid", "test"):
            out = decode(run_dir, data, setting, split, log_path, echo, threads, batch_size,
                         checkpoint=checkpoints[updates], label=f"u{updates}")
            point[split] = {"bleu": out["bleu"], "bleu_str": out["bleu_str"]}
            keep_hypotheses(f"{stem}.u{updates}.json", split,
                            list(read_lines(os.path.join(run_dir, f"{split}.u{updates}.hyp"))),
                            list(read_lines(data.references[split])))
        scored.append(point)
    return add_to_result(results, run, done, "points", scored,
                         f"dev and test BLEU of the checkpoints after {', '.join(map(str, points))} updates (0: the "
                         f"model training started from), decoded like valid/test; added {datetime.date.today()} at "
                         f"commit {git_commit()}")


def add_to_result(results: str, run: RunSpec, done: Dict, key: str, value, note: str) -> Dict:
    """The stored result of ``run`` with ``key`` (and ``key_note``) added, written atomically."""
    done = {k: v for k, v in done.items() if not k.startswith("_")}
    done[key], done[f"{key}_note"] = value, note
    with atomic_output(result_path(results, run)) as handle:
        json.dump(done, handle, indent=2)
        handle.write("\n")
    return done


def interval_checkpoints(run_dir: str) -> Dict[int, str]:
    """{updates: file name} of the checkpoints fairseq kept with --save-interval-updates."""
    found = {}
    for name in os.listdir(run_dir):
        parts = name[len("checkpoint_"):-len(".pt")].split("_") if name.startswith("checkpoint_") else []
        if name.endswith(".pt") and len(parts) == 2 and all(p.isdigit() for p in parts):
            found[int(parts[1])] = name
    return found


def add_curve(run: RunSpec, setting: TaskSetting, data: PreparedData, run_dir: str, results: str, done: Dict,
              every: int, echo: bool, threads: Optional[int], batch_size: int) -> Dict:
    """Dev BLEU (and dev loss from the training log) at every ``every`` updates, written into the result."""
    checkpoints = interval_checkpoints(run_dir)
    wanted = list(range(every, setting.max_update + 1, every))
    missing = [n for n in wanted if n not in checkpoints]
    if missing:
        raise RunFailed(f"{run_dir}: no checkpoint for updates {missing} (train with --save-interval-updates "
                        f"{every} and keep them: --keep-interval-updates -1)")
    losses = {v["num_updates"]: v["loss"] for v in valid_log(os.path.join(run_dir, "train.log"))["valid_losses"]}
    log_path = os.path.join(run_dir, "train.log")
    curve = []
    for updates in wanted:
        scored = decode(run_dir, data, setting, "valid", log_path, echo, threads, batch_size,
                        checkpoint=checkpoints[updates], label=f"u{updates}")
        curve.append({"num_updates": updates, "valid_bleu": scored["bleu"], "valid_loss": losses.get(updates)})
    return add_to_result(results, run, done, "curve", curve,
                         f"valid BLEU of the checkpoint kept every {every} updates, decoded like valid/test (beam "
                         f"{setting.beam}, lenpen {setting.lenpen}); curve added {datetime.date.today()} at commit "
                         f"{git_commit()}")


def _execute_locked(run: RunSpec, setting: TaskSetting, data: PreparedData, run_dir: str, chash: str, results: str,
                    extra_train: List[str], echo: bool, threads: Optional[int], batch_size: int,
                    hashed_extra: Optional[List[str]] = None) -> Dict:
    log_path = os.path.join(run_dir, "train.log")
    flags = train_flags(run, setting, extra_train) + ["--save-dir", run_dir]
    started = time.time()
    if not training_finished(run_dir, flags):  # e.g. a run stopped while decoding
        call(fairseq_command("train", [data.data_bin] + flags), log_path, echo, threads)
    trained = time.time()
    if not os.path.exists(os.path.join(run_dir, "checkpoint_best.pt")):
        raise RunFailed(f"{run_dir}: training ended without checkpoint_best.pt; see {log_path}")
    scores = {split: decode(run_dir, data, setting, split, log_path, echo, threads, batch_size)
              for split in ("valid", "test")}
    result = {
        "schema": SCHEMA, "run": run.name, "task": run.task, "scale": run.scale, "seed": run.seed,
        "attention": run.attention, **({"tag": run.tag, "options": list(run.options)} if run.tag else {}),
        "eatt_recipe": run.recipe,
        "config_hash": chash, "setting": setting.as_dict(),
        "extra_train_args": extra_train if hashed_extra is None else hashed_extra,
        **({"origin": run.origin} if run.origin else {}),
        "model": model_info(os.path.join(run_dir, "checkpoint_best.pt"), data.data_bin),
        "valid": scores["valid"], "test": scores["test"],
        **valid_log(log_path),
        "lengths": {"valid": mean_lengths(data, "valid"), "test": mean_lengths(data, "test")},
        "seconds": {"train_this_call": round(trained - started, 1), "decode": round(time.time() - trained, 1)},
        "threads": threads or os.cpu_count(),
        "command": "fairseq-train " + " ".join(shlex.quote(c) for c in [shown_path(data.data_bin)] + flags),
        "workdir": shown_path(run_dir),
        **provenance(),
    }
    keep_run_hypotheses(run_dir, data, result_path(results, run))
    with atomic_output(result_path(results, run)) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    return result


def add_chrf(result_json: str):
    """chrF of a result made before runs recorded it, from its kept hypotheses (the BLEU is checked against them
    first, so a mismatched file is refused, not scored)."""
    import sacrebleu

    from .significance import SignificanceError, hypotheses_path, read_lines_gz, references_path

    with open(result_json, encoding="utf-8") as handle:
        result = json.load(handle)
    changed = False
    for split in ("valid", "test"):
        if "chrf" in result[split]:
            continue
        hyps = read_lines_gz(hypotheses_path(result_json, split))
        refs = read_lines_gz(references_path(result_json, split))
        tokenize = "none" if "tok:none" in result[split]["signature"] else "13a"
        bleu = round(sacrebleu.BLEU(tokenize=tokenize).corpus_score(hyps, [refs]).score, 2)
        if bleu != result[split]["bleu"]:
            raise SignificanceError(f"{result_json}: its kept {split} hypotheses score BLEU {bleu}, the result says "
                                    f"{result[split]['bleu']}")
        chrf = sacrebleu.CHRF()
        result[split].update(chrf=round(chrf.corpus_score(hyps, [refs]).score, 2),
                             chrf_signature=str(chrf.get_signature()))
        changed = True
    if changed:
        result["chrf_note"] = f"chrF added from the kept hypotheses on {datetime.date.today()} at commit {git_commit()}"
        with atomic_output(result_json) as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")


def keep_run_hypotheses(run_dir: str, data: PreparedData, result_json: str) -> bool:
    """Keep the run's detokenized valid and test hypotheses (``split.hyp`` in its folder) gzipped beside its
    result, with the folder's references, so that anyone can re-score them or test a difference. False (and
    nothing written) if the run's folder lacks them."""
    from .significance import keep_hypotheses

    hyp_files = {split: os.path.join(run_dir, f"{split}.hyp") for split in ("valid", "test")}
    if not all(os.path.exists(path) for path in hyp_files.values()):
        return False
    for split, path in hyp_files.items():
        keep_hypotheses(result_json, split, list(read_lines(path)), list(read_lines(data.references[split])))
    return True

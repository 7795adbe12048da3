"""The fairseq plumbing the plugin's tools share: loading a checkpoint, running fairseq's console tools through
this interpreter, reading fairseq-generate's output, and the training flags. Where the plugin is and what results
were made on: :mod:`fairseq_eatt.provenance` (its names stay importable from here)."""
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, Iterable, List, Optional

from .provenance import PLUGIN_DIR, REPO_ROOT, git_commit, machine  # noqa: F401  (re-exported)


class ToolFailed(RuntimeError):
    """A fairseq tool exited with an error; the message names the tool and where its output went."""


def fairseq_command(tool: str, args: Iterable) -> List[str]:
    """``fairseq-<tool> args`` run by this interpreter (the same environment and plugin)."""
    return [sys.executable, "-m", f"fairseq_cli.{tool}"] + [str(a) for a in args]


def shown(cmd: List[str]) -> str:
    """A command as a user would type it: ``fairseq-train ...`` for fairseq's tools."""
    if len(cmd) > 2 and cmd[1] == "-m" and cmd[2].startswith("fairseq_cli."):
        cmd = ["fairseq-" + cmd[2][len("fairseq_cli."):]] + cmd[3:]
    return " ".join(shlex.quote(c) for c in cmd)


def run_tool(cmd: List[str], log_path: Optional[str] = None, echo: bool = True, threads: Optional[int] = None,
             stdout_path: Optional[str] = None, prefix: str = ""):
    """Run ``cmd``. Its stdout goes to ``stdout_path`` when given; everything else is appended to ``log_path``
    (if any) and echoed (if ``echo``), line by line, so that a run can be followed with ``tail -f``. ``threads``
    caps the tool's CPU threads. Raises :class:`ToolFailed` on a non-zero exit, after removing the incomplete
    ``stdout_path``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    line = f"{prefix}$ {shown(cmd)}" + (f" > {stdout_path}" if stdout_path else "")
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    out = open(stdout_path, "w", encoding="utf-8") if stdout_path else None
    try:
        for sink in ([log] if log else []):
            sink.write(line + "\n")
            sink.flush()
        if echo:
            print(line, flush=True)
        proc = subprocess.Popen(cmd, stdout=out or subprocess.PIPE, stderr=subprocess.PIPE if out else
                                subprocess.STDOUT, env=env, text=True)
        for text in (proc.stderr if out else proc.stdout):
            if log:
                log.write(text)
                log.flush()
            if echo:
                sys.stdout.write(text)
        code = proc.wait()
    finally:
        for handle in (log, out):
            if handle:
                handle.close()
    if code != 0:
        if stdout_path and os.path.exists(stdout_path):
            os.remove(stdout_path)  # never leave a partial output behind
        where = f"; see {log_path}" if log_path else ""
        raise ToolFailed(f"{shown(cmd).split(' ', 1)[0]} exited with code {code}{where}")


def generate_to(out_path: str, cmd: List[str], reuse: bool = False, **run_kwargs) -> str:
    """Run a generation command (``fairseq_command("generate", ...)`` or the plugin's fairseq-eatt-generate) with
    its stdout in ``out_path``, atomically: a failed run leaves nothing. ``reuse``: keep an existing output."""
    if reuse and os.path.exists(out_path):
        return out_path
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    partial = out_path + ".partial"
    run_tool(cmd, stdout_path=partial, **run_kwargs)  # removes the partial file on failure
    os.replace(partial, out_path)
    return out_path


GENERATE_LINE = re.compile(r"^Generate .*?: BLEU4? = [0-9.]+.*$", re.M)


def generate_scores(text: str) -> Dict:
    """fairseq-generate's own score line (printed last on its stdout): {"line", "bleu", "length_ratio"}, None
    where it printed none; the length ratio (hypothesis / reference) comes with --scoring sacrebleu."""
    found = GENERATE_LINE.search(text)
    if not found:
        return {"line": None, "bleu": None, "length_ratio": None}
    line = found.group(0).strip()
    ratio = re.search(r"ratio = ([0-9.]+)", line)
    return {"line": line, "bleu": float(re.search(r"BLEU4? = ([0-9.]+)", line).group(1)),
            "length_ratio": float(ratio.group(1)) if ratio else None}


def read_generate_output(lines: Iterable[str], kind: str = "D") -> Dict[int, str]:
    """{sentence id: text} of one kind of fairseq-generate line: S (source), T (reference), H (hypothesis with
    BPE) or D (detokenized hypothesis); H and D lines carry a score before the text."""
    found: Dict[int, str] = {}
    for line in lines:
        if line.startswith(kind + "-"):
            head, _, text = line.rstrip("\n").partition("\t")
            if kind in ("H", "D"):
                _score, _, text = text.partition("\t")
            found[int(head[len(kind) + 1:])] = text
    return found


def load_checkpoint(path: str, data: str):
    """(model in eval mode, task) of a fairseq checkpoint, with ``data`` as its data directory."""
    if not os.path.isfile(path):
        raise SystemExit(f"--path {path}: no such checkpoint file")
    if not os.path.isdir(data):
        raise SystemExit(f"data directory {data} does not exist (give the fairseq-preprocess output folder)")
    from fairseq import checkpoint_utils

    import fairseq_eatt  # noqa: F401  (registers the model; checkpoint loading on torch >= 2.6)

    # activation checkpointing is for training; its wrappers cannot be scripted or exported
    from .compat import CheckpointError
    from .models.metadata import CheckpointMismatchError

    overrides = {"data": data, "checkpoint_activations": False, "offload_activations": False}
    try:
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
    except CheckpointError as err:
        raise SystemExit(f"--path {err}") from None
    except CheckpointMismatchError as err:
        raise SystemExit(f"--path {path} with data {data}: {err}") from None
    except FileNotFoundError as err:  # fairseq's task setup reads dict.<lang>.txt
        raise SystemExit(f"data directory {data}: {err.strerror or err}: {err.filename} (it needs the "
                         f"dictionaries the model was trained with, dict.<source>.txt and dict.<target>.txt)") from None
    except RuntimeError as err:
        if "size mismatch" not in str(err):
            raise
        raise SystemExit(f"--path {path}: its embeddings do not fit the dictionaries of data directory {data} "
                         f"(give the data directory the model was trained with): "
                         f"{str(err).splitlines()[-1].strip()}") from None
    model = models[0]
    model.eval()
    return model, task


def optimization_flags(*, lr: float, warmup_updates: int, plateau_updates: int, max_tokens: int, max_update: int,
                       seed: int, update_freq: int = 1,
                       criterion: str = "label_smoothed_cross_entropy") -> List[str]:
    """fairseq-train flags of the paper's optimization (Adam, the ``eatt`` lr schedule, label smoothing 0.1) and
    the plugin's logging, shared by the experiments, the demo and distillation."""
    return ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "1.0", "--weight-decay", "0.0001",
            "--lr", str(lr), "--lr-scheduler", "eatt", "--warmup-updates", str(warmup_updates),
            "--plateau-updates", str(plateau_updates), "--criterion", criterion, "--label-smoothing", "0.1",
            "--max-tokens", str(max_tokens), "--update-freq", str(update_freq), "--max-update", str(max_update),
            "--seed", str(seed), "--log-format", "simple", "--log-interval", "50", "--num-workers", "0"]


def model_flags(arch: str, attention: Optional[Dict[str, str]] = None, shared_embeddings: str = "all",
                dropout: Optional[float] = None) -> List[str]:
    """fairseq-train flags of a ``transformer_eatt`` model: the plugin, its architecture, the variant per position
    (``{position: variant}``, the architecture's default where absent) and the embeddings shared (``all``:
    source, target and output; ``decoder``: target and output)."""
    from .attention import POSITION_FLAGS

    if shared_embeddings not in ("all", "decoder"):
        raise ValueError(f"shared embeddings must be all or decoder, got {shared_embeddings!r}")
    flags = ["--user-dir", PLUGIN_DIR, "--task", "translation", "--arch", arch]
    for position, variant in (attention or {}).items():
        flags += [POSITION_FLAGS[position], variant]
    flags.append("--share-all-embeddings" if shared_embeddings == "all" else "--share-decoder-input-output-embed")
    return flags + (["--dropout", str(dropout)] if dropout is not None else [])


def load_subset(task, subset: str):
    """Load a split of ``task``'s data directory; a split it lacks is a ValueError naming --subset and the splits
    there are."""
    import glob

    data = task.cfg.data if hasattr(task, "cfg") else task.args.data
    try:
        task.load_dataset(subset)
    except FileNotFoundError:
        found = sorted({os.path.basename(f).split(".")[0] for f in glob.glob(os.path.join(data, "*.idx"))})
        raise ValueError(f"--subset {subset}: no such split in {data} (it has: {', '.join(found) or 'none'})") from None
    return task.dataset(subset)

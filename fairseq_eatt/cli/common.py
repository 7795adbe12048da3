"""Helpers shared by the analysis commands."""
import os

from ..data.text import atomic_output


def load_checkpoint(path: str, data: str):
    """(model in eval mode, task) of a fairseq checkpoint, with ``data`` as its data directory."""
    if not os.path.isfile(path):
        raise SystemExit(f"--path {path}: no such checkpoint file")
    if not os.path.isdir(data):
        raise SystemExit(f"data directory {data} does not exist (give the fairseq-preprocess output folder)")
    from fairseq import checkpoint_utils

    import fairseq_eatt  # noqa: F401  (registers the model; checkpoint loading on torch >= 2.6)

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data})
    model = models[0]
    model.eval()
    return model, task


def write_atomically(path: str, write, binary: bool = False):
    """Call ``write(handle)`` on a temporary file that replaces ``path`` only once complete."""
    with atomic_output(path, "wb" if binary else "w") as handle:
        write(handle)

"""fairseq-eatt-generate: fairseq-generate with 8-bit integer or bfloat16 inference, for any checkpoint.

    fairseq-eatt-generate DATA --user-dir fairseq_eatt --path ckpt.pt --quantize int8 [fairseq-generate flags]
    fairseq-eatt-generate DATA --user-dir fairseq_eatt --path ckpt.pt --inference-dtype bfloat16 [...]

``--quantize int8`` applies PyTorch dynamic quantization to every ``nn.Linear`` of the loaded models (int8
weights, activations quantized on the fly; CPU only): the attention projections, the feed-forward layers and the
output projection. Embeddings and layer norms stay in float32. ``--inference-dtype bfloat16`` casts the models to
bfloat16. Either way the model size before and after is reported. Every other flag is fairseq-generate's own.
"""
import argparse
import os
import sys

import torch

from ..compat import CheckpointError
from ..deploy.inference import convert
from ..models.metadata import CheckpointMismatchError


def parse_own_args(argv):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--quantize", choices=("none", "int8"), default="none")
    p.add_argument("--inference-dtype", choices=("float32", "bfloat16"), default="float32")
    return p.parse_known_args(argv)


def checkpoint_paths(argv):
    """The checkpoints of ``--path`` (fairseq separates an ensemble's with ':')."""
    for i, arg in enumerate(argv):
        if arg == "--path" and i + 1 < len(argv):
            return argv[i + 1].split(os.pathsep)
        if arg.startswith("--path="):
            return arg.split("=", 1)[1].split(os.pathsep)
    return []


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    own, rest = parse_own_args(argv)
    if own.quantize == "int8" and own.inference_dtype != "float32":
        raise SystemExit("fairseq-eatt-generate: --quantize int8 runs in float32 with int8 weights; "
                         "drop --inference-dtype or --quantize")
    if own.quantize == "int8" and ("--fp16" in rest or "--bf16" in rest):
        raise SystemExit("fairseq-eatt-generate: --quantize int8 cannot be combined with --fp16/--bf16")
    if own.quantize == "int8" and "--cpu" not in rest and torch.cuda.is_available():
        rest.append("--cpu")  # dynamically quantized linears run on the CPU
    if not any(a.startswith("--required-batch-size-multiple") for a in rest):
        # fairseq 0.12 silently drops the last (n mod 8) sentences of a split otherwise (fairseq issue #5036)
        rest += ["--required-batch-size-multiple", "1"]
    for path in checkpoint_paths(rest):
        if not os.path.isfile(path):
            raise SystemExit(f"fairseq-eatt-generate: --path {path}: no such checkpoint file")
    from fairseq import checkpoint_utils
    from fairseq_cli import generate

    original = checkpoint_utils.load_model_ensemble

    def load_and_convert(*args, **kwargs):
        models, cfg = original(*args, **kwargs)
        if own.quantize != "none" or own.inference_dtype != "float32":
            models = [convert(m, own.quantize, own.inference_dtype) for m in models]
        return models, cfg

    checkpoint_utils.load_model_ensemble = load_and_convert
    try:
        sys.argv = [sys.argv[0]] + rest
        generate.cli_main()
    except CheckpointError as err:
        raise SystemExit(f"fairseq-eatt-generate: {err}") from None
    except CheckpointMismatchError as err:
        data = rest[0] if rest and not rest[0].startswith("-") else "DATA"
        raise SystemExit(f"fairseq-eatt-generate: --path {':'.join(checkpoint_paths(rest))} with data {data}: "
                         f"{err}") from None
    except FileNotFoundError as err:  # fairseq opens the data directory's files without naming what they are
        what = f"{err.filename}: no such file or directory" if err.filename else str(err)
        raise SystemExit(f"fairseq-eatt-generate: {what} (DATA must be fairseq-preprocess's output: "
                         f"dict.SRC.txt, dict.TGT.txt and the split's .bin/.idx)") from None
    finally:
        checkpoint_utils.load_model_ensemble = original


if __name__ == "__main__":
    main()

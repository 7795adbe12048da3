"""Compatibility of fairseq 0.12 with recent torch.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses fairseq checkpoints (they pickle an
argparse.Namespace and omegaconf configs): fairseq-generate, resuming training and ``from_pretrained`` fail with
"Unsupported global: argparse.Namespace". We wrap fairseq's single loading function so that, for fairseq
checkpoints only, torch uses the full unpickler, exactly as fairseq did on the torch it was written for. Loading a
checkpoint therefore trusts its file, as it always has with fairseq.
"""
import contextlib
import functools
import os
import warnings

_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def _full_unpickler():
    previous = os.environ.get(_ENV)
    os.environ[_ENV] = "1"
    try:
        with warnings.catch_warnings():  # torch warns that the variable is set: we set it on purpose, here only
            warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
            yield
    finally:
        if previous is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = previous


def enable_fairseq_checkpoint_loading():
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_eatt_wrapped", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(*args, **kwargs):
        with _full_unpickler():
            return original(*args, **kwargs)

    load_checkpoint_to_cpu._eatt_wrapped = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def _flag_value(argv, *names):
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def enable_model_help():
    """Two fixes to fairseq's command-line parsing.

    - ``fairseq-train --arch transformer_eatt --help`` lists the model's flags: fairseq adds model- and
      task-specific flags only after a first parse, which ``--help`` cuts short, so stock fairseq never shows them.
      When --help is asked for, we add those groups up front, the way fairseq would.
    - ``--bf16 --cpu`` trains in bfloat16 on the CPU: fairseq 0.12 turns every --bf16 into --tpu (and then fails
      without torch_xla); with --cpu and no explicit --tpu we keep the TPU off.
    """
    import argparse
    import sys

    from fairseq import options

    original = options.parse_args_and_arch
    if getattr(original, "_eatt_wrapped", False):
        return

    @functools.wraps(original)
    def parse_args_and_arch(parser, input_args=None, *args, **kwargs):
        argv = list(sys.argv[1:] if input_args is None else input_args)
        if "-h" in argv or "--help" in argv:
            from fairseq.models import ARCH_MODEL_REGISTRY
            from fairseq.tasks import TASK_REGISTRY

            arch = _flag_value(argv, "--arch", "-a")
            if arch in ARCH_MODEL_REGISTRY:
                group = parser.add_argument_group("Model-specific configuration", argument_default=argparse.SUPPRESS)
                ARCH_MODEL_REGISTRY[arch].add_args(group)
            task = _flag_value(argv, "--task")
            if task in TASK_REGISTRY:
                TASK_REGISTRY[task].add_args(parser)
        parsed = original(parser, input_args, *args, **kwargs)
        namespace = parsed[0] if isinstance(parsed, tuple) else parsed
        if getattr(namespace, "bf16", False) and getattr(namespace, "cpu", False) and "--tpu" not in argv:
            # fairseq 0.12 assumes bf16 means a TPU and sets --tpu; with --cpu we mean bf16 on the CPU
            namespace.tpu = False
        return parsed

    parse_args_and_arch._eatt_wrapped = True
    options.parse_args_and_arch = parse_args_and_arch

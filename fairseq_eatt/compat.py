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


def enable_cpu_distributed():
    """fairseq's DistributedDataParallel training on CPUs (gloo), launched by ``torchrun``.

    fairseq 0.12 assumes a GPU per worker in two places: it derives the worker's device from
    ``rank % torch.cuda.device_count()`` (a ZeroDivisionError without GPUs) and passes ``device_ids=[device]`` to
    DistributedDataParallel, which torch refuses for CPU modules. Without GPUs every worker gets device 0 (there
    is none to choose) and DDP gets no device ids, as torch asks for CPU modules. Nothing changes where GPUs exist.
    """
    import torch
    from fairseq.distributed import utils as dist_utils
    from fairseq.models import distributed_fairseq_model as ddp_module

    original_infer = dist_utils._infer_torch_distributed_launch_init
    if not getattr(original_infer, "_eatt_wrapped", False):
        @functools.wraps(original_infer)
        def infer_launch_init(cfg):
            if torch.cuda.device_count() > 0:
                return original_infer(cfg)
            cfg.distributed_init_method = "env://"
            cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
            cfg.distributed_rank = int(os.environ["RANK"])
            cfg.device_id = 0  # no GPU to pick; fairseq would call torch.cuda.set_device for any other value
            cfg.distributed_no_spawn = True  # the processes were started by torchrun

        infer_launch_init._eatt_wrapped = True
        dist_utils._infer_torch_distributed_launch_init = infer_launch_init

    base = ddp_module.DistributedDataParallel
    if not getattr(base, "_eatt_cpu_aware", False):
        class CpuAwareDistributedDataParallel(base):
            _eatt_cpu_aware = True

            def __init__(self, module, *args, **kwargs):
                if all(p.device.type == "cpu" for p in module.parameters()):
                    kwargs["device_ids"] = None
                    kwargs["output_device"] = None
                super().__init__(module, *args, **kwargs)

        ddp_module.DistributedDataParallel = CpuAwareDistributedDataParallel

"""Compatibility of fairseq 0.12 with recent torch, and checkpoints that cannot run code.

torch >= 2.6 loads with ``weights_only=True`` by default: a restricted unpickler that builds tensors, containers
and plain values, and refuses every other global, so that a crafted file cannot run code when it is loaded.
fairseq's checkpoints hold a few other globals: ``argparse.Namespace`` (their saved arguments), numeric numpy values
(logged meters) and omegaconf containers (files written from a loaded checkpoint). We wrap fairseq's single loading
function, ``checkpoint_utils.load_checkpoint_to_cpu`` (behind fairseq-train's resume,
fairseq-generate, ``from_pretrained`` and every tool of the plugin), so that it allows exactly those
(:func:`safe_globals`) and refuses anything else with an error naming the file and the global. A file you trust
that holds more (written by other code) loads with the full unpickler when ``FAIRSEQ_EATT_TRUST_CHECKPOINTS=1``.
"""
import argparse
import contextlib
import functools
import os
import pickle
import re
import warnings
import zipfile

TRUST_VARIABLE = "FAIRSEQ_EATT_TRUST_CHECKPOINTS"


def safe_globals() -> list:
    """What fairseq and the plugin store besides tensors, containers and plain values: the saved arguments
    (``argparse.Namespace``), numeric numpy values of the logged meters and, in files written from a loaded
    checkpoint before the plugin stored plain configs (packed and converted checkpoints), omegaconf's untyped
    config containers. Data only: none of these
    runs code of the file's choosing when it is rebuilt."""
    import collections
    import typing

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, dict, list,
            int, collections.defaultdict, *_numpy_globals()]


def _numpy_globals() -> list:
    """Numeric numpy arrays and scalars: fairseq's logged meters keep some values as numpy (in extra_state)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    names = ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType", "Int8DType",
             "UInt8DType", "BoolDType")
    dtypes = [getattr(np.dtypes, n) for n in names if hasattr(getattr(np, "dtypes", None), n)]
    return [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar, *dtypes]


def storable_cfg(cfg):
    """A loaded checkpoint's config as fairseq-train stores it: plain containers (fairseq's loading turns them into
    omegaconf objects)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg
_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


class CheckpointError(ValueError):
    """A checkpoint that is refused or cannot be read; the message names the file."""


def trusted() -> bool:
    value = os.environ.get(TRUST_VARIABLE, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{TRUST_VARIABLE}={value!r}: valid values are 1 (load with the full unpickler) or 0")
    return value == "1"


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


@contextlib.contextmanager
def checkpoint_loading(path: str):
    """Around a ``torch.load`` of a checkpoint: the restricted unpickler with :data:`SAFE_GLOBALS` (the full one
    when trusted), and a clear error naming ``path`` for a refused global or an unreadable file."""
    import torch

    if trusted():
        with _full_unpickler():
            yield
        return
    try:
        with torch.serialization.safe_globals(safe_globals()):
            yield
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # not a refused object: a damaged file
            raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt)") from None
        what = found.group(1)
        raise CheckpointError(
            f"{path}: refused: the file holds {what}, which no fairseq or fairseq-eatt checkpoint holds; loading it "
            f"could run code. Only if you trust the file, load it with {TRUST_VARIABLE}=1") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (PermissionError, IsADirectoryError) as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        if isinstance(err, RuntimeError) and not re.search(r"zip|archive|unpickl|storage|EOF", str(err), re.I):
            raise
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {err})") from None


def load_state(path: str, map_location="cpu"):
    """A checkpoint's contents, loaded as fairseq's tools load them (see :func:`checkpoint_loading`)."""
    import torch

    with checkpoint_loading(path):
        return torch.load(path, map_location=map_location)


def enable_fairseq_checkpoint_loading():
    from fairseq import checkpoint_utils

    original = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(original, "_eatt_wrapped", False):
        return

    @functools.wraps(original)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        with checkpoint_loading(str(path)):
            return original(path, *args, **kwargs)

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

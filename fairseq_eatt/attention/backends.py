"""How attention is computed: every backend, and the one place that chooses among them.

Two kinds of choice, each with an exact fallback:
- ``l1``, E-ATT's pairwise L1 scores: ``reference`` (plain PyTorch, any device and dtype), ``cpp_l1`` (the
  compiled CPU kernel, built by ``pip install``), ``triton_l1`` (Triton kernels; CUDA, or a CPU under
  ``TRITON_INTERPRET=1``).
- ``attend``, a whole attention call whose dense path a fused kernel computes exactly: ``dense`` (the module's own
  path), ``sdpa`` (PyTorch's ``scaled_dot_product_attention``, for vanilla attention), ``triton_fused`` (E-ATT's
  fused Triton kernel). A module offers the fused backends that are exact for it (see ``offered`` in
  :func:`select`).
- ``select``, E-ATT's binarized selection of Q / K (``eatt/selection.py``): ``dense_select`` (nn.Linear on the
  bits), ``gather_select`` and ``cpp_select`` (the selected rows of W^T only; inference only). ``auto`` keeps
  ``dense_select`` until a measured crossover says where the rows pay (scripts/bench_selection.py).

One setting chooses: the environment variable ``FAIRSEQ_EATT_BACKEND``, ``auto`` (default) or a comma-separated
list of backend names in order of preference. For each kind, the first listed backend that applies to the call
(device, dtype, what the module offers) is used; a kind with no backend listed is chosen automatically: the
compiled kernel on the CPU, Triton (when installed) and SDPA on CUDA, the fallbacks otherwise. A listed backend
that cannot run on this machine (a kernel not built, triton not installed) is an error naming it. Inside
:func:`counting` (the operation counter) every call takes the fallbacks, whose aten operations the counter sees.
"""
import contextlib
import contextvars
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

SETTING = "FAIRSEQ_EATT_BACKEND"
RETIRED_SETTINGS = {  # variables of earlier releases, refused with what to write instead
    "FAIRSEQ_EATT_L1": "reference, cpp_l1 or triton_l1",
    "FAIRSEQ_EATT_FUSED": "triton_fused (or dense)",
    "FAIRSEQ_EATT_SDPA": "sdpa (or dense)",
}
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # the Triton kernels accumulate in float32


def _compiled_kernel_error() -> Optional[str]:
    from .functional import l1_kernel_error

    return l1_kernel_error()


def _triton_error() -> Optional[str]:
    from .eatt.triton_kernels import triton_error

    return triton_error()


def _compiled_selection_error() -> Optional[str]:
    from .functional import l1_kernel

    error = _compiled_kernel_error()
    if error is None and not hasattr(l1_kernel(), "select_rows"):
        return "the compiled kernel predates select_rows; reinstall with `pip install -e .`"
    return error


def _no_gradient(x: Tensor) -> bool:
    """Where nothing asks for a gradient: the gather paths give none to the bits (the surrogate needs it)."""
    return not (torch.is_grad_enabled() and x.requires_grad)


@dataclass(frozen=True)
class Backend:
    name: str
    kind: str  # "l1", "attend" or "select"
    help: str
    unavailable: Callable[[], Optional[str]] = lambda: None  # why it cannot run on this machine, or None
    applies: Callable[[Tensor], bool] = lambda x: True  # whether it can compute this call's tensors
    auto: Callable[[Tensor], bool] = lambda x: False  # whether ``auto`` takes it for these tensors
    fallback: bool = False  # the exact path of its kind, taken when nothing else is


BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    Backend("reference", "l1", "E-ATT's L1 scores in plain PyTorch, one feature at a time", fallback=True),
    Backend("cpp_l1", "l1", "the compiled CPU kernel of E-ATT's L1 scores (float32 arithmetic)",
            unavailable=_compiled_kernel_error,
            applies=lambda x: x.device.type == "cpu" and x.dtype != torch.float64,
            auto=lambda x: x.device.type == "cpu"),
    Backend("triton_l1", "l1", "Triton kernels of E-ATT's L1 scores (CUDA; a CPU with TRITON_INTERPRET=1)",
            unavailable=_triton_error, applies=lambda x: x.dtype in TRITON_DTYPES,
            auto=lambda x: x.is_cuda),
    Backend("dense", "attend", "the module's own path: scores, masks, softmax, weighted sum", fallback=True),
    Backend("sdpa", "attend", "PyTorch's fused scaled_dot_product_attention (vanilla attention)",
            auto=lambda x: x.is_cuda),
    Backend("triton_fused", "attend", "E-ATT's fused Triton attention (CUDA; a CPU with TRITON_INTERPRET=1)",
            unavailable=_triton_error, applies=lambda x: x.dtype in TRITON_DTYPES, auto=lambda x: x.is_cuda),
    Backend("dense_select", "select", "E-ATT's selection as nn.Linear on the bits (reads all of W_Q / W_K)",
            fallback=True),
    Backend("gather_select", "select", "E-ATT's selection as index_select + index_add of the selected rows of "
            "W^T, in PyTorch (inference only)", applies=_no_gradient),
    Backend("cpp_select", "select", "E-ATT's selection by the compiled CPU kernel: the selected rows of W^T only "
            "(inference only)", unavailable=_compiled_selection_error,
            applies=lambda x: _no_gradient(x) and x.device.type == "cpu" and x.dtype == torch.float32),
)}
KINDS = ("l1", "attend", "select")

_COUNTING = contextvars.ContextVar("fairseq_eatt_counting", default=False)
_warned: set = set()


@contextlib.contextmanager
def counting():
    """Every call inside takes the fallback backends: their aten operations are visible to dispatch modes (the
    operation counter of the energy accounting); compiled and fused kernels are not."""
    token = _COUNTING.set(True)
    try:
        yield
    finally:
        _COUNTING.reset(token)


def is_counting() -> bool:
    return _COUNTING.get()


def setting_is_auto() -> bool:
    """Whether the setting is ``auto`` (unset): a quick test for callers on every forward."""
    return os.environ.get(SETTING, "auto").strip() in ("", "auto")


def preference() -> Tuple[str, ...]:
    """The backends named by the setting, in order (empty for ``auto``); a bad value is an error naming it."""
    for retired, names in RETIRED_SETTINGS.items():
        if retired in os.environ:
            raise ValueError(f"{retired} is no longer read: set {SETTING} to a comma-separated list of backends "
                             f"instead, e.g. {SETTING}={names.split(' ')[0]} (valid here: {names}); "
                             f"unset {retired}")
    text = os.environ.get(SETTING, "auto").strip()
    if text in ("", "auto"):
        return ()
    names = tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"{SETTING}={text!r}: unknown backend {unknown[0]!r}; valid values are auto or a "
                         f"comma-separated list of {', '.join(BACKENDS)}")
    return names


@torch.jit.unused  # eager only: TorchScript and ONNX graphs take the exact fallbacks
def select(kind: str, x: Tensor, offered: Optional[Sequence[str]] = None) -> str:
    """The backend that computes this call of ``kind`` on tensors like ``x``. ``offered``: the ``attend``
    backends exact for the calling module (the fallback is always offered)."""
    fallback = next(b.name for b in BACKENDS.values() if b.kind == kind and b.fallback)
    if _COUNTING.get() or torch.onnx.is_in_onnx_export():
        return fallback
    candidates = [b for b in BACKENDS.values() if b.kind == kind and (offered is None or b.name in offered
                                                                        or b.fallback)]
    listed = [n for n in preference() if BACKENDS[n].kind == kind]
    if listed:
        for name in listed:
            backend = BACKENDS[name]
            if backend not in candidates or not backend.applies(x):
                continue
            error = backend.unavailable()
            if error is not None:
                raise RuntimeError(f"{SETTING} lists {name}, which cannot run here: {error}")
            return name
        return fallback
    for backend in candidates:
        if backend.fallback or not backend.auto(x) or not backend.applies(x):
            continue
        error = backend.unavailable()
        if error is None:
            return backend.name
        if backend.name not in _warned:  # once per process: a slower path, not an error
            _warned.add(backend.name)
            warnings.warn(f"{backend.help}: not used ({error}); attention takes a slower exact path")
    return fallback


def describe() -> str:
    """The backends and the setting, for ``--help`` texts and error messages."""
    lines = [f"{SETTING}: auto, or a comma-separated list of backends in order of preference"]
    for kind in KINDS:
        for b in BACKENDS.values():
            if b.kind == kind:
                status = b.unavailable()
                lines.append(f"  {b.name} ({kind}): {b.help}" + (f" [unavailable: {status}]" if status else ""))
    return "\n".join(lines)

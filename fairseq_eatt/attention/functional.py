"""Autograd functions used by E-ATT: binarization with the paper's surrogate gradient and pairwise L1 scores.

The L1 scores have three implementations that never build the (N, T, S, d) tensor of pairwise differences:
- ``PairwiseL1``, the reference in plain PyTorch (any device and dtype): one feature at a time in forward, the
  signs recomputed in backward;
- a compiled CPU kernel (``fairseq_eatt/csrc/pairwise_l1.cpp``, built by ``pip install``): vectorized loops
  with a hand-written backward, 3-10x faster than the reference on CPU;
- Triton kernels for GPUs (``eatt/triton_kernels.py``, when ``triton`` is installed): score tiles with the
  features reduced in registers, float32 accumulation for float32/float16/bfloat16 inputs.
Which one runs is chosen in :mod:`fairseq_eatt.attention.backends` (kind ``l1``).
"""
import importlib
import math

import torch
from torch import Tensor

from .backends import select

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
LOG_SQRT_2_OVER_PI = math.log(SQRT_2_OVER_PI)


def dot_product_scores(q: Tensor, k: Tensor) -> Tensor:
    """Q K^T in float32 (queries come scaled). A function of its own, not a method that variants reach through
    super(): TorchScript compiles no super() calls."""
    return torch.matmul(q, k.transpose(-1, -2)).float()


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


class BinarizeWithSurrogate(torch.autograd.Function):
    """f(x) = 1 if x > tau else 0 (Eq. 4); backward multiplies the incoming gradient by
    sqrt(2/pi) * exp(-2 (x - tau)^2) (Eq. 5), a Gaussian peaking at the threshold."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.threshold = threshold
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        # float32 so that exp() and the product neither overflow nor underflow in fp16/bf16;
        # sqrt(2/pi) exp(-2 d^2) = exp(log(sqrt(2/pi)) - 2 d^2): two fused passes and an in-place exp
        d = _at_least_fp32(x) - ctx.threshold
        surrogate = torch.addcmul(torch.tensor(LOG_SQRT_2_OVER_PI, dtype=d.dtype, device=d.device), d, d,
                                  value=-2.0, out=d).exp_()
        return surrogate.mul_(_at_least_fp32(grad_out)).to(grad_out.dtype), None


class BinarizeLearnedThreshold(torch.autograd.Function):
    """f(x) = 1 if x > tau else 0 with a learned threshold tau (one per feature, broadcast over the last dim).
    Backward: the same surrogate s = sqrt(2/pi) exp(-2 (x - tau)^2); d/dx = s, d/dtau = -s (f depends on x - tau).
    Forward runs a single comparison per element, as the hardware would."""

    @staticmethod
    def forward(ctx, x: Tensor, threshold: Tensor) -> Tensor:
        ctx.save_for_backward(x, threshold)
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, threshold = ctx.saved_tensors
        d = _at_least_fp32(x) - _at_least_fp32(threshold)
        surrogate = torch.addcmul(torch.tensor(LOG_SQRT_2_OVER_PI, dtype=d.dtype, device=d.device), d, d,
                                  value=-2.0, out=d).exp_()
        grad = surrogate.mul_(_at_least_fp32(grad_out))
        grad_x = grad.to(grad_out.dtype) if ctx.needs_input_grad[0] else None
        grad_tau = None
        if ctx.needs_input_grad[1]:
            grad_tau = grad.reshape(-1, threshold.numel()).sum(dim=0).neg_().view_as(threshold).to(threshold.dtype)
        return grad_x, grad_tau


def binarize(x: Tensor, threshold: float) -> Tensor:
    """1[x > threshold] with the paper's surrogate gradient; in eager mode ``threshold`` may also be a tensor of
    learned thresholds (see :func:`binarize_learned`)."""
    if torch.jit.is_scripting():  # TorchScript (inference) has no autograd Functions: the forward alone
        return (x > threshold).to(x.dtype)
    if isinstance(threshold, Tensor):
        return _binarize_learned_threshold(x, threshold)
    return _binarize_with_surrogate(x, threshold)


def binarize_learned(x: Tensor, threshold: Tensor) -> Tensor:
    """1[x > threshold] for a tensor of one learned threshold per feature (last dimension of ``x``), which gets
    the surrogate gradient too."""
    if torch.jit.is_scripting():
        return (x > threshold).to(x.dtype)
    return _binarize_learned_threshold(x, threshold)


@torch.jit.unused
def _binarize_with_surrogate(x: Tensor, threshold: float) -> Tensor:
    return BinarizeWithSurrogate.apply(x, threshold)


@torch.jit.unused
def _binarize_learned_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    return BinarizeLearnedThreshold.apply(x, threshold)


def l1_by_feature(q: Tensor, k: Tensor) -> Tensor:
    """(n, t, d), (n, s, d) -> (n, t, s) L1 distances in at least float32, one feature at a time into
    preallocated buffers (memory O(n t s), never (n, t, s, d)). The reference forward, and what TorchScript runs."""
    n, t, d = q.shape
    s = k.size(1)
    dtype = torch.promote_types(q.dtype, torch.float32)
    qt = q.to(dtype).transpose(1, 2).contiguous()  # (n, d, t)
    kt = k.to(dtype).transpose(1, 2).contiguous()  # (n, d, s)
    out = torch.zeros(n, t, s, dtype=dtype, device=q.device)
    term = torch.empty_like(out)
    for c in range(d):
        torch.sub(qt[:, c, :, None], kt[:, c, None, :], out=term)
        out.add_(term.abs_())
    return out


class PairwiseL1(torch.autograd.Function):
    """out[n, i, j] = sum_c |q[n, i, c] - k[n, j, c]|, accumulated in float32 (or float64 for float64 inputs).

    One feature at a time into preallocated (N, T, S) buffers: memory stays O(N T S) in forward and backward,
    and only q and k are saved for backward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:
        ctx.save_for_backward(q, k)
        return l1_by_feature(q, k)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k = ctx.saved_tensors
        n, t, d = q.shape
        s = k.size(1)
        qt = _at_least_fp32(q).transpose(1, 2).contiguous()
        kt = _at_least_fp32(k).transpose(1, 2).contiguous()
        g = grad_out.to(qt.dtype)
        grad_qt = torch.empty(n, d, t, dtype=qt.dtype, device=q.device)
        grad_kt = torch.empty(n, d, s, dtype=qt.dtype, device=q.device)
        term = torch.empty(n, t, s, dtype=qt.dtype, device=q.device)
        for c in range(d):
            torch.sub(qt[:, c, :, None], kt[:, c, None, :], out=term)
            term.sign_().mul_(g)  # d|q - k|/dq = sign(q - k)
            grad_qt[:, c] = term.sum(dim=2)
            grad_kt[:, c] = term.sum(dim=1)
        grad_q = grad_qt.transpose(1, 2).to(q.dtype) if ctx.needs_input_grad[0] else None
        grad_k = grad_kt.transpose(1, 2).neg_().to(k.dtype) if ctx.needs_input_grad[1] else None
        return grad_q, grad_k


_KERNEL = None
_KERNEL_ERROR = None


def l1_kernel():
    """The compiled CPU kernel, or None (with the reason in ``l1_kernel_error()``)."""
    global _KERNEL, _KERNEL_ERROR
    if _KERNEL is None and _KERNEL_ERROR is None:
        try:
            # built by setup.py; imported by name: an extension module, not part of the package's import graph
            _KERNEL = importlib.import_module(__name__.rsplit(".", 2)[0] + "._pairwise_l1")
        except ImportError as err:
            _KERNEL_ERROR = f"the compiled L1 kernel is not built ({err}); reinstall with `pip install -e .` " \
                            f"(needs torch importable at build time and a C++ compiler)"
    return _KERNEL


def l1_kernel_error():
    l1_kernel()
    return _KERNEL_ERROR


class PairwiseL1Kernel(torch.autograd.Function):
    """The compiled kernel: float32 on the CPU (other float dtypes are computed in float32 and cast back)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:
        q32, k32 = q.float().contiguous(), k.float().contiguous()
        ctx.save_for_backward(q32, k32)
        ctx.dtypes = (q.dtype, k.dtype)
        return _KERNEL.forward(q32, k32)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q32, k32 = ctx.saved_tensors
        grad_q, grad_k = _KERNEL.backward(grad_out, q32, k32, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return (grad_q.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None,
                grad_k.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None)


def pairwise_l1(q: Tensor, k: Tensor) -> Tensor:
    """L1 distances between every query and key row: (..., T, d), (..., S, d) -> (..., T, S), at least float32."""
    if not torch.jit.is_scripting() and _in_onnx_export():  # ONNX: one broadcast expression, any leading shape
        return l1_broadcast(q, k)
    lead = list(q.shape[:-2])
    n = 1
    for size in lead:
        n *= size
    q3, k3 = q.reshape(n, q.size(-2), q.size(-1)), k.reshape(n, k.size(-2), k.size(-1))
    if torch.jit.is_scripting():  # no autograd Functions or compiled extension in TorchScript
        out = l1_by_feature(q3, k3)
    else:
        out = _pairwise_l1_autograd(q3, k3)
    return out.view(lead + [q.size(-2), k.size(-2)])


@torch.jit.unused
def _in_onnx_export() -> bool:
    return torch.onnx.is_in_onnx_export()


def l1_broadcast(q: Tensor, k: Tensor) -> Tensor:
    """The same L1 distances as one expression that ONNX can express: (..., T, 1, d) - (..., 1, S, d), summed
    over d. It builds the (..., T, S, d) differences, acceptable for one sentence at a time (exported models)."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    return (q.to(dtype).unsqueeze(-2) - k.to(dtype).unsqueeze(-3)).abs().sum(-1)


@torch.jit.unused
def _pairwise_l1_autograd(q3: Tensor, k3: Tensor) -> Tensor:
    backend = select("l1", q3)
    if backend == "triton_l1":
        from .eatt.triton_kernels import TritonPairwiseL1

        return TritonPairwiseL1.apply(q3, k3)
    if backend == "cpp_l1" and q3.size(0) > 0 and q3.size(1) > 0 and k3.size(1) > 0:
        return PairwiseL1Kernel.apply(q3, k3)
    return PairwiseL1.apply(q3, k3)

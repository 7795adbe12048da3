"""Autograd functions used by E-ATT: binarization with the paper's surrogate gradient and pairwise L1 scores.

Both are reference implementations in plain PyTorch. The L1 function never builds the (N, T, S, d) tensor of
pairwise differences: it walks over the features in forward and recomputes the signs in backward.
"""
import math

import torch
from torch import Tensor

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
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
        # float32 so that exp() and the product neither overflow nor underflow in fp16/bf16
        surrogate = SQRT_2_OVER_PI * torch.exp(-2.0 * (_at_least_fp32(x) - ctx.threshold) ** 2)
        return (_at_least_fp32(grad_out) * surrogate).to(grad_out.dtype), None


def binarize(x: Tensor, threshold: float) -> Tensor:
    return BinarizeWithSurrogate.apply(x, threshold)


class PairwiseL1(torch.autograd.Function):
    """out[n, i, j] = sum_c |q[n, i, c] - k[n, j, c]|, accumulated in float32 (or float64 for float64 inputs).

    One feature at a time into preallocated (N, T, S) buffers: memory stays O(N T S) in forward and backward,
    and only q and k are saved for backward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:
        ctx.save_for_backward(q, k)
        n, t, d = q.shape
        s = k.size(1)
        qt = _at_least_fp32(q).transpose(1, 2).contiguous()  # (n, d, t)
        kt = _at_least_fp32(k).transpose(1, 2).contiguous()  # (n, d, s)
        out = torch.zeros(n, t, s, dtype=qt.dtype, device=q.device)
        term = torch.empty_like(out)
        for c in range(d):
            torch.sub(qt[:, c, :, None], kt[:, c, None, :], out=term)
            out.add_(term.abs_())
        return out

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


def pairwise_l1(q: Tensor, k: Tensor) -> Tensor:
    """L1 distances between every query and key row: (..., T, d), (..., S, d) -> (..., T, S), at least float32."""
    lead = q.shape[:-2]
    out = PairwiseL1.apply(q.reshape(-1, q.size(-2), q.size(-1)), k.reshape(-1, k.size(-2), k.size(-1)))
    return out.view(*lead, q.size(-2), k.size(-2))

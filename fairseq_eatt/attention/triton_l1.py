"""E-ATT's pairwise L1 scores as Triton kernels, forward and backward (GPU users install ``triton``).

out[n, i, j] = sum_c |q[n, i, c] - k[n, j, c]|. Tiled like a matrix product: each program owns a (BLOCK_T x BLOCK_S)
tile of scores and walks the features BLOCK_D at a time, reducing them in registers, so no (T, S, d) buffer exists.
Backward recomputes the signs tile by tile: grad_q[i, c] = sum_j g[i, j] sign(q[i, c] - k[j, c]) and grad_k[j, c] =
-sum_i g[i, j] sign(q[i, c] - k[j, c]), each program owning a tile of one gradient and walking the other length.
Inputs may be float32, float16 or bfloat16; loads are converted to float32 and every sum is accumulated in float32.
The scores are float32 (as the reference's); the gradients come back in the inputs' dtypes.

Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is imported) runs the same kernels on CPU tensors:
the test suite checks them there against the reference.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

try:  # optional: only GPU users need it
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised where triton is absent
    triton = None
    _IMPORT_ERROR: Optional[str] = f"triton is not installed ({err}); pip install triton"
else:
    _IMPORT_ERROR = None

BLOCK_T, BLOCK_S, BLOCK_D = 32, 32, 8  # a 32 x 32 score tile, 8 features at a time in registers


def triton_error() -> Optional[str]:
    """Why the Triton kernels cannot run here, or None."""
    return _IMPORT_ERROR


if triton is not None:

    @triton.jit
    def _forward_kernel(q_ptr, k_ptr, out_ptr, T, S, D,
                        q_n, q_t, q_d, k_n, k_s, k_d, o_n, o_t, o_s,
                        BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        n = tl.program_id(0)
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        cols = tl.program_id(2) * BS + tl.arange(0, BS)
        acc = tl.zeros((BT, BS), dtype=tl.float32)
        for d0 in range(0, D, BD):
            feats = d0 + tl.arange(0, BD)
            q = tl.load(q_ptr + n * q_n + rows[:, None] * q_t + feats[None, :] * q_d,
                        mask=(rows[:, None] < T) & (feats[None, :] < D), other=0.0).to(tl.float32)
            k = tl.load(k_ptr + n * k_n + cols[:, None] * k_s + feats[None, :] * k_d,
                        mask=(cols[:, None] < S) & (feats[None, :] < D), other=0.0).to(tl.float32)
            acc += tl.sum(tl.abs(q[:, None, :] - k[None, :, :]), axis=2)  # features beyond D are 0 - 0
        tl.store(out_ptr + n * o_n + rows[:, None] * o_t + cols[None, :] * o_s, acc,
                 mask=(rows[:, None] < T) & (cols[None, :] < S))

    @triton.jit
    def _grad_q_kernel(q_ptr, k_ptr, g_ptr, gq_ptr, T, S, D,
                       q_n, q_t, q_d, k_n, k_s, k_d, g_n, g_t, g_s, r_n, r_t, r_d,
                       BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        n = tl.program_id(0)
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        feats = tl.program_id(2) * BD + tl.arange(0, BD)
        q = tl.load(q_ptr + n * q_n + rows[:, None] * q_t + feats[None, :] * q_d,
                    mask=(rows[:, None] < T) & (feats[None, :] < D), other=0.0).to(tl.float32)
        acc = tl.zeros((BT, BD), dtype=tl.float32)
        for s0 in range(0, S, BS):
            cols = s0 + tl.arange(0, BS)
            k = tl.load(k_ptr + n * k_n + cols[:, None] * k_s + feats[None, :] * k_d,
                        mask=(cols[:, None] < S) & (feats[None, :] < D), other=0.0).to(tl.float32)
            g = tl.load(g_ptr + n * g_n + rows[:, None] * g_t + cols[None, :] * g_s,
                        mask=(rows[:, None] < T) & (cols[None, :] < S), other=0.0).to(tl.float32)
            diff = q[:, None, :] - k[None, :, :]
            sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
            acc += tl.sum(sign * g[:, :, None], axis=1)  # padded keys have g = 0
        tl.store(gq_ptr + n * r_n + rows[:, None] * r_t + feats[None, :] * r_d, acc,
                 mask=(rows[:, None] < T) & (feats[None, :] < D))

    @triton.jit
    def _grad_k_kernel(q_ptr, k_ptr, g_ptr, gk_ptr, T, S, D,
                       q_n, q_t, q_d, k_n, k_s, k_d, g_n, g_t, g_s, r_n, r_s, r_d,
                       BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        n = tl.program_id(0)
        cols = tl.program_id(1) * BS + tl.arange(0, BS)
        feats = tl.program_id(2) * BD + tl.arange(0, BD)
        k = tl.load(k_ptr + n * k_n + cols[:, None] * k_s + feats[None, :] * k_d,
                    mask=(cols[:, None] < S) & (feats[None, :] < D), other=0.0).to(tl.float32)
        acc = tl.zeros((BS, BD), dtype=tl.float32)
        for t0 in range(0, T, BT):
            rows = t0 + tl.arange(0, BT)
            q = tl.load(q_ptr + n * q_n + rows[:, None] * q_t + feats[None, :] * q_d,
                        mask=(rows[:, None] < T) & (feats[None, :] < D), other=0.0).to(tl.float32)
            g = tl.load(g_ptr + n * g_n + rows[:, None] * g_t + cols[None, :] * g_s,
                        mask=(rows[:, None] < T) & (cols[None, :] < S), other=0.0).to(tl.float32)
            diff = q[:, None, :] - k[None, :, :]
            sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
            acc -= tl.sum(sign * g[:, :, None], axis=0)  # d|q - k|/dk = -sign(q - k); padded queries: g = 0
        tl.store(gk_ptr + n * r_n + cols[:, None] * r_s + feats[None, :] * r_d, acc,
                 mask=(cols[:, None] < S) & (feats[None, :] < D))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def l1_forward(q: Tensor, k: Tensor) -> Tensor:
    """(N, T, d), (N, S, d) -> (N, T, S) float32 scores."""
    n, t, d = q.shape
    s = k.size(1)
    out = torch.empty(n, t, s, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out.zero_()
    grid = (n, _cdiv(t, BLOCK_T), _cdiv(s, BLOCK_S))
    _forward_kernel[grid](q, k, out, t, s, d, *q.stride(), *k.stride(), *out.stride(),
                          BT=BLOCK_T, BS=BLOCK_S, BD=BLOCK_D)
    return out


def l1_backward(q: Tensor, k: Tensor, grad: Tensor, need_q: bool, need_k: bool
                ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Float32 gradients of the scores' sum weighted by ``grad`` (N, T, S) with respect to q and k."""
    n, t, d = q.shape
    s = k.size(1)
    grad_q = grad_k = None
    if need_q:
        grad_q = torch.zeros(n, t, d, dtype=torch.float32, device=q.device)
        if grad_q.numel() and s:
            _grad_q_kernel[(n, _cdiv(t, BLOCK_T), _cdiv(d, BLOCK_D))](
                q, k, grad, grad_q, t, s, d, *q.stride(), *k.stride(), *grad.stride(), *grad_q.stride(),
                BT=BLOCK_T, BS=BLOCK_S, BD=BLOCK_D)
    if need_k:
        grad_k = torch.zeros(n, s, d, dtype=torch.float32, device=q.device)
        if grad_k.numel() and t:
            _grad_k_kernel[(n, _cdiv(s, BLOCK_S), _cdiv(d, BLOCK_D))](
                q, k, grad, grad_k, t, s, d, *q.stride(), *k.stride(), *grad.stride(), *grad_k.stride(),
                BT=BLOCK_T, BS=BLOCK_S, BD=BLOCK_D)
    return grad_q, grad_k


class TritonPairwiseL1(torch.autograd.Function):
    """Autograd wrapper of the kernels: float32 scores, gradients in the inputs' dtypes."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor) -> Tensor:
        ctx.save_for_backward(q, k)
        return l1_forward(q, k)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k = ctx.saved_tensors
        grad_q, grad_k = l1_backward(q, k, grad_out.float(), ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return (grad_q.to(q.dtype) if grad_q is not None else None,
                grad_k.to(k.dtype) if grad_k is not None else None)

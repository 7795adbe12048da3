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
import os
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
    def _load(ptr, rows, cols, row_stride, col_stride, n_rows, n_cols):
        """ptr[rows, cols] as float32, 0 outside (n_rows, n_cols)."""
        return tl.load(ptr + rows[:, None] * row_stride + cols[None, :] * col_stride,
                       mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0).to(tl.float32)

    @triton.jit
    def _sign(x):
        return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))

    @triton.jit
    def _l1_tile(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d,
                 BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        """(BT, BS) L1 distances of one sentence's query and key rows, BD features at a time in registers."""
        acc = tl.zeros((BT, BS), dtype=tl.float32)
        for d0 in range(0, D, BD):
            feats = d0 + tl.arange(0, BD)
            q = _load(q_ptr, rows, feats, q_t, q_d, T, D)
            k = _load(k_ptr, cols, feats, k_s, k_d, S, D)
            acc += tl.sum(tl.abs(q[:, None, :] - k[None, :, :]), axis=2)  # features beyond D are 0 - 0
        return acc

    @triton.jit
    def _forward_kernel(q_ptr, k_ptr, out_ptr, T, S, D,
                        q_n, q_t, q_d, k_n, k_s, k_d, o_n, o_t, o_s,
                        BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        n = tl.program_id(0)
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        cols = tl.program_id(2) * BS + tl.arange(0, BS)
        acc = _l1_tile(q_ptr + n * q_n, k_ptr + n * k_n, rows, cols, T, S, D, q_t, q_d, k_s, k_d, BT, BS, BD)
        tl.store(out_ptr + n * o_n + rows[:, None] * o_t + cols[None, :] * o_s, acc,
                 mask=(rows[:, None] < T) & (cols[None, :] < S))

    @triton.jit
    def _grad_kernel(a_ptr, b_ptr, g_ptr, out_ptr, T, S, D,
                     a_n, a_t, a_d, b_n, b_s, b_d, g_n, g_t, g_s, r_n, r_t, r_d,
                     BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
        """out[i, c] = sum_j g[i, j] sign(a[i, c] - b[j, c]): grad_q with (q, k, g), grad_k with (k, q, g^T) since
        d|q - k|/dk = sign(k - q)."""
        n = tl.program_id(0)
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        feats = tl.program_id(2) * BD + tl.arange(0, BD)
        a = _load(a_ptr + n * a_n, rows, feats, a_t, a_d, T, D)
        acc = tl.zeros((BT, BD), dtype=tl.float32)
        for s0 in range(0, S, BS):
            cols = s0 + tl.arange(0, BS)
            b = _load(b_ptr + n * b_n, cols, feats, b_s, b_d, S, D)
            g = _load(g_ptr + n * g_n, rows, cols, g_t, g_s, T, S)
            acc += tl.sum(_sign(a[:, None, :] - b[None, :, :]) * g[:, :, None], axis=1)  # g = 0 beyond S
        tl.store(out_ptr + n * r_n + rows[:, None] * r_t + feats[None, :] * r_d, acc,
                 mask=(rows[:, None] < T) & (feats[None, :] < D))


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
    g_n, g_t, g_s = grad.stride()
    if need_q:
        grad_q = torch.zeros(n, t, d, dtype=torch.float32, device=q.device)
        if grad_q.numel() and s:
            _grad_kernel[(n, _cdiv(t, BLOCK_T), _cdiv(d, BLOCK_D))](
                q, k, grad, grad_q, t, s, d, *q.stride(), *k.stride(), g_n, g_t, g_s, *grad_q.stride(),
                BT=BLOCK_T, BS=BLOCK_S, BD=BLOCK_D)
    if need_k:
        grad_k = torch.zeros(n, s, d, dtype=torch.float32, device=q.device)
        if grad_k.numel() and t:
            _grad_kernel[(n, _cdiv(s, BLOCK_S), _cdiv(d, BLOCK_D))](  # g transposed through its strides
                k, q, grad, grad_k, s, t, d, *k.stride(), *q.stride(), g_n, g_s, g_t, *grad_k.stride(),
                BT=BLOCK_S, BS=BLOCK_T, BD=BLOCK_D)
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


# ---- fused E-ATT attention (flash-style): L1 scores, masks, softmax and the weighted sum of values ----
# Forward: each program owns BLOCK_T queries of one (sentence, head) row and walks the keys BLOCK_S at a time with an
# online softmax, so neither the scores nor the probabilities are stored; it keeps each query's log-sum-exp for the
# backward. Backward recomputes the probabilities tile by tile (FlashAttention-2's split): one kernel owns queries and
# accumulates dQ, one owns keys and accumulates dK and dV. The scores are s = -scale * |q - k|_1 plus the additive
# mask (T, S) and -inf at padded keys; a query whose keys are all masked gets zeros (as the dense path). Products with
# the values (P V, dO V^T, P^T dO) are tl.dot matrix products; the L1 terms cannot be, they are reduced in registers.

FUSED_T, FUSED_S = 16, 16

if triton is not None:

    @triton.jit
    def _dot(a, b, DOT: tl.constexpr):
        """a @ b with float32 accumulation: exact float32 products for float32 models, tensor-core products in the
        model's half dtype otherwise (as the dense path's matrix products under autocast)."""
        if DOT == tl.float32:
            return tl.dot(a, b, input_precision="ieee")
        return tl.dot(a.to(DOT), b.to(DOT))

    @triton.jit
    def _tile_scores(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d, mask_ptr, m_t, m_s, pad_ptr, p_s, scale,
                     HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
                     BD: tl.constexpr):
        """(BT, BS) masked scores of one tile, -inf outside the lengths (pad_ptr: this sentence's padding row)."""
        s = -scale * _l1_tile(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d, BT, BS, BD)
        if HAS_MASK:
            s += _load(mask_ptr, rows, cols, m_t, m_s, T, S)
        if HAS_PAD:
            padded = tl.load(pad_ptr + cols * p_s, mask=cols < S, other=1)
            s = tl.where(padded[None, :] != 0, float("-inf"), s)
        return tl.where(cols[None, :] < S, s, float("-inf"))

    @triton.jit
    def _add_to(ptr, rows, cols, row_stride, col_stride, n_rows, n_cols, value):
        """ptr[rows, cols] += value inside (n_rows, n_cols); only this program writes these places."""
        inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        target = ptr + rows[:, None] * row_stride + cols[None, :] * col_stride
        tl.store(target, tl.load(target, mask=inside, other=0.0) + value, mask=inside)

    @triton.jit
    def _fused_forward_kernel(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, mask_ptr, pad_ptr, T, S, D, DV, heads, scale,
                              q_n, q_t, q_d, k_n, k_s, k_d, v_n, v_s, v_d, o_n, o_t, o_d, m_t, m_s, p_b, p_s,
                              HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
                              BD: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
        n = tl.program_id(0)
        q_ptr, k_ptr, v_ptr, pad_ptr = q_ptr + n * q_n, k_ptr + n * k_n, v_ptr + n * v_n, pad_ptr + (n // heads) * p_b
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        vcols = tl.arange(0, BV)
        m_i = tl.full((BT,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BT,), dtype=tl.float32)
        acc = tl.zeros((BT, BV), dtype=tl.float32)
        for s0 in range(0, S, BS):
            cols = s0 + tl.arange(0, BS)
            s = _tile_scores(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d, mask_ptr, m_t, m_s, pad_ptr, p_s,
                             scale, HAS_MASK, HAS_PAD, BT, BS, BD)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row masked so far: no NaN from -inf - -inf
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            acc = acc * alpha[:, None] + _dot(p, _load(v_ptr, cols, vcols, v_s, v_d, S, DV), DOT)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            m_i = m_new
        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        tl.store(out_ptr + n * o_n + rows[:, None] * o_t + vcols[None, :] * o_d, out,
                 mask=(rows[:, None] < T) & (vcols[None, :] < DV))
        lse = tl.where(empty, float("inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))  # inf: probabilities 0
        tl.store(lse_ptr + n * T + rows, lse, mask=rows < T)

    @triton.jit
    def _fused_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, mask_ptr, pad_ptr,
                         T, S, D, DV, heads, scale,
                         q_n, q_t, q_d, k_n, k_s, k_d, v_n, v_s, v_d, g_n, g_t, g_d, r_n, r_t, r_d, m_t, m_s,
                         p_b, p_s, HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr, BT: tl.constexpr,
                         BS: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr):
        n = tl.program_id(0)
        q_ptr, k_ptr, v_ptr, pad_ptr = q_ptr + n * q_n, k_ptr + n * k_n, v_ptr + n * v_n, pad_ptr + (n // heads) * p_b
        rows = tl.program_id(1) * BT + tl.arange(0, BT)
        lse = tl.load(lse_ptr + n * T + rows, mask=rows < T, other=float("inf"))
        delta = tl.load(delta_ptr + n * T + rows, mask=rows < T, other=0.0)
        do = _load(do_ptr + n * g_n, rows, tl.arange(0, BV), g_t, g_d, T, DV)
        for s0 in range(0, S, BS):
            cols = s0 + tl.arange(0, BS)
            s = _tile_scores(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d, mask_ptr, m_t, m_s, pad_ptr, p_s,
                             scale, HAS_MASK, HAS_PAD, BT, BS, BD)
            p = tl.exp(s - lse[:, None])
            dp = _dot(do, tl.trans(_load(v_ptr, cols, tl.arange(0, BV), v_s, v_d, S, DV)), DOT)
            dl1 = -scale * p * (dp - delta[:, None])  # d loss / d |q - k|_1
            for d0 in range(0, D, BD):
                feats = d0 + tl.arange(0, BD)
                diff = _load(q_ptr, rows, feats, q_t, q_d, T, D)[:, None, :] - \
                    _load(k_ptr, cols, feats, k_s, k_d, S, D)[None, :, :]
                _add_to(dq_ptr + n * r_n, rows, feats, r_t, r_d, T, D, tl.sum(_sign(diff) * dl1[:, :, None], axis=1))

    @triton.jit
    def _fused_dkv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, mask_ptr, pad_ptr,
                          T, S, D, DV, heads, scale,
                          q_n, q_t, q_d, k_n, k_s, k_d, v_n, v_s, v_d, g_n, g_t, g_d, r_n, r_s, r_d,
                          w_n, w_s, w_d, m_t, m_s, p_b, p_s, HAS_MASK: tl.constexpr, HAS_PAD: tl.constexpr,
                          BT: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr, BV: tl.constexpr,
                          DOT: tl.constexpr):
        n = tl.program_id(0)
        q_ptr, k_ptr, v_ptr, pad_ptr = q_ptr + n * q_n, k_ptr + n * k_n, v_ptr + n * v_n, pad_ptr + (n // heads) * p_b
        cols = tl.program_id(1) * BS + tl.arange(0, BS)
        vcols = tl.arange(0, BV)
        v = _load(v_ptr, cols, vcols, v_s, v_d, S, DV)
        dv = tl.zeros((BS, BV), dtype=tl.float32)
        for t0 in range(0, T, BT):
            rows = t0 + tl.arange(0, BT)
            s = _tile_scores(q_ptr, k_ptr, rows, cols, T, S, D, q_t, q_d, k_s, k_d, mask_ptr, m_t, m_s, pad_ptr, p_s,
                             scale, HAS_MASK, HAS_PAD, BT, BS, BD)
            lse = tl.load(lse_ptr + n * T + rows, mask=rows < T, other=float("inf"))
            delta = tl.load(delta_ptr + n * T + rows, mask=rows < T, other=0.0)
            p = tl.exp(s - lse[:, None])  # padded query rows: lse inf, p 0
            do = _load(do_ptr + n * g_n, rows, vcols, g_t, g_d, T, DV)
            dv += _dot(tl.trans(p), do, DOT)
            dl1 = -scale * p * (_dot(do, tl.trans(v), DOT) - delta[:, None])
            for d0 in range(0, D, BD):
                feats = d0 + tl.arange(0, BD)
                diff = _load(q_ptr, rows, feats, q_t, q_d, T, D)[:, None, :] - \
                    _load(k_ptr, cols, feats, k_s, k_d, S, D)[None, :, :]
                _add_to(dk_ptr + n * r_n, cols, feats, r_s, r_d, S, D, -tl.sum(_sign(diff) * dl1[:, :, None], axis=0))
        tl.store(dv_ptr + n * w_n + cols[:, None] * w_s + vcols[None, :] * w_d, dv,
                 mask=(cols[:, None] < S) & (vcols[None, :] < DV))


def _value_block(dv: int) -> int:
    """The value features' block: a power of two, at least 16 (the smallest matrix product tl.dot takes)."""
    return max(16, 1 << max(0, (dv - 1).bit_length()))


_DOT_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _dot_dtype(v: Tensor):
    name = _DOT_DTYPES.get(v.dtype, "float32")
    if name == "bfloat16" and os.environ.get("TRITON_INTERPRET") == "1":
        name = "float32"  # Triton 3.x's interpreter multiplies bfloat16 blocks wrongly in tl.dot (GPUs do not)
    return getattr(tl, name)


def _mask_args(q: Tensor, attn_mask: Optional[Tensor], padding: Optional[Tensor]):
    dummy = torch.zeros(1, dtype=torch.float32, device=q.device)
    mask = attn_mask.float() if attn_mask is not None else dummy
    pad = padding.to(torch.int8) if padding is not None else dummy.to(torch.int8)
    mask_strides = mask.stride() if attn_mask is not None else (0, 0)
    pad_strides = pad.stride() if padding is not None else (0, 0)
    return mask, pad, mask_strides, pad_strides


def fused_forward(q, k, v, scale: float, heads: int, attn_mask: Optional[Tensor], padding: Optional[Tensor]):
    """(out (N, T, dv) float32, log-sum-exp (N, T))."""
    n, t, d = q.shape
    s, dv = k.size(1), v.size(2)
    out = torch.zeros(n, t, dv, dtype=torch.float32, device=q.device)
    lse = torch.full((n, t), float("inf"), dtype=torch.float32, device=q.device)
    if n == 0 or t == 0:
        return out, lse
    mask, pad, ms, ps = _mask_args(q, attn_mask, padding)
    _fused_forward_kernel[(n, _cdiv(t, FUSED_T))](
        q, k, v, out, lse, mask, pad, t, s, d, dv, heads, scale, *q.stride(), *k.stride(), *v.stride(),
        *out.stride(), *ms, *ps, HAS_MASK=attn_mask is not None, HAS_PAD=padding is not None,
        BT=FUSED_T, BS=FUSED_S, BD=BLOCK_D, BV=_value_block(dv), DOT=_dot_dtype(v))
    return out, lse


class FusedEattAttention(torch.autograd.Function):
    """softmax(-scale * |q - k|_1 + mask) @ v without storing the (T, S) scores; float32 accumulation."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, heads: int, attn_mask: Optional[Tensor], padding: Optional[Tensor]):
        out, lse = fused_forward(q, k, v, scale, heads, attn_mask, padding)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.heads, ctx.attn_mask, ctx.padding = scale, heads, attn_mask, padding
        return out.to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        n, t, d = q.shape
        s, dv = k.size(1), v.size(2)
        do = grad_out.float().contiguous()
        delta = (do * out).sum(dim=-1).contiguous()  # rowsum(dO * O)
        dq = torch.zeros(n, t, d, dtype=torch.float32, device=q.device)
        dk = torch.zeros(n, s, d, dtype=torch.float32, device=q.device)
        dvv = torch.zeros(n, s, dv, dtype=torch.float32, device=q.device)
        if n and t and s:
            mask, pad, ms, ps = _mask_args(q, ctx.attn_mask, ctx.padding)
            common = dict(HAS_MASK=ctx.attn_mask is not None, HAS_PAD=ctx.padding is not None, BT=FUSED_T,
                          BS=FUSED_S, BD=BLOCK_D, BV=_value_block(dv), DOT=_dot_dtype(v))
            _fused_dq_kernel[(n, _cdiv(t, FUSED_T))](
                q, k, v, do, lse, delta, dq, mask, pad, t, s, d, dv, ctx.heads, ctx.scale, *q.stride(),
                *k.stride(), *v.stride(), *do.stride(), *dq.stride(), *ms, *ps, **common)
            _fused_dkv_kernel[(n, _cdiv(s, FUSED_S))](
                q, k, v, do, lse, delta, dk, dvv, mask, pad, t, s, d, dv, ctx.heads, ctx.scale, *q.stride(),
                *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dvv.stride(), *ms, *ps, **common)
        return dq.to(q.dtype), dk.to(k.dtype), dvv.to(v.dtype), None, None, None, None

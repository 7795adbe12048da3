"""Count the arithmetic a forward pass actually executes, to check the declared operation counts.

Run code under :class:`OpCounter` (a ``TorchDispatchMode``); every aten operation on floating-point tensors is
charged as follows, and nothing else is:

- matrix products (``mm``, ``bmm``, ``addmm``, ``baddbmm``): n*k*m multiplications and n*(k-1)*m additions, plus
  n*m additions for a bias. If the left operand is all 0/1 (E-ATT's binarized input) the product is a selection:
  no multiplications, and each output sums its selected rows (|selected| - 1 additions, plus the bias).
- elementwise ``add``/``sub`` (additions) and ``mul``/``div`` (multiplications): one per output element;
  ``sum`` reductions: inputs minus outputs additions; ``cumsum``: one addition per element past the first.
- comparisons (``gt``, ``lt``, ``ge``, ``le``) of floating-point data: one ``cmp`` per output element
  (comparisons of integer positions, for masks and sparse patterns, are bookkeeping, not charged).
- E-ATT's L1 scores run through the reference implementation while counting (its per-feature subtractions and
  additions are aten operations; the compiled kernel does the same arithmetic out of the dispatcher's sight).
- layer norms (``native_layer_norm``): by :func:`fairseq_eatt.energy.ops.layer_norm_ops` for their shape and
  affinity, the arithmetic of a layer norm (the paper counts none; only the complete convention declares them).
- not charged, as in the paper's Appendix A (the ``FREE`` set): activations (softmax, exp, relu, abs, with the
  max and clamps that keep them finite), and data movement (views, copies, gathers, masking with
  ``masked_fill``). Any other floating-point operation stops the measurement (:class:`UncountedOperation`), so
  nothing is charged zero silently.
"""
import math

from torch.utils._python_dispatch import TorchDispatchMode

import torch

from .ops import OpCounts, layer_norm_ops

aten = torch.ops.aten
_ADD = {aten.add.Tensor, aten.add_.Tensor, aten.sub.Tensor, aten.sub_.Tensor, aten.rsub.Scalar, aten.sub.out,
        aten.add.Scalar, aten.sub.Scalar}
_MUL = {aten.mul.Tensor, aten.mul_.Tensor, aten.div.Tensor, aten.div_.Tensor, aten.mul.Scalar, aten.div.Scalar}
_CMP = {aten.gt.Scalar, aten.gt.Tensor, aten.lt.Scalar, aten.lt.Tensor, aten.ge.Scalar, aten.le.Scalar}


# not charged, as in the paper's Appendix A; any other floating-point operation stops the measurement
FREE = {
    # activations and their numerical safeguards (softmax's max, performer's normalization, clamps)
    aten._softmax, aten.exp, aten.relu, aten.abs, aten.abs_, aten.amax, aten.clamp, aten.clamp_min,
    # data movement: views, copies, padding, gathers, new buffers
    aten.view, aten._unsafe_view, aten.alias, aten.squeeze, aten.expand, aten.permute, aten.transpose, aten.t, aten.select, aten.slice,
    aten.unsqueeze, aten.unfold, aten.clone, aten.detach, aten._to_copy, aten.constant_pad_nd, aten.gather,
    aten.index, aten.empty_like, aten.new_zeros, aten.zeros, aten.cat,
    # masking: a selection, not arithmetic
    aten.masked_fill, aten.tril_,
}


class UncountedOperation(RuntimeError):
    """A forward pass ran arithmetic the op counter does not know: its counts would be silently low."""


def _is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


def _matmul(a: torch.Tensor, b: torch.Tensor) -> OpCounts:
    """a: (..., n, k), b: (..., k, m)."""
    m = b.shape[-1]
    if _is_binary(a):
        selected = a.reshape(-1, a.shape[-1]).sum(-1)
        return OpCounts(add=float((selected - 1).clamp(min=0).sum()) * m)
    batch = a.numel() // (a.shape[-2] * a.shape[-1])
    n, k = a.shape[-2], a.shape[-1]
    return OpCounts(mul=batch * n * k * m, add=batch * n * (k - 1) * m)


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = OpCounts()
        self.unknown = set()  # floating-point operations neither charged nor declared free (see measure)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket is aten.native_layer_norm:  # returns (output, mean, rstd)
            d = math.prod(args[1])
            affine = len(args) > 2 and args[2] is not None
            self.counts = self.counts + layer_norm_ops(args[0].numel() // d, d, affine)
            return out
        floating = isinstance(out, torch.Tensor) and out.is_floating_point()
        if not floating:
            # comparisons of data (E-ATT's binarization), not of integer positions (masks, patterns)
            if func in _CMP and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                self.counts = self.counts + OpCounts(cmp=out.numel())
            return out
        packet = func.overloadpacket
        if packet in (aten.mm, aten.bmm):
            self.counts = self.counts + _matmul(args[0], args[1])
        elif packet in (aten.addmm, aten.baddbmm):
            self.counts = self.counts + _matmul(args[1], args[2]) + OpCounts(add=out.numel())
        elif func in _ADD:
            self.counts = self.counts + OpCounts(add=out.numel())
        elif func in _MUL:
            self.counts = self.counts + OpCounts(mul=out.numel())
        elif packet is aten.sum:
            self.counts = self.counts + OpCounts(add=args[0].numel() - out.numel())
        elif packet is aten.cumsum:
            dim = args[1] % out.dim()
            self.counts = self.counts + OpCounts(add=out.numel() - out.numel() // out.shape[dim])
        elif packet not in FREE:
            self.unknown.add(str(packet))
        return out


def measure(fn, *args, **kwargs):
    """(result, OpCounts) of ``fn(*args, **kwargs)`` under no_grad."""
    from ..attention.functional import reference_l1

    with torch.no_grad(), reference_l1(), OpCounter() as counter:
        result = fn(*args, **kwargs)
    if counter.unknown:
        raise UncountedOperation(
            f"the op counter met floating-point operations it neither charges nor declares free: "
            f"{', '.join(sorted(counter.unknown))}; add each to the charged operations or to FREE with its reason "
            f"(fairseq_eatt/energy/measure.py)")
    return result, counter.counts

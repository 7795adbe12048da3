"""Count the arithmetic a forward pass actually executes, to check the declared operation counts.

Run code under :class:`OpCounter` (a ``TorchDispatchMode``); every aten operation on floating-point tensors is
charged as follows, and nothing else is:

- matrix products (``mm``, ``bmm``, ``addmm``, ``baddbmm``): n*k*m multiplications and n*(k-1)*m additions, plus
  n*m additions for a bias. If the left operand is all 0/1 with some 1 over k > 1 terms (E-ATT's binarized input) the product is a selection:
  no multiplications, and each output sums its selected rows (|selected| - 1 additions, plus the bias).
  If instead the right operand's columns each hold one magnitude and zeros ({-a_c, 0, +a_c}: binary or ternary
  weights with a scale per output channel), each output adds and subtracts its n_c kept inputs (n_c - 1
  additions) and multiplies once by its scale.
- elementwise ``add``/``sub`` (additions) and ``mul``/``div`` (multiplications): one per output element;
  ``sum`` reductions: inputs minus outputs additions; ``cumsum``: one addition per element past the first.
- a ``max`` over n floating-point values: n - 1 comparisons; a ``sort`` of n: n * ceil(log2 n) (token pruning's
  ranking, early exit's confidence).
- comparisons (``gt``, ``lt``, ``ge``, ``le``) of floating-point data: one ``cmp`` per output element
  (comparisons of integer positions, for masks and sparse patterns, are bookkeeping, not charged).
- E-ATT's L1 scores run through the reference implementation while counting (its per-feature subtractions and
  additions are aten operations; the compiled kernel does the same arithmetic out of the dispatcher's sight).
- layer norms (``native_layer_norm``): by :func:`fairseq_eatt.attention.counts.layer_norm_ops` for their shape and
  affinity, the arithmetic of a layer norm (the paper counts none; only the complete convention declares them).
- not charged, as in the paper's Appendix A (the ``FREE`` set): activations (softmax, exp, relu, abs, with the
  max and clamps that keep them finite), and data movement (views, copies, gathers, masking with
  ``masked_fill``). Any other floating-point operation stops the measurement (:class:`UncountedOperation`), so
  nothing is charged zero silently.
"""
import math
from typing import Optional

from torch.utils._python_dispatch import TorchDispatchMode

import torch

from ..attention.counts import OpCounts, layer_norm_ops

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
    # lookups, reorders and new buffers (embeddings, beam search's index_select), random draws (layerdrop)
    aten.embedding, aten.index_select, aten.empty, aten.fill_, aten.full, aten.uniform_,
    # token pruning's and early exit's choices: a sigmoid score (an activation), picks by mask, kept counts rounded
    aten.sigmoid, aten.where, aten.ceil, aten.scatter_, aten.full_like,
}
# comparisons whose output is not a floating-point tensor: a max over d values takes d - 1 comparisons; a sort of n
# values n * ceil(log2 n) (token pruning's ranking, early exit's confidence)
_SEARCHES = {aten.max, aten.sort}


class UncountedOperation(RuntimeError):
    """A forward pass ran arithmetic the op counter does not know: its counts would be silently low."""


def is_binary_code(t: torch.Tensor) -> bool:
    """0/1 data with at least one 1 (an all-zero operand, e.g. a layer norm of a constant vector, is a product
    of zeros, still computed)."""
    return bool(((t == 0) | (t == 1)).all()) and bool((t == 1).any())


def _column_terms(b: torch.Tensor) -> Optional[torch.Tensor]:
    """Nonzero terms per column of a 2-D right operand whose columns each hold one magnitude and zeros
    ({-a_c, 0, +a_c}: binary or ternary weights with one scale per output channel), else None."""
    if b.dim() != 2 or b.shape[0] < 2:
        return None
    magnitude = b.abs()
    scale = magnitude.amax(dim=0, keepdim=True)
    if not bool(((magnitude == 0) | (magnitude == scale)).all()):
        return None
    terms = (magnitude != 0).sum(dim=0)
    return terms if bool((terms > 1).any()) else None


def _matmul(a: torch.Tensor, b: torch.Tensor) -> OpCounts:
    """a: (..., n, k), b: (..., k, m)."""
    m = b.shape[-1]
    # a one-term product (softmax over a single key gives probability 1) is a multiplication, not a selection
    if a.shape[-1] > 1 and is_binary_code(a):
        selected = a.reshape(-1, a.shape[-1]).sum(-1)
        return OpCounts(add=float((selected - 1).clamp(min=0).sum()) * m)
    batch = a.numel() // (a.shape[-2] * a.shape[-1])
    n, k = a.shape[-2], a.shape[-1]
    terms = _column_terms(b)
    if terms is not None:  # binary/ternary weights: add and subtract the kept inputs, then one scale per output
        return OpCounts(mul=batch * n * m, add=batch * n * float((terms - 1).clamp(min=0).sum()))
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
        if func.overloadpacket in _SEARCHES and isinstance(args[0], torch.Tensor) and args[0].is_floating_point() \
                and args[0].dim() > 0:
            dim = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("dim", None)
            n = args[0].numel() if dim is None and func.overloadpacket is aten.max else args[0].shape[
                -1 if dim is None else dim]
            groups = args[0].numel() // max(n, 1)
            per_group = n - 1 if func.overloadpacket is aten.max else n * math.ceil(math.log2(max(n, 2)))
            self.counts = self.counts + OpCounts(cmp=groups * per_group)
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
        elif packet is aten.mean:  # a sum, then one division per output
            self.counts = self.counts + OpCounts(add=args[0].numel() - out.numel(), mul=out.numel())
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
    from ..attention.backends import counting

    with torch.no_grad(), counting(), OpCounter() as counter:
        result = fn(*args, **kwargs)
    if counter.unknown:
        raise UncountedOperation(
            f"the op counter met floating-point operations it neither charges nor declares free: "
            f"{', '.join(sorted(counter.unknown))}; add each to the charged operations or to FREE with its reason "
            f"(fairseq_eatt/energy/measure.py)")
    return result, counter.counts


# ---- memory traffic -------------------------------------------------------------------------------------------------

# operations that only make an alias of their input: a read is charged where the alias is consumed
_ALIASES = {aten.view, aten._unsafe_view, aten.t, aten.transpose, aten.permute, aten.expand, aten.slice,
            aten.select, aten.unsqueeze, aten.squeeze, aten.alias, aten.as_strided, aten.detach, aten.unfold,
            aten.split, aten.split_with_sizes, aten.unbind, aten.chunk}


# indexing operations read only the entries they pick (their output), not the whole indexed tensor
_PICKS = {aten.gather, aten.index, aten.index_select, aten.embedding}


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _distinct_elements(t: torch.Tensor) -> int:
    """Elements of a view that are distinct in memory (an expanded dimension repeats one element)."""
    return math.prod(n for n, s in zip(t.shape, t.stride()) if s != 0)


class _ReadTracker(TorchDispatchMode):
    """Elements of watched tensors (weights, cached state) that operations consume, each distinct region once."""

    def __init__(self, watched):
        super().__init__()
        self.watched = watched  # storage pointer -> name
        self.regions = {}  # (name, offset, layout) -> elements

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket not in _ALIASES:
            stack = list(args) + list(kwargs.values())
            while stack:
                a = stack.pop()
                if isinstance(a, (list, tuple)):
                    stack.extend(a)
                elif isinstance(a, torch.Tensor) and a.numel() and _storage(a) in self.watched:
                    picked = func.overloadpacket in _PICKS and a is args[0]
                    region = out if picked else a
                    layout = tuple(sorted(zip(region.shape, region.stride())))
                    key = (self.watched[_storage(a)], id(region) if picked else a.storage_offset(), layout)
                    self.regions[key] = _distinct_elements(region)
        return out

    def by_name(self):
        out = {}
        for (name, _, _), n in self.regions.items():
            out[name] = out.get(name, 0) + n
        return out


def _float_entries(buffer):
    return {k: v for k, v in (buffer or {}).items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


def measure_traffic(module, query, key, value, incremental_state=None, **kwargs):
    """(result, weight elements read by name, Traffic) of one call of an attention module, measured: the weights
    and cached tensors its operations consume, what its cache gained or rewrote, its inputs and output."""
    from ..attention.counts import Traffic

    size = query.element_size()
    watched = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and name.split(".")[0] not in type(module).cost.block_weights:
            watched[_storage(t)] = name
    before = _float_entries(module.get_cache(incremental_state)) if incremental_state is not None else {}
    for name, t in before.items():
        watched[_storage(t)] = "cache:" + name
    with torch.no_grad(), _ReadTracker(watched) as tracker:
        result = module(query, key, value, incremental_state=incremental_state, **kwargs)
    reads = tracker.by_name()
    weights = {n: e for n, e in reads.items() if not n.startswith("cache:")}
    cache_read = sum(e for n, e in reads.items() if n.startswith("cache:"))
    cache_write = 0
    if incremental_state is not None:
        seen = set()
        for name, t in _float_entries(module.get_cache(incremental_state)).items():
            if _storage(t) in seen:  # one tensor kept under two names (keys that are also the values)
                continue
            seen.add(_storage(t))
            old = before.get(name)
            if old is None:
                cache_write += t.numel()
            elif t.numel() > old.numel():
                cache_write += t.numel() - old.numel()  # appended
            elif t is not old:
                cache_write += t.numel()  # a fixed-size state rewritten
    # inputs actually read: the query; keys and values when the call projects them (not cached ones)
    consumed = {id(query): query.numel()}
    projects_keys = not (kwargs.get("static_kv") and before)
    if projects_keys:
        for t in (key, value):
            if t is not None:
                consumed[id(t)] = t.numel()
    out = result[0]
    activations = sum(consumed.values()) + out.numel()
    return result, weights, Traffic(weights=sum(weights.values()) * size, activations=activations * size,
                                    cache_read=cache_read * size, cache_write=cache_write * size)

"""The incremental cache of an attention module (one module's entry of fairseq's ``incremental_state``) and beam
search over it.

A cache holds tensors only (flags as 0-dim tensors): ``prev_key`` / ``prev_value`` (batch first), the padding mask
of the cached keys, ``query_offset`` (decoding steps taken, for variants that need positions) and, for
cross-attention, ``per_sentence``. Cross-attention keys and values depend on the source only, so a sentence's
``beam`` hypotheses can keep one copy of them (the cache is then per sentence) and attend with their queries
stacked as extra query rows. These functions build and reorder the cache, fold and unfold the hypotheses, and
check that sharing is exact. Free functions: TorchScript compiles them with the modules.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor


def same_in_groups(x: Tensor, dim: int, beam: int) -> bool:
    """True if every group of ``beam`` consecutive entries along ``dim`` is one entry repeated."""
    grouped = x.unflatten(dim, (-1, beam))
    return bool((grouped == grouped.narrow(dim + 1, 0, 1)).all())


def one_source_per_group(key: Tensor, value: Optional[Tensor], key_padding_mask: Optional[Tensor],
                         beam: int) -> bool:
    """True if every group of ``beam`` consecutive hypotheses has one source (keys, values, padding), so that
    sharing it is exact whatever the caller (a cheap check next to the projections it saves)."""
    if not same_in_groups(key, 1, beam):
        return False
    if value is not None and not (value is key) and not same_in_groups(value, 1, beam):  # noqa: E714 (TorchScript compiles `not (a is b)`)
        return False
    return key_padding_mask is None or key_padding_mask.dim() != 2 or same_in_groups(key_padding_mask, 0, beam)


def fold_beams(x: Tensor, sentences: int) -> Tensor:
    """(sentences * beam, H, T, d) -> (sentences, H, beam * T, d): a sentence's hypotheses as extra queries."""
    _, heads, length, dim = x.shape
    return x.view(sentences, -1, heads, length, dim).transpose(1, 2).reshape(sentences, heads, -1, dim)


def unfold_beams(x: Tensor, hypotheses: int, length: int) -> Tensor:
    """Inverse of :func:`fold_beams`: (sentences, H, beam * T, d) -> (hypotheses, H, T, d)."""
    sentences, heads, _, dim = x.shape
    return x.view(sentences, heads, -1, length, dim).transpose(1, 2).reshape(hypotheses, heads, length, dim)


def sentence_order(new_order: Tensor, beam: int, cached_sentences: int) -> Tuple[Tensor, bool, bool]:
    """Beam search's new order of hypotheses as an order of a per-sentence cache: (order, still per sentence,
    nothing to move). Hypothesis h belongs to sentence h // beam; an order that keeps every sentence's hypotheses
    together moves whole sentences (finished ones leave), any other goes back to one copy per hypothesis."""
    sentence_of = torch.div(new_order, beam, rounding_mode="floor")
    together = new_order.numel() % beam == 0
    if together:
        groups = sentence_of.view(-1, beam)
        together = bool((groups == groups[:, :1]).all())
    if not together:
        return sentence_of, False, False
    order = sentence_of.view(-1, beam)[:, 0]
    unchanged = order.numel() == cached_sentences and bool(
        (order == torch.arange(order.numel(), device=order.device)).all())
    return order, True, unchanged


def entry(cache: Optional[Dict[str, Optional[Tensor]]], name: str) -> Optional[Tensor]:
    """An entry of the cache, or None (no cache, or not there yet)."""
    return cache.get(name) if cache is not None else None


def flag(cache: Dict[str, Optional[Tensor]], name: str) -> bool:
    value = cache.get(name)
    return value is not None and bool(value.item())


def stored(cache: Dict[str, Optional[Tensor]], k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
           static_kv: bool, steps: Optional[Tensor], tgt_len: int, bsz: int, with_positions: bool
           ) -> Dict[str, Optional[Tensor]]:
    """The cache after a call: all keys and values so far. A static (cross-attention) cache also keeps what
    variants derived from its keys (e.g. Performer's sums)."""
    new: Dict[str, Optional[Tensor]] = {}
    if static_kv:
        for name, value in cache.items():
            new[name] = value
    new["prev_key"] = k
    new["prev_value"] = v
    new["prev_key_padding_mask"] = key_padding_mask
    if static_kv:
        new["per_sentence"] = torch.tensor(k.size(0) != bsz)
    if with_positions:
        # tensor arithmetic on the steps, which a traced (ONNX) decoding step keeps as a computation
        new["query_offset"] = steps + tgt_len if steps is not None else \
            torch.full((bsz,), tgt_len, dtype=torch.long, device=k.device)
    return new


def share_source(cache: Dict[str, Optional[Tensor]], key: Optional[Tensor], value: Optional[Tensor],
                 key_padding_mask: Optional[Tensor], bsz: int, beam: int
                 ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Cross-attention while decoding: keys and values are None once an earlier step cached them; at the first
    step, when every sentence's ``beam`` hypotheses have one source (``beam`` > 1), it is kept once per sentence.
    Returns (keys, values, padding mask) to project, per sentence where shared."""
    per_sentence = False
    if cache.get("prev_key") is not None:
        key = None
        value = None
        per_sentence = flag(cache, "per_sentence")
    elif beam > 1 and bsz % beam == 0 and key is not None and key.size(1) == bsz and \
            (value is None or value.size(1) == bsz):
        per_sentence = one_source_per_group(key, value, key_padding_mask, beam)
        if per_sentence:
            key = key[:, ::beam]
            if value is not None:
                value = value[:, ::beam]
    if per_sentence and key_padding_mask is not None and key_padding_mask.dim() == 2 and \
            key_padding_mask.size(0) == bsz:
        key_padding_mask = key_padding_mask[::beam]
    return key, value, key_padding_mask


def reorder_cache(cache: Dict[str, Optional[Tensor]], order: Tensor, per_sentence: bool
                  ) -> Tuple[Dict[str, Optional[Tensor]], int]:
    """Every cached tensor reordered along its first (batch) axis, and the floating-point elements moved."""
    reordered: Dict[str, Optional[Tensor]] = {}
    moved = 0
    for name, value in cache.items():
        if value is not None and value.dim() > 0:
            value = value.index_select(0, order)
            if value.is_floating_point():
                moved += value.numel()
        reordered[name] = value
    if "per_sentence" in reordered:
        reordered["per_sentence"] = torch.tensor(per_sentence)
    return reordered, moved

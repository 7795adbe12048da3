"""Sparse attention patterns named by the edge-efficient attention survey (strided, block-sparse, local).

Dot-product attention where each query sees only some keys, by position among real tokens (padding shifts
nothing):

- ``local``: a sliding window, |i - j| <= ``--attention-window``. Computed band by band, so memory grows
  linearly with the length (no (T, S) score matrix).
- ``strided``: |i - j| < ``--attention-stride`` or (i - j) divisible by the stride (Child et al.'s two patterns in
  one head).
- ``block_sparse``: positions grouped in blocks of ``--block-size``; a query block sees the
  ``--block-sparse-neighbors`` blocks on each side and the first ``--block-sparse-global`` (global) blocks, and
  global blocks see everything.

In decoder self-attention the causal mask is applied on top, so each pattern works causally and decodes
incrementally. They are not offered for cross-attention: the patterns relate positions of one sequence, and a
source and a target share no positions.
"""
from typing import Final, Optional, Tuple

import torch
from torch import Tensor

from .counts import OpCounts, check_convention, projection
from .base import Cache, Positions
from .functional import dot_product_scores
from .options import Option, non_negative, positive
from .registry import Capabilities, register_attention
from .vanilla import VanillaAttention, VanillaCost

WHY_NOT_CROSS = "relates positions of one sequence (a source and a target share no positions)"

STRIDE = Option("stride", "--attention-stride", 4, "strided attention: keys within N positions or a multiple of N "
                "away", type=int, metavar="N", check=positive)
BLOCK_SIZE = Option("block_size", "--block-size", 8, "block_sparse: positions per block", type=int, metavar="N",
                    check=positive)
NEIGHBORS = Option("neighbors", "--block-sparse-neighbors", 1, "block_sparse: blocks seen on each side of a "
                   "query's own block", type=int, metavar="N", check=non_negative)
GLOBAL_BLOCKS = Option("global_blocks", "--block-sparse-global", 1, "block_sparse: the first N blocks are global: "
                       "they see and are seen by all (0 for a purely local layout)", type=int, metavar="N",
                       check=non_negative)
WINDOW = Option("window", "--attention-window", 8, "local attention: each query sees keys at most W positions "
                "away", type=int, metavar="W", check=non_negative)


class _SparsePattern(VanillaAttention):
    capabilities = Capabilities(causal=True, cross=False, why_not=WHY_NOT_CROSS)
    needs_positions = True

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        given = {o.key: kwargs.pop(o.key) for o in self.options if o.key in kwargs}
        super().__init__(embed_dim, num_heads, **kwargs)
        for key, value in self.option_values(given).items():  # the pattern's options, validated
            setattr(self, key, next(o for o in self.options if o.key == key).validate(value))

    def allowed(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        """Bool (B|1, T, S): may the query at position qpos see the key at position kpos: the variant's
        ``pattern`` at this module's options (each variant passes them explicitly, which TorchScript compiles)."""
        raise NotImplementedError

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        assert pos is not None
        scores = dot_product_scores(q, k)
        allowed = self.allowed(pos.query.unsqueeze(-1), pos.key.unsqueeze(-2))
        return scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))


def strided_pattern(qpos: Tensor, kpos: Tensor, stride: int) -> Tensor:
    rel = qpos - kpos
    return (rel.abs() < stride) | (torch.remainder(rel, stride) == 0)


def block_sparse_pattern(qpos: Tensor, kpos: Tensor, block_size: int, neighbors: int, global_blocks: int) -> Tensor:
    qb, kb = torch.div(qpos, block_size, rounding_mode="floor"), torch.div(kpos, block_size, rounding_mode="floor")
    return ((qb - kb).abs() <= neighbors) | (kb < global_blocks) | (qb < global_blocks)


def local_pattern(qpos: Tensor, kpos: Tensor, window: int) -> Tensor:
    return (qpos - kpos).abs() <= window


class SparsePatternCost(VanillaCost):
    """Complete: as executed, dense scores then the pattern mask (= vanilla). Paper: only the allowed (query, key)
    pairs, what a sparse kernel computes (pairs of a non-causal sequence of length lk)."""

    pattern = None  # a function of positions and the variant's options, by name

    def unmasked(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        if convention == "complete":
            return VanillaCost.unmasked(self, lq, lk, d, heads, convention)
        pos = torch.arange(lk)
        pairs = int(self.pattern(pos[-lq:].unsqueeze(-1), pos.unsqueeze(0), **self.module.option_values(options)).sum())
        alignment = projection(lq, d, d) + projection(lk, d, d) + OpCounts(mul=pairs * d, add=pairs * d)
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + OpCounts(mul=pairs * d, add=pairs * d)}


class StridedCost(SparsePatternCost):
    pattern = staticmethod(strided_pattern)


class BlockSparseCost(SparsePatternCost):
    pattern = staticmethod(block_sparse_pattern)


class LocalCost(SparsePatternCost):
    pattern = staticmethod(local_pattern)

    def dense(self, lk: int, options) -> bool:
        """Whether the module takes the dense masked form (see LocalAttention.attend)."""
        return lk <= self.module.DENSE_UP_TO * (2 * int(self.module.option_values(options)["window"]) + 1)

    def unmasked(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Complete, as executed (see attend): up to DENSE_UP_TO windows of keys, the dense masked product (=
        vanilla); longer full passes, chunks of W queries against 3W keys (the last chunk padded); decoding
        steps, the 2W+1 keys of the band. Positions outside the window are computed, then masked. Paper: only
        the pairs inside the window."""
        if convention == "paper":
            return super().unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        check_convention(convention)
        if self.dense(lk, options):
            return VanillaCost.unmasked(self, lq, lk, d, heads, convention)
        rows, keys = self.scored_pairs(lq, lk, options)
        alignment = (projection(lq, d, d) + projection(lk, d, d) + OpCounts(mul=lq * d)
                     + OpCounts(mul=rows * keys * d, add=rows * keys * (d - heads)))
        return {"alignment": alignment, "attention": alignment + projection(lk, d, d)
                + OpCounts(mul=rows * keys * d, add=rows * (keys - 1) * d)}

    def scored_pairs(self, lq: int, lk: int, options) -> Tuple[int, int]:
        """(query rows, keys per row) scored by the windowed forms: chunks of W queries against 3W keys in a full
        pass (the last chunk padded), the 2W+1 keys of the band for decoding steps."""
        window = int(self.module.option_values(options)["window"])
        chunk = max(1, window)
        return (-(-lq // chunk) * chunk, 3 * chunk) if lq == lk else (lq, 2 * window + 1)

    def causal(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """The future mask is added to the scores actually computed: every (query, key) pair in the dense form,
        the windowed pairs otherwise."""
        counts = self.unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        if convention == "paper":
            return counts
        rows, keys = (lq, lk) if self.dense(lk, options) else self.scored_pairs(lq, lk, options)
        mask = OpCounts(add=rows * keys * heads)
        return {part: ops + mask for part, ops in counts.items()}


@register_attention("strided", cost=StridedCost)
class StridedAttention(_SparsePattern):
    options = (STRIDE,)

    def allowed(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        return strided_pattern(qpos, kpos, self.stride)


@register_attention("block_sparse", cost=BlockSparseCost)
class BlockSparseAttention(_SparsePattern):
    options = (BLOCK_SIZE, NEIGHBORS, GLOBAL_BLOCKS)

    def allowed(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        return block_sparse_pattern(qpos, kpos, self.block_size, self.neighbors, self.global_blocks)


@register_attention("local", cost=LocalCost)
class LocalAttention(_SparsePattern):
    DENSE_UP_TO: Final[int] = 4  # keys per window up to which the dense masked form is used (see attend)

    options = (WINDOW,)

    def allowed(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        return local_pattern(qpos, kpos, self.window)

    def _attend_chunks(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                       attn_mask: Optional[Tensor], need_weights: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """A full pass in chunks of W queries, each against the 3W keys of its chunk and the two around it
        (strided views, batched products): memory (B, H, L, 3W), linear in L, without per-query copies."""
        bsz, heads, length, dim = q.shape
        c = max(1, self.window)
        padded = -(-length // c) * c
        blocks = padded // c
        qb = torch.nn.functional.pad(q, (0, 0, 0, padded - length)).view(bsz, heads, blocks, c, dim)
        pad_kv = (0, 0, c, c + padded - length)
        kw = torch.nn.functional.pad(k, pad_kv).unfold(2, 3 * c, c)  # (B, H, blocks, d, 3c)
        vw = torch.nn.functional.pad(v, pad_kv).unfold(2, 3 * c, c).transpose(-1, -2)  # (B, H, blocks, 3c, d)
        dev = q.device
        qidx = (torch.arange(blocks, device=dev) * c).view(blocks, 1, 1) + torch.arange(c, device=dev).view(1, c, 1)
        kidx = (torch.arange(blocks, device=dev) * c - c).view(blocks, 1, 1) + torch.arange(3 * c, device=dev)
        kidx = kidx.expand(blocks, c, 3 * c)
        outside = (kidx < 0) | (kidx >= length) | ((qidx - kidx).abs() > self.window) | (qidx >= length)
        qc, kc = qidx.clamp(max=length - 1).expand_as(kidx), kidx.clamp(0, length - 1)
        scores = torch.matmul(qb, kw).float().masked_fill(outside, float("-inf"))
        if attn_mask is not None:
            scores = scores + attn_mask.float()[qc, kc]
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.to(torch.bool)[:, kc].unsqueeze(1), float("-inf"))
        out, probs = self.weigh_values(scores, vw, masked=True)
        out = out.reshape(bsz, heads, padded, dim)[:, :, :length]
        weights: Optional[Tensor] = None
        if need_weights:  # dense (T, S) weights only when fairseq asks for them
            dense = probs.new_zeros(bsz, heads, padded, length + 3 * c)
            dense[:, :, qidx.expand_as(kidx), kidx + c] = probs
            weights = dense[:, :, :length, c : c + length]
        return out, weights

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        # Real tokens are contiguous whatever the padding side, so a window of array indices around a query is
        # its window of positions; padding inside it is masked. Decoding steps (few queries): each query's
        # 2W+1 keys gathered, memory (B, H, T, 2W+1, d).
        bsz, heads, tgt_len, _ = q.shape
        src_len = k.size(2)
        if src_len <= self.DENSE_UP_TO * (2 * self.window + 1):
            # short sequences (most MT sentences): the masked (T, S) product is the same attention and far
            # cheaper than gathering 2W+1 copies of every key and value; the band takes over where it pays
            return self.dense_attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights)
        if tgt_len == src_len:
            return self._attend_chunks(q, k, v, key_padding_mask, attn_mask, need_weights)
        offsets = torch.arange(-self.window, self.window + 1, device=q.device)
        rows = torch.arange(src_len - tgt_len, src_len, device=q.device)  # each query's own index among keys
        index = rows.unsqueeze(1) + offsets.unsqueeze(0)  # (T, n)
        outside = (index < 0) | (index >= src_len)
        index = index.clamp(0, src_len - 1)
        scores = torch.einsum("bhtd,bhtnd->bhtn", q, k[:, :, index]).float()
        scores = scores.masked_fill(outside, float("-inf"))
        if attn_mask is not None:
            scores = scores + attn_mask.float().gather(1, index)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.to(torch.bool)[:, index].unsqueeze(1), float("-inf"))
        out, probs = self.weigh_values(scores.unsqueeze(-2), v[:, :, index], masked=True)  # (B, H, T, 1, .)
        out, probs = out.squeeze(-2), probs.squeeze(-2)
        weights: Optional[Tensor] = None
        if need_weights:  # dense (T, S) weights only when fairseq asks for them
            weights = probs.new_zeros(bsz, heads, tgt_len, src_len)
            weights.scatter_add_(3, index.expand(bsz, heads, -1, -1), probs)
        return out, weights

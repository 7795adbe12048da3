"""Linformer (Wang et al., 2020), the survey's low-rank attention: keys and values are projected along the length,
K' = E K and V' = F V with E, F of shape (k x max_len), so scores are (T x k) instead of (T x S) and memory grows
linearly with the length.

Where it cannot be causal: E mixes the keys of *all* positions into each projected key, so every output would
see the future. Linformer is therefore refused as decoder self-attention (at model build time, naming the flag);
it works as encoder self-attention and as cross-attention, where the whole source is known.

E and F are indexed by positions among real tokens and their columns at padding keys are zeroed: padding never
enters the projection, whatever side it is on. With ``need_weights`` the returned (T x S) weights are the
effective weights on the original values, softmax(Q K'^T) F.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .counts import OpCounts, check_convention, dot_scores, only_complete, projection, weighted_sum
from .cache import entry
from .base import Cache, Positions
from .fixed_length import FixedLengthAttention
from .options import Option, positive
from .registry import Capabilities, register_attention
from .vanilla import VanillaAttention, VanillaCost

PROJECTED_LENGTH = Option("projected_length", "--linformer-k", 64, "linformer: length the keys and values are "
                          "projected to", type=int, metavar="K", check=positive)
SHARE_PROJECTION = Option("share_projection", "--linformer-share-kv", False, "linformer: one length projection for "
                          "keys and values (E = F)", action="store_true", check=lambda value, flag: bool(value))
WHY_NOT_CAUSAL = ("projects the keys and values of the whole sequence along its length, so every output would see "
                  "the future")


class LinformerCost(VanillaCost):
    def unmasked(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Q/K/V projections, E K and F V (k x lk times lk x d each), then attention over k projected keys.
        ``need_weights`` (effective T x S weights for fairseq) costs extra and is not counted."""
        check_convention(convention)
        k = int(self.module.option_values(options)["projected_length"])
        length = OpCounts(mul=2 * k * lk * d, add=2 * k * (lk if convention == "paper" else lk - 1) * d)
        scores = dot_scores(lq, k, d, heads, convention) + only_complete(convention, OpCounts(mul=lq * d))
        alignment = projection(lq, d, d) + projection(lk, d, d) + length.scaled(0.5) + scores
        values = projection(lk, d, d) + length.scaled(0.5) + weighted_sum(lq, k, d, convention)
        return {"alignment": alignment, "attention": alignment + values}

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Cross-attention caches the projected keys and values and E K, F V: a step redoes none of them."""
        if cached != lk:
            raise ValueError("linformer caches cross-attention's whole source or nothing (it cannot be causal)")
        k = int(self.module.option_values(options)["projected_length"])
        length = OpCounts(mul=k * lk * d, add=k * (lk if convention == "paper" else lk - 1) * d)
        return {"alignment": projection(lk, d, d) + length,
                "attention": projection(lk, d, d).scaled(2) + length.scaled(2)}

    key_side_weights = ("k_proj", "v_proj", "key_length_proj", "value_length_proj")

    def length_indexed_reads(self, lq, lk, d, heads, new, **options):
        """E's and F's columns of the key positions."""
        k = int(self.module.option_values(options)["projected_length"])
        return {"key_length_proj": k * lk, "value_length_proj": k * lk}

    def weights(self, lq, lk, d, heads, averaged=True, **options):
        """Weights asked for: the probabilities over the k projected keys mapped back to the lk keys by F."""
        k = int(self.module.option_values(options)["projected_length"])
        pairs = heads * lq * lk
        return OpCounts(mul=pairs * k, add=pairs * (k - 1)) + super().weights(lq, lk, d, heads, averaged, **options)

    def cache_entries(self, lk, d, heads, self_attention=True, **options):
        """Cross-attention keeps the source's keys and values (unread later) and their length projections."""
        k = int(self.module.option_values(options)["projected_length"])
        return {"prev_key": (lk * d, False, True), "prev_value": (lk * d, False, True),
                "linformer_k_low": (k * d, True, False), "linformer_v_low": (k * d, True, False),
                "linformer_f": (k * lk, False, False)}


@register_attention("linformer", cost=LinformerCost)
class LinformerAttention(VanillaAttention, FixedLengthAttention):
    capabilities = Capabilities(causal=False, cross=True, fixed_max_length=True, weights_are_probabilities=False,
                                why_not=WHY_NOT_CAUSAL)
    options = FixedLengthAttention.options + (PROJECTED_LENGTH, SHARE_PROJECTION)
    limited = ("key",)  # E and F project at most max_key_length keys

    def __init__(self, embed_dim: int, num_heads: int, *, projected_length: int = PROJECTED_LENGTH.default,
                 share_projection: bool = SHARE_PROJECTION.default, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.projected_length = PROJECTED_LENGTH.validate(projected_length)
        self.why_not_causal = WHY_NOT_CAUSAL
        std = 1.0 / math.sqrt(self.projected_length)
        self.key_length_proj = nn.Parameter(torch.randn(self.projected_length, self.max_key_length) * std)  # E
        self.share_projection = SHARE_PROJECTION.validate(share_projection)
        self.value_length_proj = (  # F
            None if self.share_projection
            else nn.Parameter(torch.randn(self.projected_length, self.max_key_length) * std)
        )

    def _length_projection(self, table: Tensor, pos: Positions, key_padding_mask: Optional[Tensor],
                           bsz: int) -> Tensor:
        cols = pos.key.expand(bsz, -1)  # (B, S)
        proj = table[:, cols].permute(1, 0, 2)  # (B, k, S)
        if key_padding_mask is not None:
            proj = proj.masked_fill(key_padding_mask.to(torch.bool).unsqueeze(1), 0.0)
        return proj

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        if attn_mask is not None:
            raise ValueError("linformer cannot apply an attention mask: it " + self.why_not_causal)
        pos = self._check_lengths(pos)
        bsz = q.size(0)
        # cross-attention while decoding (cache): project the source once, not every step
        cached_k, cached_v, cached_f = entry(cache, "linformer_k_low"), entry(cache, "linformer_v_low"), \
            entry(cache, "linformer_f")
        if cached_k is not None and cached_v is not None and cached_f is not None and cached_k.size(0) == bsz:
            k_low, v_low, f = cached_k, cached_v, cached_f
        else:
            e = self._length_projection(self.key_length_proj, pos, key_padding_mask, bsz)
            f = e
            if self.value_length_proj is not None:
                f = self._length_projection(self.value_length_proj, pos, key_padding_mask, bsz)
            k_low = torch.einsum("bks,bhsd->bhkd", e.to(k.dtype), k)
            v_low = torch.einsum("bks,bhsd->bhkd", f.to(v.dtype), v)
            if cache is not None:
                cache["linformer_k_low"], cache["linformer_v_low"], cache["linformer_f"] = k_low, v_low, f
        out, probs = self.weigh_values(torch.matmul(q, k_low.transpose(-1, -2)), v_low, masked=False)  # (B,H,T,k)
        weights: Optional[Tensor] = None
        if need_weights:
            weights = torch.einsum("bhtk,bks->bhts", probs, f.float())
        return out, weights



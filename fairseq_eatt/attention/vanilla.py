"""Standard scaled dot-product multi-head attention (Vaswani et al., 2017), on the shared interface.

Numerically the same as fairseq's ``MultiheadAttention`` (a test checks it with copied weights), so E-ATT and its
ablations are compared against a baseline that runs through the very same code path.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import AttentionBase, Cache, Positions
from .cost import AttentionCost
from .counts import projection, scaled_dot_scores
from .backends import select
from .functional import dot_product_scores
from .registry import Capabilities, register_attention


SDPA_OFFER = ("sdpa",)  # the fused backend exact for this module's dense path


class VanillaCost(AttentionCost):
    """Q and K projections and scaled dot products; the values and their weighted sum as the base counts them."""

    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        return projection(lq, d, d) + projection(lk, d, d) + scaled_dot_scores(lq, lk, d, heads, convention)


@register_attention("vanilla", cost=VanillaCost)
class VanillaAttention(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True)

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        bias = self.out_proj.bias is not None
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.scaling = self.head_dim**-0.5
        # PyTorch's fused scaled_dot_product_attention computes exactly this module's attention unless a subclass
        # changes its scores, masks or probabilities (then it keeps the dense path)
        self.sdpa_exact = type(self).computes_like(VanillaAttention) and type(self).attend is VanillaAttention.attend
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for lin in (self.q_proj, self.k_proj):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query) * self.scaling)

    def project_key(self, key: Tensor) -> Tensor:
        return self._split_heads(self.k_proj(key))

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return dot_product_scores(q, k)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """PyTorch's fused scaled_dot_product_attention when the backend choice takes it (on CUDA by default, see
        backends.py) and the weights are not asked for; the dense path otherwise."""
        if not torch.jit.is_scripting() and self.sdpa_exact and not need_weights and _sdpa_wanted(q):
            mask = _sdpa_mask(q, k, key_padding_mask, attn_mask)
            dead = None
            if mask is not None:
                # a query whose keys are all masked: the dense path gives it zeros (and no gradient), a fused kernel
                # may give NaN. Unmask its row, zero its output; no host synchronization.
                dead = torch.isneginf(mask).all(dim=-1, keepdim=True)
                mask = mask.masked_fill(dead, 0.0)
            dropout = self.dropout_p if (self.training or self.dropout_at_inference) else 0.0
            out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=mask, dropout_p=dropout,
                                                 scale=1.0)  # queries come scaled (project_query)
            if dead is not None:
                out = out.masked_fill(dead, 0.0)
            return out.to(v.dtype), None
        return self.dense_attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights)


@torch.jit.unused
def _sdpa_wanted(q: Tensor) -> bool:
    return select("attend", q, SDPA_OFFER) == "sdpa"


@torch.jit.unused
def _sdpa_mask(q: Tensor, k: Tensor, key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor]
               ) -> Optional[Tensor]:
    """The additive float mask (B, 1, T, S) of the dense path's future mask and key padding, or None."""
    if key_padding_mask is None and attn_mask is None:
        return None
    bsz, _, tgt_len, _ = q.shape
    src_len = k.size(2)
    mask = torch.zeros(bsz, 1, tgt_len, src_len, dtype=q.dtype, device=q.device)
    if attn_mask is not None:
        mask = mask + attn_mask.to(q.dtype)
    if key_padding_mask is not None:
        mask = mask.masked_fill(key_padding_mask.view(bsz, 1, 1, src_len).to(torch.bool), float("-inf"))
    return mask

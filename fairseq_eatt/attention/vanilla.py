"""Standard scaled dot-product multi-head attention (Vaswani et al., 2017), on the shared interface.

Numerically the same as fairseq's ``MultiheadAttention`` (a test checks it with copied weights), so E-ATT and its
ablations are compared against a baseline that runs through the very same code path.
"""
import math
from typing import Optional

from torch import Tensor, nn

from ..energy.ops import OpCounts, check_convention, dot_scores, only_complete, projection, weighted_sum
from .base import AttentionBase, Positions
from .functional import dot_product_scores
from .registry import Capabilities, register_attention


@register_attention("vanilla")
class VanillaAttention(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True)

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        bias = self.out_proj.bias is not None
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.scaling = self.head_dim**-0.5
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

    @classmethod
    def core_op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        scores = dot_scores(lq, lk, d, heads, convention) + only_complete(convention, OpCounts(mul=lq * d))
        alignment = projection(lq, d, d) + projection(lk, d, d) + scores
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}

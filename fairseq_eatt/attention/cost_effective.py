"""Cost-effective attention (Hosseini et al., "Cost-effective attention mechanisms": Optimized, Efficient, Super).

Per head i, X_i is the i-th block of d/h columns of the input.

- ``optimized``: no value projection, V_i = X_i; the output projection W_O absorbs its role. A layer has 3 of the
  4 d x d matrices: 25% fewer parameters.
- ``efficient``: no value and no key projection, K_i = V_i = X_i; scores X W_Q,i X_i^T / sqrt(d_k). 50% fewer.
- ``super``: efficient plus a learned "left" mixing matrix W_A (max_len x max_len, shared by the heads of a layer)
  applied to the values over positions: H_i = softmax(X W_Q,i X_i^T / sqrt(d_k)) (W_A X_i). With max_len = d
  the layer has 2 d^2 + d^2 weights, about 25% fewer than vanilla's 4 d^2.

Super, in detail:
- W_A is indexed by positions among real tokens (left padding shifts nothing) and its columns at padding keys are
  zeroed, so padding never mixes into real positions.
- Under a causal mask (decoder self-attention) the mixing uses exactly the entries the attention mask allows,
  i.e. the lower triangle of W_A: the value at position t depends on x_1..x_t only, so the future cannot leak.
  Because of that, the value of a position never changes once it is computed, and incremental decoding caches
  mixed values like any other variant (each step mixes only its new row).
- W_A starts as the identity (plus small noise), so a new Super layer begins as Efficient attention.

**Cross-attention** (the paper gives no recipe). Decision: K_i = V_i = Y_i, the blocks of the encoder output, and
in Super W_A mixes the *source* positions of the values, with no causal restriction. Reason: the values are
source tokens, so mixing along the source axis is the direct analogue of mixing along the value sequence in
self-attention, and the whole source is known before decoding starts, so nothing can leak; the query side (the
target) is never mixed, which keeps incremental decoding exact. This needs the encoder and decoder dimensions
to be equal (they are in every transformer_eatt architecture); otherwise the model is refused when built.
"""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from .cost import AttentionCost
from .counts import OpCounts, projection, scaled_dot_scores, weighted_sum
from .base import AttentionBase, Positions
from .fixed_length import FixedLengthAttention
from .functional import dot_product_scores
from .registry import Capabilities, register_attention
from .vanilla import VanillaAttention, VanillaCost


class _ScaledDotProduct:
    """Scores q k^T / sqrt(d_k) (queries are scaled when projected)."""

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return dot_product_scores(q, k)


@register_attention("optimized", cost=VanillaCost)  # without W_V the base counts no value projection
class OptimizedAttention(VanillaAttention):
    """Vanilla attention without W_V: the values are the input's head blocks."""

    value_projection = False


class _EfficientBase(_ScaledDotProduct, AttentionBase):
    value_projection = False

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        if self.kdim != embed_dim:
            raise ValueError(f"{self.variant_name} uses its input as keys: the key input must have the model's "
                             f"dimension ({embed_dim}), got {self.kdim} (use equal encoder and decoder dims)")
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=self.out_proj.bias is not None)
        self.scaling = self.head_dim**-0.5
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        nn.init.xavier_uniform_(self.q_proj.weight, gain=1 / math.sqrt(2))

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query) * self.scaling)

    def project_key(self, key: Tensor) -> Tensor:
        return self._split_heads(key)


class EfficientCost(AttentionCost):
    """Q projection and scaled dot products with the input itself as keys and values."""

    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        return projection(lq, d, d) + scaled_dot_scores(lq, lk, d, heads, convention)

    def cache_entries(self, lk, d, heads, self_attention=True, **options):
        """The input split into heads is both the keys and the values: one tensor for a cross-attention source;
        a self-attention step appends to keys and values separately (two copies of the same data)."""
        entries = {"prev_key": (lk * d, True, True)}
        if self_attention:
            entries["prev_value"] = (lk * d, True, True)
        return entries

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Keys and values are the input itself: cached keys save nothing."""
        return {"alignment": OpCounts(), "attention": OpCounts()}


@register_attention("efficient", cost=EfficientCost)
class EfficientAttention(_EfficientBase):
    capabilities = Capabilities(causal=True, cross=True)


class SuperCost(EfficientCost):
    key_side_weights = ("mixing",)

    def values(self, lq, lk, d, heads, convention, **options):
        """Efficient attention's plus the mixing W_A X: lk values, each mixing lk inputs of d features."""
        return super().values(lq, lk, d, heads, convention, **options) + weighted_sum(lk, lk, d, convention)

    def length_indexed_reads(self, lq, lk, d, heads, new, **options):
        """W_A's rows of the new values, over every input so far."""
        return {"mixing": new * lk}

    def cache_entries(self, lk, d, heads, self_attention=True, **options):
        """Keys (the input) and the mixed values: two tensors."""
        return {"prev_key": (lk * d, True, True), "prev_value": (lk * d, True, True)}

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Cached values were mixed when they were new (W_A X mixes only the new values)."""
        return {"alignment": OpCounts(), "attention": weighted_sum(cached, lk, d, convention)}


@register_attention("super", cost=SuperCost)
class SuperAttention(_EfficientBase, FixedLengthAttention):
    capabilities = Capabilities(causal=True, cross=True, fixed_max_length=True, cross_self_attention=False,
                                cross_self_why_not="learns weights per position up to the target's maximum length; "
                                                   "keys that start with the source go past it")
    limited = ("key",)  # W_A mixes the values of at most max_key_length positions

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        length = self.max_key_length  # W_A mixes the value (key-side) positions
        init = torch.eye(length) + torch.randn(length, length) * (0.01 / math.sqrt(length))
        self.mixing = nn.Parameter(init)  # W_A, shared by the heads

    def finalize_values(self, v: Tensor, k: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
                        attn_mask: Optional[Tensor]) -> Tensor:
        pos = self._check_lengths(pos)
        bsz, _, new, _ = v.shape
        src_len = k.size(2)
        rows = pos.key[:, src_len - new:].expand(bsz, -1)  # positions of the new values
        cols = pos.key.expand(bsz, -1)  # positions of all inputs so far
        table = self.mixing[: pos.key_len_bound, : pos.key_len_bound]
        weights = table[rows.unsqueeze(-1), cols.unsqueeze(1)]  # (B, new, S)
        if attn_mask is not None:  # causal use: only the entries the attention may see (lower triangle)
            weights = weights.masked_fill((attn_mask[-new:].float() == float("-inf")).unsqueeze(0), 0.0)
        if key_padding_mask is not None:  # padding never mixes into real positions
            weights = weights.masked_fill(key_padding_mask.to(torch.bool).unsqueeze(1), 0.0)
        # k holds X split into heads (K_i = X_i); mix the positions, the same W_A for every head
        return torch.einsum("bns,bhsd->bhnd", weights.to(k.dtype), k)

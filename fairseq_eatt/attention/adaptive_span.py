"""Adaptive attention span (Sukhbaatar et al., 2019), the survey's adaptive-computation attention.

Each head learns how far it looks: attention to a key at distance x is multiplied by the soft mask
m_z(x) = clamp((R + z - x) / R, 0, 1) and renormalized, where z in [0, ``--adaptive-span-max``] is the head's
learned span and R the ramp (``--adaptive-span-ramp``). Training adds ``--adaptive-span-penalty`` x sum of spans
per token to the loss, which shrinks spans the task does not need; use
``--criterion label_smoothed_cross_entropy_with_aux`` so that the penalty reaches the loss (with any other
criterion a model with adaptive span and a positive penalty is refused: the penalty would be dropped). The
learned spans are logged.

Distances are between positions of one sequence, so the variant serves encoder and decoder self-attention
(causally, with incremental decoding), not cross-attention.
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .counts import OpCounts, only_complete
from .base import Positions
from .options import Option, fraction, non_negative_float, positive
from .registry import Capabilities, register_attention
from .vanilla import VanillaAttention, VanillaCost


MAX_SPAN = Option("max_span", "--adaptive-span-max", 64, "adaptive_span: largest span", type=int, metavar="N",
                  check=positive)
RAMP = Option("ramp", "--adaptive-span-ramp", 8, "adaptive_span: soft-mask ramp", type=int, metavar="R",
              check=positive)
INIT_RATIO = Option("init_ratio", "--adaptive-span-init", 0.5, "adaptive_span: initial span as a fraction of the "
                    "largest", type=float, metavar="F", check=fraction)
PENALTY = Option("penalty", "--adaptive-span-penalty", 2e-6, "adaptive_span: loss per token and unit of span, "
                 "summed over heads", type=float, metavar="L", check=non_negative_float)


class AdaptiveSpanCost(VanillaCost):
    def values(self, lq, lk, d, heads, convention, **options):
        """Vanilla's; the complete convention adds the soft span mask and the renormalization."""
        pairs = heads * lq * lk
        mask = only_complete(convention, OpCounts(mul=heads + 3 * pairs, add=heads + pairs + heads * lq * (lk - 1)))
        return super().values(lq, lk, d, heads, convention, **options) + mask

    def per_call(self, lq, lk, d, heads, convention="paper", shared_positions=True, **options):
        """The spans are computed once per call; the distance ramp too when every row has the same positions."""
        pairs = heads * lq * lk if shared_positions else 0
        return only_complete(convention, OpCounts(mul=heads + pairs, add=heads + pairs))


@register_attention("adaptive_span", cost=AdaptiveSpanCost)
class AdaptiveSpanAttention(VanillaAttention):
    capabilities = Capabilities(causal=True, cross=False, auxiliary_loss=True,
                                why_not="masks by the distance between positions of one sequence")
    needs_positions = True
    options = (MAX_SPAN, RAMP, INIT_RATIO, PENALTY)

    def __init__(self, embed_dim: int, num_heads: int, *, max_span: int = MAX_SPAN.default, ramp: int = RAMP.default,
                 init_ratio: float = INIT_RATIO.default, penalty: float = PENALTY.default, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.max_span, self.ramp = MAX_SPAN.validate(max_span), RAMP.validate(ramp)
        self.penalty = PENALTY.validate(penalty)
        self.span_ratio = nn.Parameter(torch.full((num_heads, 1, 1), INIT_RATIO.validate(init_ratio)))  # z / max

    @classmethod
    def has_auxiliary_loss(cls, args) -> bool:
        return PENALTY.validate(PENALTY.from_args(args)) > 0

    def spans(self) -> Tensor:
        return self.span_ratio.clamp(0.0, 1.0).flatten() * self.max_span

    def auxiliary_loss(self) -> Tensor:
        """Per-token span penalty; the criterion ``label_smoothed_cross_entropy_with_aux`` adds it to the loss."""
        return self.penalty * self.spans().sum()

    def auxiliary_metrics(self) -> Dict[str, Tensor]:
        return {"attn_span": self.spans().mean()}

    def reweight(self, probs: Tensor, pos: Optional[Positions]) -> Tensor:
        """The soft span mask m_z(distance), then renormalized."""
        assert pos is not None
        distance = (pos.query.unsqueeze(-1) - pos.key.unsqueeze(-2)).abs().float().unsqueeze(1)  # (B|1, 1, T, S)
        span = self.span_ratio.clamp(0.0, 1.0) * self.max_span  # (H, 1, 1)
        probs = probs * ((self.ramp + span - distance) / self.ramp).clamp(0.0, 1.0)
        return probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-12)

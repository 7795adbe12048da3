"""E-ATT: attention with energy-friendly operations (Wan et al., 2022; ../shared/seeds/e-att-paper.txt).

- Inputs of the query and key paths are binarized, f(x) = 1[x > tau] (Eq. 4), with the Gaussian surrogate
  gradient of Eq. 5 (see :mod:`fairseq_eatt.attention.functional`).
- Q and K are *selections*: the sum of the rows of W_Q (W_K) picked by the binary input (Eqs. 6-9). Numerically
  that is ``binary(X) @ W_Q``; on hardware it needs additions only.
- Scores are negative L1 distances, -||Q_i - K_j||_1 / scale (Eq. 10), again additions only.
- V and the output projection are ordinary linear layers.

The paper's ablations (Table 5) live here too: ``eatt_select`` (binarized selection, dot-product scores) and
``eatt_l1`` (linear Q/K projections, L1 scores).

Defaults follow the paper's text. The authors' public code made other choices, offered as options:
threshold 0 on a layer-normed input (``input_norm``), Q/K of only embed_dim / heads dims in total (``qk_dim``) and
a different scale in self- and cross-attention (``score_scale`` / ``cross_score_scale``).
"""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..energy.ops import (
    OpCounts,
    check_convention,
    dot_scores,
    only_complete,
    projection,
    weighted_sum,
)
from .base import AttentionBase
from .functional import binarize, pairwise_l1
from .registry import Capabilities, arg_or_default, register_attention
from .vanilla import VanillaAttention

SCORE_SCALES = ("qk-head-dim", "head-dim", "model-dim", "none")
INPUT_NORMS = ("none", "static", "learnable")


def check_threshold(threshold, flag: str = "--eatt-threshold") -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be a finite number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number (the binarization threshold tau), got {threshold!r}")
    return value


def l1_score_divisor(module: AttentionBase, score_scale: str, cross_score_scale: Optional[str], qk_head_dim: int):
    """(name, divisor) of the L1 score scale of Eq. 10 for this module's position."""
    name = cross_score_scale if (module.encoder_decoder_attention and cross_score_scale) else score_scale
    if name not in SCORE_SCALES:
        raise ValueError(f"--eatt-score-scale must be one of {', '.join(SCORE_SCALES)}, got {name!r}")
    divisor = {
        "qk-head-dim": math.sqrt(qk_head_dim),
        "head-dim": math.sqrt(module.head_dim),
        "model-dim": math.sqrt(module.embed_dim),
        "none": 1.0,
    }[name]
    return name, divisor


def selection_ops(lq: int, lk: int, d: int, convention: str, nonzero_ratio=None, shared_input=False) -> OpCounts:
    """Q and K by binarized selection (Eqs. 6-9). Paper: l*d additions per projection. Complete: each selected
    row of W (nonzero ratio x d x d per token, 0.5 without a measured ratio; the bias completes a row with a
    single selected feature) and one comparison per binarized input, once when queries and keys binarize the
    same input (self-attention without a learnable input norm). ``nonzero_ratio``: one ratio, or a
    (query side, key side) pair for cross-attention.

    Measured difference (tested): a token with *no* selected feature still adds its bias, d additions that a
    ratio-based count does not see."""
    if convention == "paper":
        return OpCounts(add=(lq + lk) * d)
    if nonzero_ratio is None:
        nonzero_ratio = 0.5
    q_ratio, k_ratio = nonzero_ratio if isinstance(nonzero_ratio, (tuple, list)) else (nonzero_ratio,) * 2
    return OpCounts(add=d * d * (float(q_ratio) * lq + float(k_ratio) * lk), cmp=d * (lq if shared_input else lq + lk))


def l1_scores(lq: int, lk: int, d: int, heads: int, convention: str) -> OpCounts:
    """-|q - k|_1 / scale (Eq. 10). Paper: one addition per term. Complete: a subtraction and an accumulation per
    term, and the scaling of each score."""
    if convention == "paper":
        return OpCounts(add=lq * lk * d)
    return OpCounts(add=2 * lq * lk * d, mul=lq * lk * heads)


def shares_bits(options: dict) -> bool:
    """Self-attention binarizes its one input once for both sides, unless a learnable norm makes them differ."""
    return bool(options.get("self_attention")) and options.get("input_norm", "none") != "learnable"


def finite_float(text: str) -> float:
    """argparse type for --eatt-threshold: rejects nan and inf with a clear message."""
    import argparse

    try:
        return check_threshold(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--eatt-threshold ", "")) from None


@register_attention("eatt")
class EattAttention(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True, incremental=True)

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        threshold: float = 1.0,
        qk_dim: Optional[int] = None,
        score_scale: str = "qk-head-dim",
        cross_score_scale: Optional[str] = None,
        input_norm: str = "none",
        **kwargs,
    ):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.threshold = check_threshold(threshold)
        self.qk_dim = embed_dim if qk_dim is None else int(qk_dim)
        if self.qk_dim <= 0 or self.qk_dim % num_heads != 0:
            raise ValueError(
                f"--eatt-qk-dim must be a positive multiple of the number of heads ({num_heads}), got {qk_dim}"
            )
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"--eatt-input-norm must be one of {', '.join(INPUT_NORMS)}, got {input_norm!r}")
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.qk_dim // num_heads)
        bias = self.out_proj.bias is not None
        # W_Q and W_K: rows are selected by the binarized input (Eqs. 6-9)
        self.q_select = nn.Linear(embed_dim, self.qk_dim, bias=bias)
        self.k_select = nn.Linear(self.kdim, self.qk_dim, bias=bias)
        self._query_bits = None  # (input, bits) of the query side, reused by the key side in self-attention
        self.track_binarization = False  # set by analysis tools; then binarization_counts holds the last forward's
        self.binarization_counts = {}
        self.input_norm = input_norm
        if input_norm == "none":
            self.q_norm = self.k_norm = nn.Identity()
        else:
            affine = input_norm == "learnable"
            self.q_norm = nn.LayerNorm(embed_dim, elementwise_affine=affine)
            self.k_norm = nn.LayerNorm(self.kdim, elementwise_affine=affine)
        self.reset_parameters()

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--eatt-threshold", type=finite_float, metavar="TAU",
                            help="E-ATT binarization threshold tau: f(x) = 1 if x > tau else 0 (default: 1.0, "
                                 "the paper's; the authors' code used 0 with --eatt-input-norm)")
        parser.add_argument("--eatt-qk-dim", type=int, metavar="N",
                            help="total dimension of the selected Q/K (default: the model dimension, as in the "
                                 "paper; the authors' code used model dim / heads)")
        parser.add_argument("--eatt-score-scale", choices=SCORE_SCALES, metavar="SCALE",
                            help="divide L1 distances by sqrt of: qk-head-dim (per-head Q/K dim, default), "
                                 "head-dim (model dim / heads), model-dim (Eq. 10 read literally) or none; "
                                 "choices: " + ", ".join(SCORE_SCALES))
        parser.add_argument("--eatt-cross-score-scale", choices=SCORE_SCALES, metavar="SCALE",
                            help="score scale for E-ATT cross-attention (default: same as --eatt-score-scale; the "
                                 "authors' code used different scales in self- and cross-attention)")
        parser.add_argument("--eatt-input-norm", choices=INPUT_NORMS, metavar="NORM",
                            help="layer norm applied to the input before binarization: none (default, paper), "
                                 "static (no parameters) or learnable (authors' code)")

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        return dict(
            threshold=arg_or_default(args, "eatt_threshold", 1.0),
            qk_dim=arg_or_default(args, "eatt_qk_dim", None),
            score_scale=arg_or_default(args, "eatt_score_scale", "qk-head-dim"),
            cross_score_scale=arg_or_default(args, "eatt_cross_score_scale", None),
            input_norm=arg_or_default(args, "eatt_input_norm", "none"),
        )

    @classmethod
    def op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Paper: l*d additions per selection (Eq. 8) and one addition per L1 term (Eq. 10), as in Appendix A.
        Complete: each selected row of W_Q / W_K is added (nonzero ratio x d x d per token, 0.5 when no ratio is
        measured), binarization is one comparison per input, each L1 term is a subtraction plus an accumulation,
        and the scores are scaled (one multiplication each). ``self_attention=True``: queries and keys binarize
        one input, compared once."""
        check_convention(convention)
        alignment = (selection_ops(lq, lk, d, convention, nonzero_ratio, shares_bits(options))
                     + l1_scores(lq, lk, d, heads, convention))
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}

    def reset_parameters(self):
        super().reset_parameters()
        for lin in (self.q_select, self.k_select):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0.0)

    def binarize(self, x: Tensor, norm: nn.Module, side: str) -> Tensor:
        shared = self._query_bits
        if side == "key" and shared is not None and shared[0] is x and self.input_norm != "learnable":
            bits = shared[1]  # self-attention: the key side binarizes the same input with the same norm
        else:
            bits = binarize(norm(x), self.threshold)
        self._query_bits = (x, bits) if side == "query" else None
        if self.track_binarization:  # ones per token, (T, B); see fairseq_eatt.analysis.binarization
            self.binarization_counts[side] = bits.detach().sum(dim=-1, dtype=torch.float32)
        return bits

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_select(self.binarize(query, self.q_norm, "query")))

    def project_key(self, key: Tensor) -> Tensor:
        return self._split_heads(self.k_select(self.binarize(key, self.k_norm, "key")))

    def forward(self, *args, **kwargs):
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._query_bits = None  # never hold the input past its forward

    def compute_scores(self, q: Tensor, k: Tensor, pos=None) -> Tensor:
        return pairwise_l1(q, k).mul(-1.0 / self.score_divisor)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, threshold={self.threshold}, qk_dim={self.qk_dim}, "
            f"score_scale={self.score_scale_name}, input_norm={self.input_norm}"
        )


@register_attention("eatt_select")
class EattSelectAttention(EattAttention):
    """Ablation "discrete selection": binarized selection for Q and K, ordinary scaled dot-product scores."""

    def compute_scores(self, q: Tensor, k: Tensor, pos=None) -> Tensor:
        return torch.matmul(q, k.transpose(-1, -2)).float().mul_(q.size(-1) ** -0.5)

    @classmethod
    def op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        alignment = (selection_ops(lq, lk, d, convention, nonzero_ratio, shares_bits(options))
                     + dot_scores(lq, lk, d, heads, convention)
                     + only_complete(convention, OpCounts(mul=lq * lk * heads)))
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}


@register_attention("eatt_l1")
class EattL1Attention(VanillaAttention):
    """Ablation "L1 distance": ordinary linear Q/K projections, negative L1-distance scores (Eq. 10)."""

    def __init__(self, embed_dim: int, num_heads: int, *, score_scale: str = "qk-head-dim",
                 cross_score_scale: Optional[str] = None, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.head_dim)

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        return dict(
            score_scale=arg_or_default(args, "eatt_score_scale", "qk-head-dim"),
            cross_score_scale=arg_or_default(args, "eatt_cross_score_scale", None),
        )

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query))  # no 1/sqrt(d) here: the L1 score is scaled instead

    def compute_scores(self, q: Tensor, k: Tensor, pos=None) -> Tensor:
        return pairwise_l1(q, k).mul(-1.0 / self.score_divisor)

    @classmethod
    def op_counts(cls, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        check_convention(convention)
        alignment = projection(lq, d, d) + projection(lk, d, d) + l1_scores(lq, lk, d, heads, convention)
        return {"alignment": alignment,
                "attention": alignment + projection(lk, d, d) + weighted_sum(lq, lk, d, convention)}

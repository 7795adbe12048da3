"""E-ATT's declared costs: binarized selection (Eqs. 6-9) and L1-distance scores (Eq. 10), and the ablations'."""
from typing import Optional

from ..cost import AttentionCost
from ..counts import OpCounts, dot_scores, layer_norm_ops, only_complete, projection
from ..vanilla import VanillaCost
from .options import INPUT_NORM, LEARN_TEMPERATURE, MODULE_NORM, QK_DIM, resolve_qk_dim

def selection_ops(lq: int, lk: int, d: int, convention: str, nonzero_ratio=None, shared_input=False,
                  qk_dim: Optional[int] = None) -> OpCounts:
    """Q and K by binarized selection (Eqs. 6-9) into ``qk_dim`` outputs (default d). Paper: l*qk_dim additions
    per projection. Complete: each selected row of W (nonzero ratio x d x qk_dim per token, 0.5 without a
    measured ratio; the bias completes a row with a single selected feature) and one comparison per binarized
    input, once when queries and keys binarize the same input (self-attention without separate learnable input
    norms). ``nonzero_ratio``: one ratio, or a (query side, key side) pair for cross-attention.

    Measured difference (tested): a token with *no* selected feature still adds its bias, qk_dim additions that a
    ratio-based count does not see."""
    qk = d if qk_dim is None else qk_dim
    if convention == "paper":
        return OpCounts(add=(lq + lk) * qk)
    if nonzero_ratio is None:
        nonzero_ratio = 0.5
    q_ratio, k_ratio = nonzero_ratio if isinstance(nonzero_ratio, (tuple, list)) else (nonzero_ratio,) * 2
    return OpCounts(add=d * qk * (float(q_ratio) * lq + float(k_ratio) * lk), cmp=d * (lq if shared_input else lq + lk))


def l1_scores(lq: int, lk: int, qk_dim: int, heads: int, convention: str) -> OpCounts:
    """-|q - k|_1 / scale (Eq. 10) over ``qk_dim`` features in all. Paper: one addition per term. Complete: a
    subtraction and an accumulation per term, and the scaling of each score."""
    if convention == "paper":
        return OpCounts(add=lq * lk * qk_dim)
    return OpCounts(add=2 * lq * lk * qk_dim, mul=lq * lk * heads)


def shares_bits(options: dict) -> bool:
    """Self-attention binarizes its one input once for both sides, unless separate learnable norms make them
    differ."""
    return bool(options.get("self_attention")) and options.get("input_norm", INPUT_NORM.default) != "learnable"


def norm_ops(lq: int, lk: int, d: int, options: dict) -> OpCounts:
    """Layer norms the E-ATT options add (complete convention only; the paper counts no normalization)."""
    ops = OpCounts()
    module_norm = options.get("module_norm", MODULE_NORM.default)
    if module_norm != "none":  # on the queries (self-attention: they are the keys too)
        ops = ops + layer_norm_ops(lq, d, module_norm == "learnable")
    input_norm = options.get("input_norm", INPUT_NORM.default)
    if input_norm != "none":
        ops = ops + layer_norm_ops(lq, d, input_norm == "learnable")
        if not shares_bits(options):
            ops = ops + layer_norm_ops(lk, d, input_norm == "learnable")
    if options.get("learn_temperature", LEARN_TEMPERATURE.default):  # exp(log t) / scale: one multiplication per head
        ops = ops + OpCounts(mul=options.get("heads", 0))
    return ops


def resolved_qk_dim(d: int, heads: int, options: dict) -> int:
    return resolve_qk_dim(options.get("qk_dim", QK_DIM.default), d, heads)


class EattCost(AttentionCost):
    """Paper: l*qk additions per selection (Eq. 8) and one addition per L1 term (Eq. 10), as in Appendix A.
    Complete: each selected row of W_Q / W_K is added (nonzero ratio x d x qk per token, 0.5 when no ratio is
    measured), binarization is one comparison per input, each L1 term is a subtraction plus an accumulation, the
    scores are scaled (one multiplication each), and the options' layer norms are counted. ``self_attention=True``:
    queries and keys binarize one input, compared once."""

    key_side_weights = ("k_select", "k_proj", "v_proj", "k_norm")

    def scores(self, lq, lk, qk, heads, convention, **options) -> OpCounts:
        return l1_scores(lq, lk, qk, heads, convention)

    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        qk = resolved_qk_dim(d, heads, options)
        return (selection_ops(lq, lk, d, convention, nonzero_ratio, shares_bits(options), qk)
                + self.scores(lq, lk, qk, heads, convention, **options)
                + only_complete(convention, norm_ops(lq, lk, d, {**options, "heads": heads})))

    def cached_key_width(self, d, heads, **options):
        return resolved_qk_dim(d, heads, options)

    def weight_reads(self, lq, lk, d, heads, new_keys=None, self_attention=True, selected=None, **options):
        """As every variant's, but ``selected``: the (query side, key side) ones of the binarized inputs of a call
        whose selection reads only the rows of W^T its ones select (the ``gather_select`` / ``cpp_select``
        backends): that many rows, qk wide, instead of the whole W_Q / W_K."""
        reads = super().weight_reads(lq, lk, d, heads, new_keys, self_attention, **options)
        if selected is not None:
            qk = resolved_qk_dim(d, heads, options)
            for name, ones in zip(("q_select.weight", "k_select.weight"), selected):
                if name in reads:
                    reads[name] = ones * qk
        return reads

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Cached keys save their selections (and binarizations and input norms, unless self-attention shares the
        query's bits) and their value projections."""
        qk = resolved_qk_dim(d, heads, options)
        if convention == "paper":
            keys = OpCounts(add=cached * qk)
        else:
            ratio = 0.5 if nonzero_ratio is None else nonzero_ratio
            k_ratio = ratio[1] if isinstance(ratio, (tuple, list)) else ratio
            shared = shares_bits(options)
            keys = OpCounts(add=d * qk * float(k_ratio) * cached, cmp=0 if shared else d * cached)
            input_norm = options.get("input_norm", INPUT_NORM.default)
            if input_norm != "none" and not shared:
                keys = keys + layer_norm_ops(cached, d, input_norm == "learnable")
        return {"alignment": keys, "attention": keys + projection(cached, d, d)}


class EattSelectCost(EattCost):
    """Selection as E-ATT; scaled dot products (with no temperature) instead of L1 distances."""

    def scores(self, lq, lk, qk, heads, convention, **options) -> OpCounts:
        return dot_scores(lq, lk, qk, heads, convention) + only_complete(convention, OpCounts(mul=lq * lk * heads))

    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        # dot products use no temperature
        return super().alignment(lq, lk, d, heads, convention, nonzero_ratio, **{**options, "learn_temperature": False})


class EattL1Cost(VanillaCost):
    """Linear Q/K projections as vanilla; L1-distance scores (Eq. 10)."""

    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        return projection(lq, d, d) + projection(lk, d, d) + l1_scores(lq, lk, d, heads, convention)

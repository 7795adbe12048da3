"""The E-ATT module and the paper's two ablations (Table 5) as plain PyTorch modules."""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..base import AttentionBase, Cache, Positions
from ..backends import select
from ..functional import binarize, binarize_learned, pairwise_l1
from ..registry import Capabilities, register_attention
from ..vanilla import VanillaAttention
from .cost import EattCost, EattL1Cost, EattSelectCost
from .options import (CROSS_SCORE_SCALE, INIT, INPUT_NORM, LEARN_TEMPERATURE, LEARN_THRESHOLD, LEGACY_VALUES,
                      MODULE_NORM, OPTIONS, QK_DIM, RECIPE_NOTES, RECIPES, DEFAULT_RECIPE, SCORE_SCALE, THRESHOLD,
                      check_threshold, fill_recipe_args, l1_score_divisor, make_norm, position_threshold,
                      resolve_qk_dim)
from .selection import forget_rows, select as select_rows

FUSED_OFFER = ("triton_fused",)  # the fused backend exact for E-ATT's dense path


@register_attention("eatt", cost=EattCost)
class EattAttention(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True, binarizes=True)
    added_options = LEGACY_VALUES
    options = OPTIONS
    # fairseq-eatt-convert: the selection weights start from a trained dot-product attention's W_Q and W_K
    converted_from = {"q_select": "q_proj", "k_select": "k_proj"}

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        threshold: float = THRESHOLD.default,
        learn_threshold: bool = LEARN_THRESHOLD.default,
        qk_dim=QK_DIM.default,
        score_scale: str = SCORE_SCALE.default,
        cross_score_scale: Optional[str] = CROSS_SCORE_SCALE.default,
        input_norm: str = INPUT_NORM.default,
        module_norm: str = MODULE_NORM.default,
        learn_temperature: bool = LEARN_TEMPERATURE.default,
        init: str = INIT.default,
        **kwargs,
    ):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.threshold = check_threshold(threshold)
        self.qk_dim = resolve_qk_dim(qk_dim, embed_dim, num_heads)
        self.init = INIT.validate(init)
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.qk_dim // num_heads)
        bias = self.out_proj.bias is not None
        # W_Q and W_K: rows are selected by the binarized input (Eqs. 6-9)
        self.q_select = nn.Linear(embed_dim, self.qk_dim, bias=bias)
        self.k_select = nn.Linear(self.kdim, self.qk_dim, bias=bias)
        self.track_binarization = False  # set by analysis tools; then binarization_counts holds the last forward's
        self.binarization_counts = {}
        self.input_norm = input_norm
        self.q_norm = make_norm(input_norm, embed_dim, "--eatt-input-norm")
        self.k_norm = make_norm(input_norm, self.kdim, "--eatt-input-norm")
        self.module_norm_kind = module_norm
        self.module_norm = make_norm(module_norm, embed_dim, "--eatt-module-norm")
        self.learn_threshold = LEARN_THRESHOLD.validate(learn_threshold)
        # learned thresholds, one per input feature: one for self-attention's single input, two in cross-attention
        self.q_threshold = nn.Parameter(torch.full((embed_dim,), self.threshold)) if self.learn_threshold else None
        self.k_threshold = (nn.Parameter(torch.full((self.kdim,), self.threshold))
                            if self.learn_threshold and self.encoder_decoder_attention else None)
        self.learn_temperature = LEARN_TEMPERATURE.validate(learn_temperature)
        self.log_temperature = nn.Parameter(torch.zeros(num_heads)) if self.learn_temperature else None
        self.reset_parameters()

    # ---- options: declared once in OPTIONS
    @classmethod
    def add_args(cls, parser, seen: Optional[set] = None):
        seen = set() if seen is None else seen
        if "--eatt-recipe" not in seen:  # explicit default: saved arguments always name their recipe
            seen.add("--eatt-recipe")
            parser.add_argument("--eatt-recipe", choices=RECIPES, default=DEFAULT_RECIPE, metavar="RECIPE",
                                help="defaults of every E-ATT option and of the blocks of the whole model: "
                                     + "; ".join(f"{r} ({RECIPE_NOTES[r]})" for r in RECIPES)
                                     + f"; flags given override it (default: {DEFAULT_RECIPE})")
        super().add_args(parser, seen)

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        options = super().kwargs_from_args(args, position)
        options["threshold"] = position_threshold(args, position)
        return options

    @classmethod
    def prepare_args(cls, args):
        fill_recipe_args(args)

    def reset_parameters(self):
        super().reset_parameters()
        if getattr(self, "init", "xavier") == "authors":
            self._authors_init()
            return
        for lin in (self.q_select, self.k_select):
            nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0.0)

    def _authors_init(self):
        """The released code's bounds: selection weights Xavier-uniform over (input, all Q/K outputs: Q and K
        are one matrix in self-attention), selection biases uniform in +-sqrt(3h/d), value and output weights
        and biases uniform in +-sqrt(3/d)."""
        fused = 2 if self.self_attention else 1
        bound = math.sqrt(6.0 / (self.embed_dim + fused * self.qk_dim))
        bias_bound = math.sqrt(3.0 * self.num_heads / self.embed_dim)
        for lin in (self.q_select, self.k_select):
            nn.init.uniform_(lin.weight, -bound, bound)
            if lin.bias is not None:
                nn.init.uniform_(lin.bias, -bias_bound, bias_bound)
        plain = math.sqrt(3.0 / self.embed_dim)
        for lin in ([self.v_proj] if self.value_projection else []) + [self.out_proj]:
            nn.init.uniform_(lin.weight, -plain, plain)
            if lin.bias is not None:
                nn.init.uniform_(lin.bias, -plain, plain)

    # ---- hooks
    def normalize_inputs(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                         ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """The module-owned norm (authors' code): self-attention normalizes its input once and uses it for
        Q, K and V; cross-attention normalizes the query side only."""
        if self.module_norm_kind == "none":
            return query, key, value
        normed = self.module_norm(query)
        if self.encoder_decoder_attention:
            return normed, key, value
        # each distinct input tensor is normalized once
        normed_key: Optional[Tensor] = None
        if key is not None:
            normed_key = normed if key is query else self.module_norm(key)
        normed_value: Optional[Tensor] = None
        if value is not None:
            if value is query:
                normed_value = normed
            elif value is key:
                normed_value = normed_key
            else:
                normed_value = self.module_norm(value)
        return normed, normed_key, normed_value

    def _bits(self, x: Tensor, side: str) -> Tensor:
        """The binarized input of one side (``query`` or ``key``), afresh."""
        if side == "key":
            x = self.k_norm(x)
            threshold = self.k_threshold if self.k_threshold is not None else self.q_threshold
        else:
            x = self.q_norm(x)
            threshold = self.q_threshold
        if threshold is None:
            return binarize(x, self.threshold)
        return binarize_learned(x, threshold)

    def binary_codes(self, query: Tensor, key: Tensor) -> Tuple[Tensor, Tensor]:
        """The binarized inputs (T, B, d) and (S, B, d) that select Q and K for these inputs, computed afresh
        (for analysis; the forward pass is untouched)."""
        query, key, _ = self.normalize_inputs(query, key, None)
        assert key is not None
        return self._bits(query, "query"), self._bits(key, "key")

    def binarize(self, x: Tensor, side: str, bits: Optional[Tensor] = None) -> Tensor:
        """The binarized input of one side; ``bits``: already computed for this input (self-attention)."""
        if bits is None:
            bits = self._bits(x, side)
        if not torch.jit.is_scripting() and self.track_binarization:
            self._record_binarization(side, bits)
        return bits

    @torch.jit.unused
    def _record_binarization(self, side: str, bits: Tensor):
        """Ones per token, (T, B), of the last forward (see fairseq_eatt.analysis.binarization)."""
        # counted in integers: the statistics are not the model's arithmetic (the op counter skips them)
        self.binarization_counts[side] = bits.detach().to(torch.int32).sum(dim=-1).to(torch.float32)

    def project(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        q_bits = self.binarize(query, "query")
        k: Optional[Tensor] = None
        if key is not None:
            # self-attention with one input: the key side binarizes it with the same norm, so once is enough
            same = key is query and self.k_threshold is None and self.input_norm != "learnable"
            k_bits = self.binarize(key, "key", q_bits if same else None)
            k = self._split_heads(self._selected(k_bits, "key"))
        v: Optional[Tensor] = None
        if value is not None:
            v = self.project_value(value)
        return self._split_heads(self._selected(q_bits, "query")), k, v

    def _selected(self, bits: Tensor, side: str) -> Tensor:
        """Q or K from the bits: nn.Linear, or the selected rows only where the backend choice takes them (eager
        only: TorchScript and ONNX graphs take nn.Linear, the backend choice's fallback)."""
        if not torch.jit.is_scripting():
            return self._selected_rows(bits, side)
        return self.q_select(bits) if side == "query" else self.k_select(bits)

    def train(self, mode: bool = True):
        # kept W^T copies of the selection (gather backends) are dropped: training changes the weights
        forget_rows(self)
        return super().train(mode)

    @torch.jit.unused
    def _selected_rows(self, bits: Tensor, side: str) -> Tensor:
        if side == "query":
            return select_rows(self, self.q_select, bits, "q_rows")
        return select_rows(self, self.k_select, bits, "k_rows")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The fused Triton kernel when the backend choice takes it (on CUDA with triton by default, see
        backends.py), the weights are not asked for and nothing changes the dense path's probabilities (dropout,
        learned temperatures, a subclass's scores); the dense path otherwise."""
        if not torch.jit.is_scripting() and not need_weights and self._fused_wanted(q):
            return self._fused_attend(q, k, v, key_padding_mask, attn_mask), None
        return self.dense_attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights)

    @torch.jit.unused
    def _fused_wanted(self, q: Tensor) -> bool:
        dropout = self.dropout_p > 0 and (self.training or self.dropout_at_inference)
        fusable = type(self).computes_like(EattAttention) and self.log_temperature is None and not dropout
        return fusable and select("attend", q, FUSED_OFFER) == "triton_fused"

    @torch.jit.unused
    def _fused_attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                      attn_mask: Optional[Tensor]) -> Tensor:
        from .triton_kernels import FusedEattAttention

        rows, heads, tgt_len, width = q.shape
        src_len, dv = k.size(2), v.size(3)
        out = FusedEattAttention.apply(q.reshape(rows * heads, tgt_len, width), k.reshape(rows * heads, src_len, -1),
                                       v.reshape(rows * heads, src_len, dv), 1.0 / self.score_divisor, heads,
                                       attn_mask, key_padding_mask)
        return out.view(rows, heads, tgt_len, dv)

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        """-|q - k|_1 / scale, times each head's learned temperature when there is one."""
        distances = pairwise_l1(q, k)
        if self.log_temperature is None:
            return distances.mul(-1.0 / self.score_divisor)
        return distances.mul(self.log_temperature.exp().mul(-1.0 / self.score_divisor).view(-1, 1, 1))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, threshold={self.threshold}, learn_threshold={self.learn_threshold}, "
            f"qk_dim={self.qk_dim}, score_scale={self.score_scale_name}, input_norm={self.input_norm}, "
            f"module_norm={self.module_norm_kind}, learn_temperature={self.learn_temperature}, init={self.init}"
        )


@register_attention("eatt_select", cost=EattSelectCost)
class EattSelectAttention(EattAttention):
    """Ablation "discrete selection": binarized selection for Q and K, ordinary scaled dot-product scores."""

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return torch.matmul(q, k.transpose(-1, -2)).float().mul_(q.size(-1) ** -0.5)


@register_attention("eatt_l1", cost=EattL1Cost)
class EattL1Attention(VanillaAttention):
    """Ablation "L1 distance": ordinary linear Q/K projections, negative L1-distance scores (Eq. 10)."""

    options = (SCORE_SCALE, CROSS_SCORE_SCALE)

    def __init__(self, embed_dim: int, num_heads: int, *, score_scale: str = SCORE_SCALE.default,
                 cross_score_scale: Optional[str] = CROSS_SCORE_SCALE.default, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.score_scale_name, self.score_divisor = l1_score_divisor(self, score_scale, cross_score_scale,
                                                                     self.head_dim)

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query))  # no 1/sqrt(d) here: the L1 score is scaled instead

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        return pairwise_l1(q, k).mul(-1.0 / self.score_divisor)

"""Synthesizer attention (Tay et al., 2021), the baselines of the E-ATT paper's Tables 2 and 6.

No query-key interaction: the attention logits are *synthesized*.

- ``synth_dense``: a per-token MLP gives each query one row of logits over key positions,
  B_i = W_2 relu(W_1 x_i + b_1) + b_2. The hidden layer (d units) is split into one block per head and each block
  is projected to the logits of its head, so the whole layer costs l*d^2 + l^2*d multiply-adds as in the paper's
  Appendix A.
- ``synth_random``: a learned logit matrix R (heads x max_len x max_len), independent of the input;
  ``synth_random_fixed`` keeps R at its random initialization (a buffer, saved in checkpoints, never trained).

Both need a maximum length (``--synth-max-length``, default ``--max-source-positions`` /
``--max-target-positions``). Columns are *key positions* and rows (random) are *query positions*, counted over
real tokens: with left padding (fairseq's default for sources) the first real token is position 0 whatever the
padding, so a sentence gets the same logits on either padding side. A batch longer than the maximum length raises
a clear error.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import AttentionBase, Positions
from .registry import DECODER_CROSS, DECODER_SELF, Capabilities, arg_or_default, register_attention


class SynthesizerBase(AttentionBase):
    capabilities = Capabilities(causal=True, cross=True, incremental=True, fixed_max_length=True)
    needs_positions = True

    def __init__(self, embed_dim: int, num_heads: int, *, max_query_length: int, max_key_length: int,
                 max_length_flag: str = "--synth-max-length", **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        for name, value in (("max_query_length", max_query_length), ("max_key_length", max_key_length)):
            if int(value) <= 0:
                raise ValueError(f"{max_length_flag} must be a positive length, got {value} ({name})")
        self.max_query_length = int(max_query_length)
        self.max_key_length = int(max_key_length)
        self.max_length_flag = max_length_flag

    @classmethod
    def add_args(cls, parser):
        parser.add_argument("--synth-max-length", type=int, metavar="N",
                            help="maximum sequence length of the synthesizer variants (they learn one logit per "
                                 "position); default: --max-source-positions for encoder self-attention and for the "
                                 "key side of cross-attention, --max-target-positions for the decoder side")

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        explicit = arg_or_default(args, "synth_max_length", None)
        src = arg_or_default(args, "max_source_positions", 1024)
        tgt = arg_or_default(args, "max_target_positions", 1024)
        if explicit is not None:
            return dict(max_query_length=explicit, max_key_length=explicit, max_length_flag="--synth-max-length")
        if position == DECODER_SELF:
            return dict(max_query_length=tgt, max_key_length=tgt, max_length_flag="--max-target-positions")
        if position == DECODER_CROSS:
            return dict(max_query_length=tgt, max_key_length=src,
                        max_length_flag="--max-target-positions / --max-source-positions")
        return dict(max_query_length=src, max_key_length=src, max_length_flag="--max-source-positions")

    def _check_lengths(self, pos: Positions):
        longest_query = pos.query_len_bound
        longest_key = pos.key_len_bound
        if longest_query > self.max_query_length or longest_key > self.max_key_length:
            raise ValueError(
                f"{self.variant_name}: a batch has {longest_query} query / {longest_key} key positions but the "
                f"variant was built for at most {self.max_query_length} / {self.max_key_length} "
                f"(set by {self.max_length_flag}); raise it, or filter long sentences "
                f"(--max-source-positions / --max-target-positions with --skip-invalid-size-inputs-valid-test)"
            )

    # keys and queries are not projected: the logits come from positions (and, for dense, the query input)
    def project_key(self, key: Tensor) -> Tensor:
        return key.new_zeros(key.size(1), self.num_heads, key.size(0), 0)


@register_attention("synth_dense")
class DenseSynthesizerAttention(SynthesizerBase):
    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        bias = self.out_proj.bias is not None
        self.hidden = nn.Linear(embed_dim, embed_dim, bias=bias)  # W_1
        # W_2, one (d/h x max_len) block per head
        self.logits_weight = nn.Parameter(torch.empty(num_heads, self.head_dim, self.max_key_length))
        self.logits_bias = nn.Parameter(torch.zeros(self.max_key_length)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        nn.init.xavier_uniform_(self.hidden.weight, gain=1 / math.sqrt(2))
        if self.hidden.bias is not None:
            nn.init.constant_(self.hidden.bias, 0.0)
        bound = 1 / math.sqrt(self.head_dim)
        nn.init.uniform_(self.logits_weight, -bound, bound)

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(F.relu(self.hidden(query)))  # (B, H, T, d/h)

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        self._check_lengths(pos)
        width = pos.key_len_bound
        # logits over the first `width` key positions, then each key picks the column of its position
        logits = torch.einsum("bhtc,hcs->bhts", q, self.logits_weight[:, :, :width]).float()
        if self.logits_bias is not None:
            logits = logits + self.logits_bias[:width].float()
        index = pos.key.view(pos.key.size(0), 1, 1, -1).expand(logits.size(0), logits.size(1), logits.size(2), -1)
        return logits.gather(-1, index)


class _RandomSynthesizer(SynthesizerBase):
    trainable = True

    def __init__(self, embed_dim: int, num_heads: int, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        init = torch.empty(num_heads, self.max_query_length, self.max_key_length)
        nn.init.normal_(init, std=1.0 / math.sqrt(self.max_key_length))
        if self.trainable:
            self.logits = nn.Parameter(init)
        else:
            self.register_buffer("logits", init)

    def project_query(self, query: Tensor) -> Tensor:
        return query.new_zeros(query.size(1), self.num_heads, query.size(0), 0)

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        self._check_lengths(pos)
        table = self.logits[:, : pos.query_len_bound, : pos.key_len_bound].float()  # (H, Tq, Sk)
        bsz = max(pos.query.size(0), pos.key.size(0), q.size(0))
        heads, tq, sk = table.shape
        rows = pos.query.expand(bsz, -1)  # (B, T)
        cols = pos.key.expand(bsz, -1)  # (B, S)
        # (B, H, T, Sk): pick the rows of the query positions, then the columns of the key positions
        picked_rows = table.unsqueeze(0).expand(bsz, -1, -1, -1).gather(
            2, rows.view(bsz, 1, -1, 1).expand(-1, heads, -1, sk))
        return picked_rows.gather(3, cols.view(bsz, 1, 1, -1).expand(-1, heads, rows.size(1), -1))


@register_attention("synth_random")
class RandomSynthesizerAttention(_RandomSynthesizer):
    trainable = True


@register_attention("synth_random_fixed")
class FixedRandomSynthesizerAttention(_RandomSynthesizer):
    trainable = False

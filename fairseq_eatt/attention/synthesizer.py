"""Synthesizer attention (Tay et al., 2021), the baselines of the E-ATT paper's Tables 2 and 6.

No query-key interaction: the attention logits are *synthesized*.

- ``synth_dense``: a per-token MLP gives each query one row of logits over key positions,
  B_i = W_2 relu(W_1 x_i + b_1) + b_2. The hidden layer (d units) is split into one block per head and each block
  is projected to the logits of its head, so the whole layer costs l*d^2 + l^2*d multiply-adds as in the paper's
  Appendix A.
- ``synth_random``: a learned logit matrix R (heads x max_len x max_len), independent of the input;
  ``synth_random_fixed`` keeps R at its random initialization (a buffer, saved in checkpoints, never trained).

Both need a maximum length (``--attention-max-length``, alias ``--synth-max-length``, default
``--max-source-positions`` / ``--max-target-positions``). Columns are *key positions* and rows (random) are
*query positions*, counted over real tokens: with left padding (fairseq's default for sources) the first real
token is position 0 whatever the padding, so a sentence gets the same logits on either padding side. A batch
longer than the maximum length raises a clear error.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .counts import OpCounts, projection
from .base import Positions
from .fixed_length import FixedLengthAttention
from .cost import AttentionCost
from .registry import Capabilities, register_attention


class SynthesizerCost(AttentionCost):
    def cached_key_width(self, d, heads, **options):
        return 0  # keys are positions: nothing is cached for them

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Cached keys save their value projections only: synthesizers project no keys."""
        return {"alignment": OpCounts(), "attention": projection(cached, d, d)}


class SynthesizerBase(FixedLengthAttention):
    capabilities = Capabilities(causal=True, cross=True, fixed_max_length=True, cross_self_attention=False,
                                cross_self_why_not="learns weights per position up to the target's maximum length; "
                                                   "keys that start with the source go past it")

    # keys are not projected: the logits come from positions (and, for dense, the query input)
    def project_key(self, key: Tensor) -> Tensor:
        return key.new_zeros(key.size(1), self.num_heads, key.size(0), 0)


class DenseSynthesizerCost(SynthesizerCost):
    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        """W_1 (d x d) and W_2 (one row of lk logits per token, d inputs) instead of Q/K projections and scores."""
        return projection(lq, d, d) + projection(lq, d, lk)

    def length_indexed_reads(self, lq, lk, d, heads, new, **options):
        """W_2's columns and biases of the key positions."""
        return {"logits_weight": d * lk, "logits_bias": lk}


@register_attention("synth_dense", cost=DenseSynthesizerCost)
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
        pos = self._check_lengths(pos)
        width = pos.key_len_bound
        # logits over the first `width` key positions, then each key picks the column of its position
        logits = torch.einsum("bhtc,hcs->bhts", q, self.logits_weight[:, :, :width]).float()
        if self.logits_bias is not None:
            logits = logits + self.logits_bias[:width].float()
        index = pos.key.view(pos.key.size(0), 1, 1, -1).expand(logits.size(0), logits.size(1), logits.size(2), -1)
        return logits.gather(-1, index)


class RandomSynthesizerCost(SynthesizerCost):
    def alignment(self, lq, lk, d, heads, convention, nonzero_ratio=None, **options):
        """No alignment arithmetic at all: the logits are looked up."""
        return OpCounts()

    def length_indexed_reads(self, lq, lk, d, heads, new, **options):
        """Each head's logits of the query and key positions."""
        return {"logits": heads * lq * lk}


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
        pos = self._check_lengths(pos)
        # every query row of the table, picked by position below (no slice by the query bound: a traced decoding
        # step would freeze it)
        table = self.logits[:, :, : pos.key_len_bound].float()  # (H, max query length, Sk)
        bsz = max(pos.query.size(0), pos.key.size(0), q.size(0))
        heads, tq, sk = table.shape
        rows = pos.query.expand(bsz, -1)  # (B, T)
        cols = pos.key.expand(bsz, -1)  # (B, S)
        # (B, H, T, Sk): pick the rows of the query positions, then the columns of the key positions
        picked_rows = table.unsqueeze(0).expand(bsz, -1, -1, -1).gather(
            2, rows.view(bsz, 1, -1, 1).expand(-1, heads, -1, sk))
        return picked_rows.gather(3, cols.view(bsz, 1, 1, -1).expand(-1, heads, rows.size(1), -1))


@register_attention("synth_random", cost=RandomSynthesizerCost)
class RandomSynthesizerAttention(_RandomSynthesizer):
    trainable = True


@register_attention("synth_random_fixed", cost=RandomSynthesizerCost)
class FixedRandomSynthesizerAttention(_RandomSynthesizer):
    trainable = False

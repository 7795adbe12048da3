"""Encoder token pruning (the survey's dynamic token selection): after one encoder layer, keep only the most
important source tokens; later encoder layers and the decoder's cross-attention see only those.

Importance of a source token:
- ``attention``: the attention it receives in the pruning layer's self-attention, averaged over heads and over the
  sentence's (non-padding) queries;
- ``learned``: sigmoid(w . x + b) of its state after the pruning layer; kept tokens are scaled by it, so the
  scorer is trained by the translation loss (a token the model needs gets a high score).

Which tokens stay (per sentence, padding never counts):
- a keep ratio r in (0, 1]: the ceil(r * n) most important of its n tokens (at least one);
- a threshold t in [0, 1]: the tokens whose importance is at least t times the sentence's largest.

Kept tokens keep their order and come out right-padded, whatever the input's padding side; positions were
added to the embeddings before the first layer, so they travel with the tokens.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

IMPORTANCE = ("attention", "learned")


def check_keep_ratio(ratio) -> float:
    if ratio is None or not (0.0 < float(ratio) <= 1.0) or math.isnan(float(ratio)):
        raise ValueError(f"--prune-keep-ratio must be in (0, 1] (the share of source tokens kept), got {ratio!r}")
    return float(ratio)


def check_prune_threshold(threshold) -> float:
    if threshold is None or not (0.0 <= float(threshold) <= 1.0) or math.isnan(float(threshold)):
        raise ValueError(f"--prune-threshold must be in [0, 1] (a share of the sentence's largest importance), "
                         f"got {threshold!r}")
    return float(threshold)


def check_prune_args(layer, ratio, threshold, importance, encoder_layers: Optional[int]):
    """The pruning flags' values, or a ValueError naming the flag and what is valid."""
    if layer is None:
        given = [flag for flag, value in (("--prune-keep-ratio", ratio), ("--prune-threshold", threshold),
                                          ("--prune-importance", importance)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} needs --prune-layer (the encoder layer after which tokens are "
                             f"pruned)")
        return
    if encoder_layers is not None and not 1 <= layer < encoder_layers:
        raise ValueError(f"--prune-layer must be between 1 and {encoder_layers - 1} (a layer followed by another "
                         f"of the {encoder_layers} encoder layers), got {layer}")
    if encoder_layers is None and layer < 1:
        raise ValueError(f"--prune-layer must be at least 1, got {layer}")
    if ratio is not None and threshold is not None:
        raise ValueError("give either --prune-keep-ratio or --prune-threshold, not both")
    if ratio is not None:
        check_keep_ratio(ratio)
    if threshold is not None:
        check_prune_threshold(threshold)
    if importance is not None and importance not in IMPORTANCE:
        raise ValueError(f"--prune-importance must be one of {', '.join(IMPORTANCE)}, got {importance!r}")


DEFAULT_KEEP_RATIO = 0.7


class TokenPruner(nn.Module):
    """Chooses and gathers the kept tokens of a (T, B, C) encoder state."""

    def __init__(self, embed_dim: int, keep_ratio: Optional[float] = None, threshold: Optional[float] = None,
                 importance: str = "attention"):
        super().__init__()
        if keep_ratio is None and threshold is None:
            keep_ratio = DEFAULT_KEEP_RATIO
        self.keep_ratio = -1.0 if keep_ratio is None else check_keep_ratio(keep_ratio)
        self.threshold = -1.0 if threshold is None else check_prune_threshold(threshold)
        if importance not in IMPORTANCE:
            raise ValueError(f"--prune-importance must be one of {', '.join(IMPORTANCE)}, got {importance!r}")
        self.uses_attention = importance == "attention"
        self.scorer: Optional[nn.Linear] = None
        if not self.uses_attention:
            self.scorer = nn.Linear(embed_dim, 1)
            nn.init.zeros_(self.scorer.weight)
            nn.init.constant_(self.scorer.bias, 3.0)  # every gate near 1 at first: the model starts unpruned

    def importance(self, x: Tensor, padding_mask: Tensor, attention: Optional[Tensor]) -> Tensor:
        """(B, T) importance, -inf at padding. ``attention``: (B, T queries, T keys), averaged over heads."""
        if self.scorer is not None:
            scores = torch.sigmoid(self.scorer(x)).squeeze(-1).transpose(0, 1)
        else:
            if attention is None:
                raise RuntimeError("attention-based token pruning needs the pruning layer's attention weights")
            valid = (~padding_mask).to(attention.dtype)  # queries that count
            received = torch.einsum("bqk,bq->bk", attention.detach(), valid)
            scores = received / valid.sum(dim=1, keepdim=True).clamp_min(1.0)
        return scores.masked_fill(padding_mask, float("-inf"))

    def keep_mask(self, importance: Tensor, padding_mask: Tensor) -> Tensor:
        """(B, T) True where a token stays."""
        real = ~padding_mask
        if self.threshold >= 0:
            largest = importance.max(dim=1, keepdim=True).values
            return real & (importance >= largest * self.threshold)
        lengths = real.sum(dim=1, keepdim=True)
        keep = torch.ceil(lengths.to(torch.float64) * self.keep_ratio).to(torch.long).clamp_min(1)
        order = torch.argsort(importance.detach(), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.size(1), device=order.device).unsqueeze(0).expand_as(order))
        return real & (rank < keep)

    def forward(self, x: Tensor, padding_mask: Tensor, attention: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """(kept states (K, B, C), their padding mask (B, K), right-padded)."""
        importance = self.importance(x, padding_mask, attention)
        keep = self.keep_mask(importance, padding_mask)
        if self.scorer is not None:
            x = x * importance.clamp_min(0.0).transpose(0, 1).unsqueeze(-1)  # -inf at padding: those are dropped
        kept = keep.sum(dim=1)
        width = int(kept.max())
        # kept tokens first, in their order (a stable sort of "dropped" flags), then cut to the longest
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
        gathered = x.gather(0, order.transpose(0, 1).unsqueeze(-1).expand(width, x.size(1), x.size(2)))
        new_mask = torch.arange(width, device=x.device).unsqueeze(0) >= kept.unsqueeze(1)
        gathered = gathered.masked_fill(new_mask.transpose(0, 1).unsqueeze(-1), 0.0)
        return gathered, new_mask

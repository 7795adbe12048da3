"""Masks, positions and the softmax shared by every attention variant (free functions, compiled by TorchScript)."""
from typing import NamedTuple, Optional

import torch
from torch import Tensor


class Positions(NamedTuple):
    """Where each query and key sits in its sentence, counting real tokens only (left padding shifts nothing).

    Given to ``compute_scores`` of variants with ``needs_positions = True``.
    """

    query: Tensor  # (B or 1, T) long
    key: Tensor  # (B or 1, S) long
    # every query position is below this; -1 in a cross-attention decoding step, where the positions stay on the
    # device (knowing the bound would cost a host synchronization every step)
    query_len_bound: int
    key_len_bound: int  # every key position is below this


def positions(key_padding_mask: Optional[Tensor], tgt_len: int, src_len: int, steps: Optional[Tensor],
              cross: bool, device: torch.device) -> Positions:
    """Positions of the queries and keys of one call; ``steps``: decoding steps already taken (the first query's
    position), per row, or None."""
    if key_padding_mask is not None:
        key = ((~key_padding_mask.to(torch.bool)).long().cumsum(dim=1) - 1).clamp_(min=0)
    else:
        key = torch.arange(src_len, device=device).unsqueeze(0)
    if cross:  # queries are target positions, keys source positions
        query = torch.arange(tgt_len, device=device).unsqueeze(0)
        if steps is None:
            return Positions(query, key, tgt_len, src_len)
        return Positions(query + steps[:1].unsqueeze(1), key, -1, src_len)
    # self-attention: the queries are the last tgt_len keys (all of them outside incremental decoding)
    return Positions(key[:, src_len - tgt_len:], key, src_len, src_len)


def masked_softmax(scores: Tensor, masked: bool) -> Tensor:
    """Softmax in float32. A row whose keys are all masked (an empty sentence) gets zeros, not NaN; a NaN coming
    from the inputs is left to propagate so it is not hidden."""
    probs = torch.softmax(scores.float(), dim=-1)
    if masked:
        probs = probs.masked_fill(scores.amax(dim=-1, keepdim=True) == float("-inf"), 0.0)
    return probs


def cached_padding_mask(prev: Optional[Tensor], new: Optional[Tensor], bsz: int, src_len: int,
                        static_kv: bool) -> Optional[Tensor]:
    """Padding mask over all cached keys (fairseq passes only the new step's mask)."""
    if static_kv:
        return new if new is not None else prev
    if prev is None and new is None:
        return None
    if prev is None:
        assert new is not None
        prev = torch.zeros(bsz, src_len - new.size(1), dtype=torch.bool, device=new.device)
    if new is None:
        new = torch.zeros(bsz, src_len - prev.size(1), dtype=torch.bool, device=prev.device)
    return torch.cat([prev.to(torch.bool), new.to(torch.bool)], dim=1)


def returned_weights(probs: Optional[Tensor], need_weights: bool, need_head_weights: bool) -> Optional[Tensor]:
    """fairseq's convention: (H, B, T, S) per head, or averaged over heads (B, T, S)."""
    if not need_weights or probs is None:
        return None
    weights = probs.transpose(0, 1)
    return weights if need_head_weights else weights.mean(dim=0)

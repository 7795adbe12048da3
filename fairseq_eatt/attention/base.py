"""The one interface every attention variant implements.

:class:`AttentionBase` speaks fairseq's ``MultiheadAttention`` contract (Time x Batch x Channel inputs,
``key_padding_mask`` (B, S) with True = pad, additive ``attn_mask`` (T, S), ``incremental_state`` for beam search)
but is plain PyTorch: it imports nothing from fairseq. A variant overrides only what differs from standard
multi-head attention:

- :meth:`project_query` / :meth:`project_key` / :meth:`project_value`: (T, B, C) -> (B, H, T, d)
- :meth:`compute_scores`: (B, H, T, dq), (B, H, S, dq) -> float scores (B, H, T, S), larger = more attention

The base class handles caching for incremental decoding, beam reordering, masks, softmax, dropout, the weighted
sum of values and the output projection.
"""
import math
import uuid
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .observers import report_call, report_reorder
from .cache import flag, fold_beams, reorder_cache, sentence_order, share_source, stored, unfold_beams
from .masks import Positions, cached_padding_mask, masked_softmax, positions, returned_weights
from .options import DeclaredOptions
from .registry import Capabilities

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]
Cache = Dict[str, Optional[Tensor]]  # one module's entry of the incremental state (flags as 0-dim tensors)


class AttentionBase(DeclaredOptions, nn.Module):
    capabilities = Capabilities()
    variant_name = "base"  # set by @register_attention
    needs_positions = False  # True: compute_scores receives token positions (position-based variants)
    value_projection = True  # False: V is the input itself, split into heads (cost-effective attention)
    # {own parameter: a trained dot-product attention's parameter it may start from} (fairseq-eatt-convert); the
    # parameters both have under one name (v_proj, out_proj) are copied without being named here
    converted_from: Dict[str, str] = {}

    def __init__(self, embed_dim: int, num_heads: int, *, kdim: Optional[int] = None, vdim: Optional[int] = None,
                 dropout: float = 0.0, bias: bool = True, self_attention: bool = False,
                 encoder_decoder_attention: bool = False):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout_p = dropout
        self.dropout_at_inference = False  # fairseq-generate --retain-dropout (see make_generation_fast_)
        self.self_attention = self_attention
        self.encoder_decoder_attention = encoder_decoder_attention
        # fairseq's decoder layer inspects these two attributes of its attention modules.
        self.add_zero_attn = False
        self.bias_k = self.bias_v = None
        self._state_key = str(uuid.uuid4())
        # class-level declarations copied onto the instance: TorchScript reads instance attributes only
        self.needs_positions = type(self).needs_positions
        self.value_projection = type(self).value_projection
        self.variant_name = type(self).variant_name
        self.beam_size = 1  # set by fairseq's SequenceGenerator (set_beam_size); see cache.py
        # None without W_V: TorchScript then compiles only project_value's branch without it
        self.v_proj: Optional[nn.Linear] = nn.Linear(self.vdim, embed_dim, bias=bias) if self.value_projection \
            else None
        if not self.value_projection and self.vdim != embed_dim:
            raise ValueError(f"{type(self).__name__} uses its input as values: it needs the value input to have the "
                             f"model's dimension ({embed_dim}), got {self.vdim}")
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    # ------------------------------------------------------------------ forward: fairseq's attention contract
    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[IncrementalState] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if incremental_state is not None and not static_kv and not self.encoder_decoder_attention and \
                not before_softmax:
            stepped = self.decode_step(query, key, value, key_padding_mask, incremental_state)
            if stepped is not None:
                if not torch.jit.is_scripting():  # a fixed-size state: no keys to count
                    self._report_call(query.size(1), query.size(0), None, query.size(0))
                return stepped
        tgt_len, bsz, _ = query.shape
        buffer: Optional[Cache] = None
        if incremental_state is not None:
            buffer = self._get_input_buffer(incremental_state)
        if buffer is not None and static_kv:
            shared = self.beam_size > 1 and self.beamable
            key, value, key_padding_mask = share_source(buffer, key, value, key_padding_mask, bsz,
                                                        self.beam_size if shared else 1)
        query, key, value = self.normalize_inputs(query, key, value)
        fresh_values = value is not None
        q, k, v = self.project(query, key, value)
        k, v, key_padding_mask, pos = self._keys_and_values(buffer, incremental_state, q, k, v, key_padding_mask,
                                                            attn_mask, static_kv, bsz, tgt_len, fresh_values)
        sentences = k.size(0)
        if sentences != bsz:  # keys per source sentence (cached by an earlier step): fold the hypotheses
            if sentences * self.beam_size != bsz or not self.beamable or attn_mask is not None:
                raise RuntimeError(self.variant_name + ": cached keys for " + str(sentences) + " sentences cannot "
                                   "serve " + str(bsz) + " hypotheses (beam size " + str(self.beam_size) + ")")
            q = fold_beams(q, sentences)
        if not torch.jit.is_scripting():
            new_keys: Optional[int] = None
            if incremental_state is not None:
                new_keys = (k.size(2) if fresh_values else 0) if static_kv else tgt_len
            self._report_call(sentences, q.size(2), k.size(2), new_keys)
        if before_softmax:
            scores = self.masked_scores(q, k, pos, key_padding_mask, attn_mask)
            if sentences != bsz:  # per hypothesis, like the scores
                return unfold_beams(scores, bsz, tgt_len), v.repeat_interleave(bsz // sentences, dim=0)
            return scores, v
        # while decoding, cross-attention's cache is open to attend (see attend)
        cache: Optional[Cache] = None
        if buffer is not None and static_kv and incremental_state is not None:
            cache = self._get_input_buffer(incremental_state)
        out, probs = self.attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights or need_head_weights, cache)
        if sentences != bsz:
            out = unfold_beams(out, bsz, tgt_len)
            if probs is not None:
                probs = unfold_beams(probs, bsz, tgt_len)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, out.size(1) * out.size(3)))
        return out, returned_weights(probs, need_weights or need_head_weights, need_head_weights)

    def decode_step(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                    key_padding_mask: Optional[Tensor], incremental_state: IncrementalState
                    ) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """Hook for decoder self-attention steps that keep another state than keys and values (Performer's
        running sums): (output, weights), or None for the standard cached path."""
        return None

    def _keys_and_values(self, buffer: Optional[Cache], incremental_state: Optional[IncrementalState], q: Tensor,
                         k: Optional[Tensor], v: Optional[Tensor], key_padding_mask: Optional[Tensor],
                         attn_mask: Optional[Tensor], static_kv: bool, bsz: int, tgt_len: int, fresh_values: bool
                         ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Positions]]:
        """All keys and values so far (the cache's and this step's), their padding mask and the positions; the
        cache is updated. ``fresh_values``: values were projected in this call (not a cached static copy)."""
        prev_v: Optional[Tensor] = None
        steps: Optional[Tensor] = None  # (B,) decoding steps already taken: the position of the first query
        if buffer is not None:
            prev_k = buffer.get("prev_key")
            prev_v = buffer.get("prev_value")
            if prev_k is not None:
                if static_kv:
                    k, v, prev_v = prev_k, prev_v, None
                else:
                    assert k is not None
                    k = torch.cat([prev_k, k], dim=2)
            assert k is not None
            key_padding_mask = cached_padding_mask(
                buffer.get("prev_key_padding_mask"), key_padding_mask, bsz, k.size(2), static_kv
            )
            steps = buffer.get("query_offset")
        assert k is not None and v is not None
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        pos: Optional[Positions] = None
        if self.needs_positions:
            pos = positions(key_padding_mask, tgt_len, k.size(2), steps, self.encoder_decoder_attention, q.device)
        if fresh_values:
            v = self.finalize_values(v, k, pos, key_padding_mask, attn_mask)
        if prev_v is not None:
            v = torch.cat([prev_v, v], dim=2)
        if buffer is not None and incremental_state is not None:
            self._set_input_buffer(incremental_state, stored(buffer, k, v, key_padding_mask, static_kv, steps, tgt_len,
                                                             bsz, self.needs_positions))
        return k, v, key_padding_mask, pos

    # ------------------------------------------------------------------ hooks a variant overrides
    def normalize_inputs(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                         ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Hook before the projections (a module-owned input norm); keys and values are None when cached."""
        return query, key, value

    def project(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]
                ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """(Q, K, V), each (B, H, T|S, d); K and V are None when cached. One step, so that a variant can share
        work between the sides (E-ATT binarizes self-attention's one input once)."""
        return (self.project_query(query), self.project_key(key) if key is not None else None,
                self.project_value(value) if value is not None else None)

    def project_query(self, query: Tensor) -> Tensor:
        raise NotImplementedError

    def project_key(self, key: Tensor) -> Tensor:
        raise NotImplementedError

    def project_value(self, value: Tensor) -> Tensor:
        if self.v_proj is not None:
            value = self.v_proj(value)
        return self._split_heads(value)

    def compute_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions] = None) -> Tensor:
        raise NotImplementedError

    def finalize_values(self, v: Tensor, k: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
                        attn_mask: Optional[Tensor]) -> Tensor:
        """Hook on newly projected values, given all keys so far (Super attention mixes values here)."""
        return v

    def masked_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
                      attn_mask: Optional[Tensor]) -> Tensor:
        """Scores (B, H, T, S) with the additive future mask and key padding applied."""
        scores = self.compute_scores(q, k, pos)
        if attn_mask is not None:
            scores = scores + attn_mask.to(scores.dtype)
        if key_padding_mask is not None:
            bsz, src_len = key_padding_mask.shape
            scores = scores.masked_fill(key_padding_mask.view(bsz, 1, 1, src_len).to(torch.bool), float("-inf"))
        return scores

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """(output (B, H, T, dv), attention probabilities (B, H, T, S) or None). Variants whose memory must stay
        linear in the length (local, linformer, performer) override this instead of building (T, S) scores.
        ``cache``, while decoding cross-attention: the incremental cache, where a variant may keep what it derives
        from the (unchanging) keys and values, e.g. their projection along the length (entries batch first: they
        are reordered with the beams); None otherwise."""
        return self.dense_attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights)

    def dense_attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions],
                     key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor],
                     need_weights: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """The default :meth:`attend`: (T, S) scores, masks, softmax and the weighted sum (a method of its own so
        that overriding variants can fall back to it: TorchScript has no super())."""
        scores = self.masked_scores(q, k, pos, key_padding_mask, attn_mask)
        return self.weigh_values(scores, v, attn_mask is not None or key_padding_mask is not None, pos)

    def weigh_values(self, scores: Tensor, v: Tensor, masked: bool,
                     pos: Optional[Positions] = None) -> Tuple[Tensor, Tensor]:
        """(weighted sum of ``v``, probabilities): softmax of ``scores`` over its last axis, :meth:`reweight`,
        dropout, then ``probs @ v``. Any leading shape: (B, H, T, S) with v (B, H, S, d), or windows of keys."""
        probs = self.reweight(masked_softmax(scores, masked), pos)
        attn = F.dropout(probs, p=self.dropout_p, training=self.training or self.dropout_at_inference)
        return torch.matmul(attn.to(v.dtype), v), probs

    def reweight(self, probs: Tensor, pos: Optional[Positions]) -> Tensor:
        """Hook on the attention probabilities before dropout (adaptive span's soft mask)."""
        return probs

    @classmethod
    def computes_like(cls, owner: type) -> bool:
        """Whether ``cls`` attends as ``owner``'s dense path: ``owner``'s scores and the shared masks and probability
        hook, none overridden. A fused kernel written for ``owner`` (SDPA, E-ATT's Triton kernel) is then exact."""
        return (cls.compute_scores is owner.compute_scores and cls.masked_scores is AttentionBase.masked_scores
                and cls.reweight is AttentionBase.reweight)

    def reset_parameters(self):
        linears = [self.out_proj]
        if self.value_projection:
            nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
            linears.append(self.v_proj)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in linears:
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0.0)

    # ------------------------------------------------------------------ the cache and beam search
    def get_cache(self, incremental_state: Optional[IncrementalState]) -> Cache:
        """This module's entry of fairseq's incremental state (empty before the first step)."""
        return self._get_input_buffer(incremental_state)

    def set_cache(self, incremental_state: IncrementalState, cache: Cache):
        self._set_input_buffer(incremental_state, cache)

    def _get_input_buffer(self, incremental_state: Optional[IncrementalState]) -> Cache:
        full_key = self._state_key + ".attn_state"
        if incremental_state is not None and full_key in incremental_state:
            return incremental_state[full_key]
        empty: Cache = {}
        return empty

    def _set_input_buffer(self, incremental_state: IncrementalState, buffer: Cache):
        incremental_state[self._state_key + ".attn_state"] = buffer
        return incremental_state

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        """Reorder every cached tensor along the batch (beam) dimension. Cross-attention caches kept per source
        sentence (see cache.py) follow only the sentences: beam search reorders hypotheses within a
        sentence, and drops whole sentences when they finish."""
        buffer = self._get_input_buffer(incremental_state)
        if len(buffer) > 0:
            per_sentence = flag(buffer, "per_sentence")
            if per_sentence:
                prev_key = buffer["prev_key"]
                cached = prev_key.size(0) if prev_key is not None else -1
                new_order, per_sentence, unchanged = sentence_order(new_order, self.beam_size, cached)
                if unchanged:
                    return incremental_state  # the same sentences: nothing to move
            reordered, moved = reorder_cache(buffer, new_order, per_sentence)
            if not torch.jit.is_scripting():
                self._report_reorder(moved)
            incremental_state = self._set_input_buffer(incremental_state, reordered)
        return incremental_state

    def set_beam_size(self, beam_size: int):
        """Called by fairseq's SequenceGenerator before beam search: cross-attention then keeps one copy of the
        source's keys and values per sentence instead of one per hypothesis."""
        self.beam_size = int(beam_size)

    @property
    def beamable(self) -> bool:
        """Cross-attention whose queries are independent of each other and of their position, so that the
        hypotheses of a sentence can share its keys: their queries are stacked as extra query rows."""
        return self.encoder_decoder_attention and not self.needs_positions

    # the name fairseq's own attention answers to in --retain-dropout-modules, besides the variant's class name
    FAIRSEQ_NAME = "MultiheadAttention"

    def make_generation_fast_(self, name: str = "", retain_dropout: bool = False,
                              retain_dropout_modules: Optional[List[str]] = None, **kwargs):
        """fairseq's inference preparation (``--retain-dropout [--retain-dropout-modules ...]``): keep attention
        dropout when every module keeps it, or when this class's name or fairseq's ``MultiheadAttention`` is
        listed."""
        names = (type(self).__name__, self.FAIRSEQ_NAME)
        self.dropout_at_inference = bool(retain_dropout) and (
            retain_dropout_modules is None or any(n in retain_dropout_modules for n in names))

    # ------------------------------------------------------------------ auxiliary loss, reports, helpers
    @classmethod
    def has_auxiliary_loss(cls, args) -> bool:
        """True if, with these flags, the module adds a term to the training loss (``auxiliary_loss()``)."""
        return False

    def auxiliary_loss(self) -> Tensor:
        """Per-token term of the training loss (variants declaring ``auxiliary_loss`` capabilities)."""
        raise NotImplementedError(f"{self.variant_name} declares no auxiliary loss")

    def auxiliary_metrics(self) -> Dict[str, Tensor]:
        """Values the auxiliary-loss criterion logs as their mean over modules (e.g. adaptive span's spans)."""
        return {}

    @torch.jit.unused
    def _report_call(self, rows: int, queries: int, keys: Optional[int], new_keys: Optional[int]):
        report_call(self, rows, queries, keys, new_keys)

    @torch.jit.unused
    def _report_reorder(self, elements: int):
        report_reorder(self, elements)

    def _split_heads(self, x: Tensor) -> Tensor:
        """(T, B, H*d) -> (B, H, T, d)."""
        length, bsz, channels = x.shape
        return x.view(length, bsz, self.num_heads, channels // self.num_heads).permute(1, 2, 0, 3)

    def extra_repr(self) -> str:
        return f"variant={self.variant_name}, embed_dim={self.embed_dim}, num_heads={self.num_heads}"

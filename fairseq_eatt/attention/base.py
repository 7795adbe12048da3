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
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .observers import report_call, report_reorder
from .options import Option, add_options, option_values
from .registry import Capabilities

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]
Cache = Dict[str, Optional[Tensor]]  # one module's entry of the incremental state (flags as 0-dim tensors)


class Positions(NamedTuple):
    """Where each query and key sits in its sentence, counting real tokens only (left padding shifts nothing).

    Given to :meth:`AttentionBase.compute_scores` of variants with ``needs_positions = True``.
    """

    query: Tensor  # (B or 1, T) long
    key: Tensor  # (B or 1, S) long
    query_len_bound: int  # every query position is below this
    key_len_bound: int  # every key position is below this


class AttentionBase(nn.Module):
    capabilities = Capabilities()
    variant_name = "base"  # set by @register_attention
    needs_positions = False  # True: compute_scores receives token positions (position-based variants)
    value_projection = True  # False: V is the input itself, split into heads (cost-effective attention)
    # {own parameter: a trained dot-product attention's parameter it may start from} (fairseq-eatt-convert); the
    # parameters both have under one name (v_proj, out_proj) are copied without being named here
    converted_from: Dict[str, str] = {}

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
        self_attention: bool = False,
        encoder_decoder_attention: bool = False,
    ):
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
        self.beam_size = 1  # set by fairseq's SequenceGenerator (set_beam_size); see _fold_beams
        # None without W_V: TorchScript then compiles only project_value's branch without it
        self.v_proj: Optional[nn.Linear] = nn.Linear(self.vdim, embed_dim, bias=bias) if self.value_projection \
            else None
        if not self.value_projection and self.vdim != embed_dim:
            raise ValueError(f"{type(self).__name__} uses its input as values: it needs the value input to have the "
                             f"model's dimension ({embed_dim}), got {self.vdim}")
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    # ------------------------------------------------------------------ options, declared once
    options: Tuple[Option, ...] = ()  # every option of the variant (see options.py); flags derive from them

    @classmethod
    def add_args(cls, parser, seen: Optional[set] = None):
        """Add the flags of this variant's options (each flag once across variants: ``seen``)."""
        add_options(parser, cls.options, set() if seen is None else seen)

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        """Constructor keyword arguments of this variant taken from parsed flags, for one position."""
        return {o.key: o.from_args(args) for o in cls.options if o.constructor}

    @classmethod
    def option_values(cls, given: Dict[str, object]) -> Dict[str, object]:
        """Every constructor option: ``given`` where present, else its declared default (for op_counts)."""
        return option_values(cls.options, given)

    @classmethod
    def prepare_args(cls, args):
        """Fill parsed flags that this variant derives from others (e.g. E-ATT's recipe) before a model is built."""

    # options added to a variant after checkpoints were saved: {option: the value that computes what those
    # checkpoints computed}; checkpoint metadata without the option is accepted when the model has that value
    added_options: Dict[str, object] = {}

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

    # ------------------------------------------------------------------ hooks for variants
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

    def reset_parameters(self):
        linears = [self.out_proj]
        if self.value_projection:
            nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
            linears.append(self.v_proj)
        nn.init.xavier_uniform_(self.out_proj.weight)
        for lin in linears:
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0.0)

    # ------------------------------------------------------------------ helpers
    def _split_heads(self, x: Tensor) -> Tensor:
        """(T, B, H*d) -> (B, H, T, d)."""
        length, bsz, channels = x.shape
        return x.view(length, bsz, self.num_heads, channels // self.num_heads).permute(1, 2, 0, 3)

    def extra_repr(self) -> str:
        return f"variant={self.variant_name}, embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    # ------------------------------------------------------------------ incremental state
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
        sentence (see :meth:`_fold_beams`) follow only the sentences: beam search reorders hypotheses within a
        sentence, and drops whole sentences when they finish."""
        buffer = self._get_input_buffer(incremental_state)
        if len(buffer) > 0:
            per_sentence = self._flag(buffer, "per_sentence")
            if per_sentence:
                beam = self.beam_size
                sentence_of = torch.div(new_order, beam, rounding_mode="floor")  # hypothesis h: sentence h // beam
                keep_per_sentence = new_order.numel() % beam == 0
                if keep_per_sentence:
                    groups = sentence_of.view(-1, beam)
                    keep_per_sentence = bool((groups == groups[:, :1]).all())
                if keep_per_sentence:
                    new_order = sentence_of.view(-1, beam)[:, 0]  # whole sentences stay, finished ones leave
                    prev_key = buffer["prev_key"]
                    if prev_key is not None and new_order.numel() == prev_key.size(0) and bool(
                            (new_order == torch.arange(new_order.numel(), device=new_order.device)).all()):
                        return incremental_state  # the same sentences: nothing to move
                else:  # any other order: back to one copy per hypothesis
                    new_order, per_sentence = sentence_of, False
            reordered: Cache = {}
            moved = 0
            for name, value in buffer.items():
                if value is not None and value.dim() > 0:
                    value = value.index_select(0, new_order)
                    if value.is_floating_point():
                        moved += value.numel()
                reordered[name] = value
            if not torch.jit.is_scripting():
                self._report_reorder(moved)
            if "per_sentence" in reordered:
                reordered["per_sentence"] = torch.tensor(per_sentence)
            incremental_state = self._set_input_buffer(incremental_state, reordered)
        return incremental_state

    @staticmethod
    def _cached(cache: Optional[Cache], name: str) -> Optional[Tensor]:
        """An entry of ``attend``'s cache, or None (no cache, or not there yet)."""
        return cache.get(name) if cache is not None else None

    @staticmethod
    def _flag(buffer: Cache, name: str) -> bool:
        """A boolean kept in the cache (as a 0-dim tensor: the cache holds tensors only)."""
        value = buffer.get(name)
        return value is not None and bool(value.item())

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

    def set_beam_size(self, beam_size: int):
        """Called by fairseq's SequenceGenerator before beam search: cross-attention then keeps one copy of the
        source's keys and values per sentence instead of one per hypothesis."""
        self.beam_size = int(beam_size)

    @property
    def beamable(self) -> bool:
        """Cross-attention whose queries are independent of each other and of their position, so that the
        hypotheses of a sentence can share its keys: their queries are stacked as extra query rows."""
        return self.encoder_decoder_attention and not self.needs_positions

    @staticmethod
    def _same_in_groups(x: Tensor, dim: int, beam: int) -> bool:
        """True if every group of ``beam`` consecutive entries along ``dim`` is one entry repeated."""
        grouped = x.unflatten(dim, (-1, beam))
        return bool((grouped == grouped.narrow(dim + 1, 0, 1)).all())

    def _same_within_groups(self, key: Tensor, value: Optional[Tensor], key_padding_mask: Optional[Tensor]) -> bool:
        """True if every group of beam_size consecutive hypotheses has one source (keys, values, padding), so
        that sharing it is exact whatever the caller (a cheap check next to the projections it saves)."""
        beam = self.beam_size
        if not self._same_in_groups(key, 1, beam):
            return False
        if value is not None and not (value is key) and not self._same_in_groups(value, 1, beam):
            return False
        return key_padding_mask is None or key_padding_mask.dim() != 2 or \
            self._same_in_groups(key_padding_mask, 0, beam)

    @staticmethod
    def _fold_beams(x: Tensor, sentences: int) -> Tensor:
        """(sentences * beam, H, T, d) -> (sentences, H, beam * T, d): a sentence's hypotheses as extra queries."""
        _, heads, length, dim = x.shape
        return x.view(sentences, -1, heads, length, dim).transpose(1, 2).reshape(sentences, heads, -1, dim)

    @staticmethod
    def _unfold_beams(x: Tensor, hypotheses: int, length: int) -> Tensor:
        """Inverse of :meth:`_fold_beams`: (sentences, H, beam * T, d) -> (hypotheses, H, T, d)."""
        sentences, heads, _, dim = x.shape
        return x.view(sentences, heads, -1, length, dim).transpose(1, 2).reshape(hypotheses, heads, length, dim)

    # ------------------------------------------------------------------ forward
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
        key, value, key_padding_mask = self._source_once_per_sentence(buffer, key, value, key_padding_mask,
                                                                      static_kv, bsz)
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
            q = self._fold_beams(q, sentences)
        if not torch.jit.is_scripting():
            new_keys: Optional[int] = None
            if incremental_state is not None:
                new_keys = (k.size(2) if fresh_values else 0) if static_kv else tgt_len
            self._report_call(sentences, q.size(2), k.size(2), new_keys)
        if before_softmax:
            scores = self.masked_scores(q, k, pos, key_padding_mask, attn_mask)
            return (self._unfold_beams(scores, bsz, tgt_len) if sentences != bsz else scores), v
        # while decoding, cross-attention's cache is open to attend (see attend)
        cache: Optional[Cache] = None
        if buffer is not None and static_kv and incremental_state is not None:
            cache = self._get_input_buffer(incremental_state)
        out, probs = self.attend(q, k, v, pos, key_padding_mask, attn_mask, need_weights or need_head_weights, cache)
        if sentences != bsz:
            out = self._unfold_beams(out, bsz, tgt_len)
            if probs is not None:
                probs = self._unfold_beams(probs, bsz, tgt_len)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, out.size(1) * out.size(3)))
        return out, self._returned_weights(probs, need_weights or need_head_weights, need_head_weights)

    @torch.jit.unused
    def _report_call(self, rows: int, queries: int, keys: Optional[int], new_keys: Optional[int]):
        report_call(self, rows, queries, keys, new_keys)

    @torch.jit.unused
    def _report_reorder(self, elements: int):
        report_reorder(self, elements)

    def get_cache(self, incremental_state: Optional[IncrementalState]) -> Cache:
        """This module's entry of fairseq's incremental state (empty before the first step)."""
        return self._get_input_buffer(incremental_state)

    def set_cache(self, incremental_state: IncrementalState, cache: Cache):
        self._set_input_buffer(incremental_state, cache)

    def decode_step(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                    key_padding_mask: Optional[Tensor], incremental_state: IncrementalState
                    ) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """Hook for decoder self-attention steps that keep another state than keys and values (Performer's
        running sums): (output, weights), or None for the standard cached path."""
        return None

    def _source_once_per_sentence(self, buffer: Optional[Cache], key: Optional[Tensor], value: Optional[Tensor],
                                  key_padding_mask: Optional[Tensor], static_kv: bool, bsz: int
                                  ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """Beam search: the hypotheses of a sentence share its source, so cross-attention projects and keeps it
        once per sentence. Keys and values are None when an earlier step cached them."""
        per_sentence = False
        if buffer is not None and static_kv and buffer.get("prev_key") is not None:
            key = None  # cross-attention keys/values were computed at the first step
            value = None
            per_sentence = self._flag(buffer, "per_sentence")
        elif buffer is not None and static_kv and self.beam_size > 1 and self.beamable and \
                bsz % self.beam_size == 0 and key is not None and key.size(1) == bsz and \
                (value is None or value.size(1) == bsz):
            per_sentence = self._same_within_groups(key, value, key_padding_mask)
            if per_sentence:
                key = key[:, ::self.beam_size]
                if value is not None:
                    value = value[:, ::self.beam_size]
        if per_sentence and key_padding_mask is not None and key_padding_mask.dim() == 2 and \
                key_padding_mask.size(0) == bsz:
            key_padding_mask = key_padding_mask[::self.beam_size]
        return key, value, key_padding_mask

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
            key_padding_mask = self._cached_padding_mask(
                buffer.get("prev_key_padding_mask"), key_padding_mask, bsz, k.size(2), static_kv
            )
            steps = buffer.get("query_offset")
        assert k is not None and v is not None
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        pos: Optional[Positions] = None
        if self.needs_positions:
            pos = self._positions(key_padding_mask, tgt_len, k.size(2), steps, q.device)
        if fresh_values:
            v = self.finalize_values(v, k, pos, key_padding_mask, attn_mask)
        if prev_v is not None:
            v = torch.cat([prev_v, v], dim=2)
        if buffer is not None and incremental_state is not None:
            # a static (cross-attention) cache keeps what variants derived from its keys (e.g. performer sums)
            new_buffer: Cache = {}
            if static_kv:
                for name, value in buffer.items():
                    new_buffer[name] = value
            new_buffer["prev_key"] = k
            new_buffer["prev_value"] = v
            new_buffer["prev_key_padding_mask"] = key_padding_mask
            if static_kv:
                new_buffer["per_sentence"] = torch.tensor(k.size(0) != bsz)
            if self.needs_positions:
                # tensor arithmetic on the steps, which a traced (ONNX) decoding step keeps as a computation
                new_buffer["query_offset"] = steps + tgt_len if steps is not None else \
                    torch.full((bsz,), tgt_len, dtype=torch.long, device=q.device)
            self._set_input_buffer(incremental_state, new_buffer)
        return k, v, key_padding_mask, pos

    @staticmethod
    def _returned_weights(probs: Optional[Tensor], need_weights: bool, need_head_weights: bool) -> Optional[Tensor]:
        """fairseq's convention: (H, B, T, S) per head, or averaged over heads (B, T, S)."""
        if not need_weights or probs is None:
            return None
        weights = probs.transpose(0, 1)
        return weights if need_head_weights else weights.mean(dim=0)

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

    @classmethod
    def computes_like(cls, owner: type) -> bool:
        """Whether ``cls`` attends as ``owner``'s dense path: ``owner``'s scores and the shared masks and probability
        hook, none overridden. A fused kernel written for ``owner`` (SDPA, E-ATT's Triton kernel) is then exact."""
        return (cls.compute_scores is owner.compute_scores and cls.masked_scores is AttentionBase.masked_scores
                and cls.reweight is AttentionBase.reweight)

    def weigh_values(self, scores: Tensor, v: Tensor, masked: bool,
                     pos: Optional[Positions] = None) -> Tuple[Tensor, Tensor]:
        """(weighted sum of ``v``, probabilities): softmax of ``scores`` over its last axis, :meth:`reweight`,
        dropout, then ``probs @ v``. Any leading shape: (B, H, T, S) with v (B, H, S, d), or windows of keys."""
        probs = self.reweight(self._masked_softmax(scores, masked), pos)
        attn = F.dropout(probs, p=self.dropout_p, training=self.training or self.dropout_at_inference)
        return torch.matmul(attn.to(v.dtype), v), probs

    def reweight(self, probs: Tensor, pos: Optional[Positions]) -> Tensor:
        """Hook on the attention probabilities before dropout (adaptive span's soft mask)."""
        return probs

    def _positions(self, key_padding_mask: Optional[Tensor], tgt_len: int, src_len: int, steps: Optional[Tensor],
                   device: torch.device) -> Positions:
        if key_padding_mask is not None:
            key = ((~key_padding_mask.to(torch.bool)).long().cumsum(dim=1) - 1).clamp_(min=0)
        else:
            key = torch.arange(src_len, device=device).unsqueeze(0)
        if self.encoder_decoder_attention:  # queries are target positions, keys source positions
            query = torch.arange(tgt_len, device=device).unsqueeze(0)
            if steps is None:
                return Positions(query, key, tgt_len, src_len)
            return Positions(query + steps[:1].unsqueeze(1), key, int(steps[0]) + tgt_len, src_len)
        # self-attention: the queries are the last tgt_len keys (all of them outside incremental decoding)
        return Positions(key[:, src_len - tgt_len:], key, src_len, src_len)

    @staticmethod
    def _masked_softmax(scores: Tensor, masked: bool) -> Tensor:
        """Softmax in float32. A row whose keys are all masked (an empty sentence) gets zeros, not NaN;
        a NaN coming from the inputs is left to propagate so it is not hidden."""
        probs = torch.softmax(scores.float(), dim=-1)
        if masked:
            probs = probs.masked_fill(scores.amax(dim=-1, keepdim=True) == float("-inf"), 0.0)
        return probs

    @staticmethod
    def _cached_padding_mask(
        prev: Optional[Tensor], new: Optional[Tensor], bsz: int, src_len: int, static_kv: bool
    ) -> Optional[Tensor]:
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

"""The cost model of an attention module: the operations and bytes one call declares, beside the module's math.

Each variant file declares a small subclass of :class:`AttentionCost` and names it when registering the module
(``@register_attention("name", cost=NameCost)``); the module class then answers to ``Module.cost``. A cost class
gives what differs between variants: :meth:`AttentionCost.alignment` (the scores), :meth:`AttentionCost.values`
(values, their weighted sum), the weight shapes and the cache entries. The shared parts are added here once: the
value projection, the causal mask, the incremental step's savings, the weights returned to the caller and the
memory traffic. The ``complete`` convention is what the code executes; the tests compare it with what a call of
the module counts (``fairseq_eatt.energy.measure``). Conventions and traffic categories: :mod:`.counts`.
"""
from typing import Dict, Optional, Tuple

import torch

from .counts import OpCounts, Traffic, check_convention, check_precision, projection, weighted_sum

Parts = Dict[str, OpCounts]  # {"alignment": scores, "attention": scores + values + weighted sum}


class AttentionCost:
    # weights a step that reuses cached keys and values does not read (cross-attention after its first step)
    key_side_weights: Tuple[str, ...] = ("k_proj", "v_proj")
    # the output projection belongs to the block, as in the E-ATT paper's Appendix A
    block_weights: Tuple[str, ...] = ("out_proj",)
    # decoder self-attention steps keep another state than keys (see AttentionBase.decode_step), from the first on
    stateful_steps = False

    def __init__(self, module: type):
        self.module = module
        self._shapes: Dict[tuple, Dict[str, int]] = {}

    # ------------------------------------------------------------------ what a variant declares
    def alignment(self, lq: int, lk: int, d: int, heads: int, convention: str, nonzero_ratio=None,
                  **options) -> OpCounts:
        """Operations that produce the (lq x lk) scores of every head, query/key projections included."""
        raise NotImplementedError(f"{type(self).__name__} declares no alignment cost")

    def values(self, lq: int, lk: int, d: int, heads: int, convention: str, **options) -> OpCounts:
        """Operations on the value side: the value projection (if the module has one) and the weighted sum."""
        project = projection(lk, d, d) if self.module.value_projection else OpCounts()
        return project + weighted_sum(lq, lk, d, convention)

    def unmasked(self, lq: int, lk: int, d: int, heads: int, convention: str = "paper", nonzero_ratio=None,
                 **options) -> Parts:
        """:meth:`op_counts` without a future mask."""
        check_convention(convention)
        alignment = self.alignment(lq, lk, d, heads, convention, nonzero_ratio, **options)
        return {"alignment": alignment, "attention": alignment + self.values(lq, lk, d, heads, convention, **options)}

    def declared(self) -> bool:
        """Whether this cost model was written for its module (an alignment or a whole unmasked count)."""
        return type(self).alignment is not AttentionCost.alignment or type(self).unmasked is not AttentionCost.unmasked

    # ------------------------------------------------------------------ shared parts
    def op_counts(self, lq: int, lk: int, d: int, heads: int, convention: str = "paper",
                  nonzero_ratio: Optional[float] = None, causal: bool = False, new_keys: Optional[int] = None,
                  **options) -> Parts:
        """Operations for ``lq`` queries and ``lk`` keys at model dimension ``d``: ``{"alignment": scores,
        "attention": scores + values + weighted sum}`` (the output projection belongs to the block). ``options``:
        the module's constructor options; ``causal``: with the future mask; ``new_keys``: an incremental step in
        which only that many of the ``lk`` keys are new (the others come from the cache)."""
        if causal:
            counts = self.causal(lq, lk, d, heads, convention, nonzero_ratio, **options)
        else:
            counts = self.unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        if new_keys is not None and (new_keys < lk or (self.stateful_steps and options.get("self_attention"))):
            cached = self.cached_key(lq, lk - new_keys, lk, d, heads, convention, nonzero_ratio, **options)
            counts = {part: ops - cached[part] for part, ops in counts.items()}
        return counts

    def causal(self, lq: int, lk: int, d: int, heads: int, convention: str = "paper", nonzero_ratio=None,
               **options) -> Parts:
        """With the future mask: by default the dense form plus the additive mask on every head's (lq x lk)
        scores (the paper counts no mask)."""
        counts = self.unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        mask = OpCounts(add=lq * lk * heads) if convention == "complete" else OpCounts()
        return {part: ops + mask for part, ops in counts.items()}

    def cached_key(self, lq: int, cached: int, lk: int, d: int, heads: int, convention: str = "paper",
                   nonzero_ratio=None, **options) -> Parts:
        """What an incremental step does not redo for ``cached`` of its ``lk`` keys: by default their key and
        value projections."""
        keys = projection(cached, d, d)
        values = projection(cached, d, d) if self.module.value_projection else OpCounts()
        return {"alignment": keys, "attention": keys + values}

    def weights(self, lq: int, lk: int, d: int, heads: int, averaged: bool = True, **options) -> OpCounts:
        """Extra arithmetic when the caller asks for the attention weights (fairseq's decoder does for alignment):
        their average over heads unless per-head weights are asked for (the probabilities exist anyway)."""
        pairs = lq * lk
        return OpCounts(mul=pairs, add=(heads - 1) * pairs) if averaged else OpCounts()

    def per_call(self, lq: int, lk: int, d: int, heads: int, convention: str = "paper",
                 shared_positions: bool = True, **options) -> OpCounts:
        """The part of :meth:`op_counts` (one row) that a call of several rows computes once, e.g. a mask of
        distances when the rows share their positions (``shared_positions``: no padding). None by default."""
        return OpCounts()

    # ------------------------------------------------------------------ memory traffic
    def weight_shapes(self, d: int, heads: int, self_attention: bool = True, **options) -> Dict[str, int]:
        """Elements of every parameter and floating-point buffer of the module built with ``options``, by name
        (built on the meta device: nothing is allocated)."""
        key = (d, heads, self_attention, repr(sorted(options.items())))
        if key not in self._shapes:
            with torch.device("meta"):
                module = self.module(d, heads, self_attention=self_attention,
                                     encoder_decoder_attention=not self_attention, **options)
            tensors = list(module.named_parameters()) + [(n, b) for n, b in module.named_buffers()
                                                         if b.is_floating_point()]
            self._shapes[key] = {name: t.numel() for name, t in tensors}
        return dict(self._shapes[key])

    def length_indexed_reads(self, lq: int, lk: int, d: int, heads: int, new: int, **options) -> Dict[str, float]:
        """Weights indexed by position (sized by the maximum length): elements a call with ``lq`` queries, ``lk``
        keys and ``new`` new keys reads from each. None by default."""
        return {}

    def weight_reads(self, lq: int, lk: int, d: int, heads: int, new_keys: Optional[int] = None,
                     self_attention: bool = True, **options) -> Dict[str, float]:
        """Elements of each weight one call reads (once, for all the rows of its batch): every weight but the
        block's output projection, length-indexed tables within the lengths, and no key-side weight when no key
        is new (``new_keys == 0``)."""
        lengthwise = self.length_indexed_reads(lq, lk, d, heads, lk if new_keys is None else new_keys, **options)
        reads = {}
        for name, numel in self.weight_shapes(d, heads, self_attention, **options).items():
            owner = name.split(".")[0]
            if owner in self.block_weights or (new_keys == 0 and owner in self.key_side_weights):
                continue
            reads[name] = lengthwise.get(name, numel)
        return reads

    def cached_key_width(self, d: int, heads: int, **options) -> int:
        """Elements a cached key holds (all heads)."""
        return d

    def cache_entries(self, lk: int, d: int, heads: int, self_attention: bool = True, **options
                      ) -> Dict[str, Tuple[float, bool, bool]]:
        """The incremental state of one row after a step with ``lk`` keys: name -> (elements, read by the next
        step, grows with the keys (False: a fixed-size state rewritten by every step))."""
        return {"prev_key": (lk * self.cached_key_width(d, heads, **options), True, True),
                "prev_value": (lk * d, True, True)}

    def byte_counts(self, lq: int, lk: int, d: int, heads: int, precision: str = "fp32",
                    new_keys: Optional[int] = None, self_attention: bool = True, rows: int = 1,
                    **options) -> Traffic:
        """Bytes one call moves: ``rows`` sequences of ``lq`` queries and ``lk`` keys, of which ``new_keys`` are
        new (None: a full pass without a cache; 0: every key cached, as in cross-attention after its first
        step)."""
        size = check_precision(precision)
        new = lk if new_keys is None else new_keys
        weights = sum(self.weight_reads(lq, lk, d, heads, new_keys, self_attention, **options).values())
        # the query input, the key/value inputs of new keys unless they are the query input, the output
        inputs = lq * d + (0 if self_attention and new == lq else new * d)  # fairseq passes keys as values
        activations = rows * (inputs + lq * d)
        cache_read = cache_write = 0.0
        if new_keys is not None:
            after = self.cache_entries(lk, d, heads, self_attention, **options)
            before = self.cache_entries(lk - new, d, heads, self_attention, **options) if lk > new else {}
            for name, (elements, read, grows) in after.items():
                had = before.get(name, (0.0, read, grows))[0]
                cache_read += had if read else 0.0
                cache_write += (elements - had) if grows else (elements if new else 0.0)
        return Traffic(weights=weights * size, activations=activations * size,
                       cache_read=rows * cache_read * size, cache_write=rows * cache_write * size)

"""Decoding energy: fairseq's beam search run under the operation counter, with each attention call declared.

A deployed translator decodes incrementally: the encoder once, then one token per hypothesis per step with cached
keys and values, beams, and a reorder of every cache after each step. :func:`count_generation` runs fairseq's own
``SequenceGenerator`` on a model and records, call by call:

- the arithmetic each attention module executes (:class:`~fairseq_eatt.energy.measure.OpCounter`, the L1 scores
  through their reference path, as in every count) and what its declaration says for the same call
  (``op_counts`` with the call's lengths, new keys, rows and measured nonzero ratios): the tests check that the two
  agree for every variant;
- the memory traffic each attention call declares (``byte_counts``) and the caches beam search reorders;
- the rest of the model (embeddings, layer norms, feed-forward layers, output projection), executed and moved: the
  same for every variant, counted from the modules that run (each call reads its weights once).
Not counted: the search's own bookkeeping (top-k, scores, finished hypotheses) and log-softmax, an activation.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, AttentionBase
from ..attention.observers import observe
from ..quantization import QuantizedLinear
from .measure import OpCounter, is_binary_code
from ..attention.counts import OpCounts, Traffic, check_precision, projection


def attention_position(name: str) -> Optional[str]:
    """encoder_self / decoder_self / decoder_cross from a module's path in a fairseq transformer."""
    if name.startswith("encoder.") and name.endswith("self_attn"):
        return ENCODER_SELF
    if name.startswith("decoder.") and name.endswith("self_attn"):
        return DECODER_SELF
    if name.startswith("decoder.") and name.endswith("encoder_attn"):
        return DECODER_CROSS
    return None


@dataclass
class AttentionCall:
    """One call of an attention module while decoding, with what it executed and what its variant declares."""
    position: str
    rows: int  # sequences the call's keys belong to (sentences when the hypotheses share their source)
    lq: int  # queries per row
    lk: int
    new_keys: Optional[int]  # None: a full pass without a cache
    executed: OpCounts
    declared: OpCounts
    traffic: Traffic


@dataclass
class GenerationCount:
    sentences: int = 0
    target_tokens: int = 0
    calls: List[AttentionCall] = field(default_factory=list)
    other_executed: OpCounts = OpCounts()  # the model outside attention (shared by every variant)
    other_traffic: Traffic = Traffic()
    reorder: Traffic = Traffic()

    def attention(self, position: Optional[str] = None, part: str = "executed"):
        calls = [c for c in self.calls if position is None or c.position == position]
        total = Traffic() if part == "traffic" else OpCounts()
        for call in calls:
            total = total + getattr(call, part)
        return total

    def total_ops(self) -> OpCounts:
        return self.attention() + self.other_executed

    def total_traffic(self) -> Traffic:
        return self.attention(part="traffic") + self.other_traffic + self.reorder


def _ratio(module, position):
    """E-ATT's nonzero ratios of this call's binarized inputs (query, key side), else None."""
    if not module.capabilities.binarizes:
        return None, 0
    counts = module.binarization_counts
    d = module.embed_dim
    q = float(counts["query"].sum()) / (counts["query"].numel() * d)
    k = float(counts["key"].sum()) / (counts["key"].numel() * d) if "key" in counts else q
    empty = sum(int((c == 0).sum()) for c in counts.values()) * module.qk_dim  # bias of an all-zero selection
    return (q if position != DECODER_CROSS else (q, k)), empty


class _Recorder:
    """Forward hooks on every attention module (and on the other weighted modules) of a model."""

    def __init__(self, model, args, precision: str):
        self.model, self.args, self.precision = model, args, precision
        self.size = check_precision(precision)
        self.count = GenerationCount()
        self.handles = []
        self.attention_depth = 0
        self.state: Dict[int, dict] = {}
        self.counters: List[OpCounter] = []
        self.steps: Dict[tuple, int] = {}  # keys seen by fixed-state self-attention, per module and decoding
        attention = {name for name, m in model.named_modules() if isinstance(m, AttentionBase)}
        for name, module in model.named_modules():
            position = attention_position(name)
            if name in attention and position is not None:
                self._watch_attention(module, position)
            elif isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)) and \
                    not any(name.startswith(a + ".") for a in attention):
                self.handles.append(module.register_forward_hook(self._other_hook))

    def _watch_attention(self, module, position):
        cls = type(module)
        options = cls.kwargs_from_args(self.args, position)
        quantized = [m for m in module.modules() if isinstance(m, QuantizedLinear)]

        def quantized_call(linear, args, output):
            # a binary/ternary map: its declared product replaces the float one the variant's declaration charges
            x = args[0]
            rows = x.numel() // x.shape[-1]
            selection = x.shape[-1] > 1 and is_binary_code(x)  # E-ATT's code selects rows either way
            info = self.state.get(id(module))
            if info is not None:  # declared after the call's counter stops (the weights' codes are not model work)
                info.setdefault("quantized", []).append((linear, rows, selection))

        for linear in quantized:
            self.handles.append(linear.register_forward_hook(quantized_call))

        def pre(mod, args, kwargs):
            self.state[id(mod)] = {}
            if module.capabilities.binarizes:
                mod.track_binarization = True
            counter = OpCounter()
            self.counters.append(counter)
            counter.__enter__()
            self.state[id(mod)]["counter"] = counter
            self.attention_depth += 1

        def post(mod, args, kwargs, output):
            info = self.state.pop(id(mod))
            info["counter"].__exit__(None, None, None)
            query = args[0] if args else kwargs["query"]
            tgt_len, hypotheses, d = query.shape
            state = kwargs.get("incremental_state")
            heads = mod.num_heads
            ratio, empty = _ratio(mod, position)
            if module.capabilities.binarizes:
                mod.track_binarization = False
            shape = info["shape"]  # reported by the module itself (observers.observe)
            rows, lq, lk, new = shape.rows, shape.queries, shape.keys, shape.new_keys
            if lk is None:  # a fixed-size state (Performer's running sums): keys so far = steps taken
                key = ("steps", id(mod), id(state))
                lk = self.steps.get(key, 0) + tgt_len
                self.steps[key] = lk
            declared = cls.cost.op_counts(lq, lk, d, heads, "complete", ratio, new_keys=new,
                                     self_attention=position != DECODER_CROSS, **options)["attention"]
            declared = declared.scaled(rows) + projection(tgt_len * hypotheses, d, d) + OpCounts(add=empty)
            stored = 0.0  # bytes the quantized maps called do not read: their codes replace float weights
            for linear, linear_rows, selection in info.get("quantized", []):
                declared = declared + linear.op_counts(linear_rows, selection) \
                    - linear.float_op_counts(linear_rows, selection)
                stored += linear.weight.numel() * self.size - linear.stored_bytes(self.size)
            per_head = bool(kwargs.get("need_head_weights", False))
            if kwargs.get("need_weights", True) or per_head:
                declared = declared + cls.cost.weights(lq, lk, d, heads, not per_head, **options).scaled(rows)
            padding = kwargs.get("key_padding_mask")
            shared = padding is None or not bool(padding.any())  # rows share their positions
            declared = declared - cls.cost.per_call(lq, lk, d, heads, "complete", shared,
                                                         **options).scaled(rows - 1)
            traffic = cls.cost.byte_counts(lq, lk, d, heads, self.precision, new_keys=new,
                                      self_attention=position != DECODER_CROSS, rows=rows, **options)
            # the output projection, a block weight: read once per call
            traffic = traffic + Traffic(weights=sum(p.numel() for p in mod.out_proj.parameters())).scaled(self.size) \
                + Traffic(weights=-stored)
            self.count.calls.append(AttentionCall(position, rows, lq, lk, new, info["counter"].counts, declared,
                                                  traffic))
            self.attention_depth -= 1  # only now: the declarations above build modules on the meta device

        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self.handles.append(module.register_forward_hook(post, with_kwargs=True))
        self.handles.append(observe(module, self))

    # the observer interface (fairseq_eatt.attention.observers)
    def call(self, module, shape):
        info = self.state.get(id(module))
        if info is not None:
            info["shape"] = shape

    def reorder(self, module, elements: int):
        self.count.reorder = self.count.reorder + Traffic(reorder=2 * elements * self.size)  # read and written

    def _other_hook(self, mod, args, output):
        if self.attention_depth:
            return
        x = args[0]
        if isinstance(mod, nn.Embedding):  # reads the rows of the tokens looked up
            weights = output.numel() * self.size
        elif isinstance(mod, QuantizedLinear):  # its codes and scales, and the bias
            weights = mod.stored_bytes(self.size) + (mod.bias.numel() * self.size if mod.bias is not None else 0)
        else:
            weights = sum(p.numel() for p in mod.parameters(recurse=False)) * self.size
        activations = (0 if isinstance(mod, nn.Embedding) else x.numel()) + output.numel()
        self.count.other_traffic = self.count.other_traffic + Traffic(weights=weights,
                                                                      activations=activations * self.size)

    def close(self):
        for handle in self.handles:
            handle.remove()


class _ModelCounter(OpCounter):
    """The operation counter, charging only inside the model's encoder and decoder (not the search)."""

    def __init__(self, recorder):
        super().__init__()
        self.depth = 0
        self.entered = 0
        self.recorder = recorder  # attention calls are counted by their own counters, not here

    # the observer interface (fairseq_eatt.attention.observers.region)
    def enter(self, module):
        self.depth += 1
        self.entered += 1

    def exit(self, module):
        self.depth -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.depth or self.recorder.attention_depth:
            return func(*args, **(kwargs or {}))
        return super().__torch_dispatch__(func, types, args, kwargs)


def count_generation(model, task, samples, beam: int = 4, precision: str = "fp32", max_len_b: int = 200,
                     match_source_len: bool = False) -> GenerationCount:
    """Decode ``samples`` (fairseq batches) with fairseq's SequenceGenerator under the counters."""
    from fairseq.sequence_generator import SequenceGenerator

    from ..attention.backends import counting
    from .measure import UncountedOperation

    model.eval()
    args = getattr(model, "args", None) or getattr(model, "cfg", None)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=max_len_b,
                                  match_source_len=match_source_len)
    recorder = _Recorder(model, args, precision)
    counter = _ModelCounter(recorder)

    # the encoder and the decoder report each forward (observers.region): only those are the model's work
    hooks = [observe(model.encoder, counter), observe(model.decoder, counter)]
    try:
        with torch.no_grad(), counting(), counter:
            for sample in samples:
                hypos = generator.generate([model], sample)
                recorder.count.sentences += len(hypos)
                recorder.count.target_tokens += sum(int(h[0]["tokens"].numel()) for h in hypos)
    finally:
        for h in hooks:
            h.remove()
        recorder.close()
        for info in recorder.state.values():  # a call that raised: leave its counter
            if isinstance(info, dict) and "counter" in info:
                info["counter"].__exit__(None, None, None)
    if not counter.entered:
        raise ValueError("count_generation needs a model whose encoder and decoder report their forwards "
                         "(fairseq_eatt's transformer_eatt architectures do); this one reports none")
    unknown = set(counter.unknown)
    for call_counter in recorder.counters:
        unknown |= call_counter.unknown
    if unknown:
        raise UncountedOperation("decoding met floating-point operations the op counter does not know: "
                                 + ", ".join(sorted(unknown)))
    count = recorder.count
    count.other_executed = counter.counts
    return count


def energy_of(count: GenerationCount, table, memory: Optional[str]) -> float:
    """pJ of a counted generation: arithmetic only (``memory`` None), or with its traffic under ``memory``."""
    pj = table.energy(count.total_ops())
    if memory is not None:
        pj += table.memory_energy(count.total_traffic(), memory)
    return pj

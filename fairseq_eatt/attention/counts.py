"""What an attention call computes and moves: operation counts under two conventions, and memory traffic.

A leaf module: the attention variants declare their costs with it (see :mod:`.cost`) and the energy reports
sum them.

Operations. Operation counts and the two counting conventions.

Nothing for activations (softmax, relu) is counted, following the E-ATT paper's Appendix A: modern AI chips
implement them specially and they cost far less than an addition.

- ``paper``: the paper's convention. A d_in x d_out projection of l tokens costs l*d_in*d_out multiplications and
  as many additions; a dot product of length d costs d of each; E-ATT's selection (Eq. 8) is charged l*d additions
  per projection and its L1 distance (Eq. 10) one addition per term. This reproduces the paper's Tables 2 and 7.
- ``complete``: every addition the computation performs. E-ATT's selection adds every selected row of W
  (nonzero ratio x d_in x d_out per token, using the measured ratio, or 0.5 when none is given) and each L1 term
  costs a subtraction and an accumulation (2 additions).

Memory traffic: the bytes an attention call reads and writes, and what they cost under a memory
assumption.

The E-ATT paper counts arithmetic only. On real chips moving data often costs more: on Horowitz's 45 nm figures
(ISSCC 2014) a 32-bit DRAM read costs about 640 pJ and a 32-bit read of an 8 KB SRAM about 5 pJ, against 3.7 pJ
for an fp32 multiplication. Each variant declares its traffic per call (``Module.cost.byte_counts``), by
category:

- ``weights``: the parameters (and fixed buffers) the call reads. A call reads each weight matrix it uses once
  (for all the rows of its batch); length-indexed tables (Linformer's E/F, Super's W_A, the synthesizers' logits)
  are charged for the entries inside the current lengths.
- ``activations``: the module's inputs read (query, and new keys/values when they are another tensor) and its
  output written.
- ``cache_read`` / ``cache_write``: incremental decoding's state: the cached keys and values a step reads, and
  what the step appends (or, for a fixed-size state such as Performer's running sums, rewrites).
- ``reorder``: beam search's reordering of the caches after a step (read and written once each).

Not charged: the intermediate scores and probabilities (a fused kernel keeps them on chip, as flash attention
does; every dense variant has the same lq x lk of them), and integer masks.

Two memory assumptions (``MEMORY``) place the categories:
- ``dram``: weights read from DRAM once per batch, caches (decoding state) in DRAM, activations in on-chip SRAM;
- ``sram``: everything resident on chip (weights, caches, activations in SRAM).
Energy = operations x pJ/op + bytes x pJ/byte of the level the category lives in.
"""
from dataclasses import dataclass, fields
from typing import Dict

CONVENTIONS = ("paper", "complete")


@dataclass(frozen=True)
class OpCounts:
    mul: float = 0.0
    add: float = 0.0
    cmp: float = 0.0  # comparisons / selections (E-ATT's binarization), charged like additions by default

    def __add__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(self.mul + other.mul, self.add + other.add, self.cmp + other.cmp)

    def __sub__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(self.mul - other.mul, self.add - other.add, self.cmp - other.cmp)

    def scaled(self, factor: float) -> "OpCounts":
        return OpCounts(self.mul * factor, self.add * factor, self.cmp * factor)


def projection(tokens: int, d_in: int, d_out: int) -> OpCounts:
    """A dense linear map of ``tokens`` vectors (the bias addition completes the d_in additions per output)."""
    n = tokens * d_in * d_out
    return OpCounts(mul=n, add=n)


def layer_norm_ops(tokens: int, d: int, affine: bool) -> OpCounts:
    """A layer norm of ``tokens`` vectors of size d, as it is computed: mean (d - 1 additions, one division),
    centring (d subtractions), variance (d squares, d - 1 additions, one division, + eps), normalization (d
    multiplications by the reciprocal deviation) and, if ``affine``, gain and bias (d multiplications, d additions).
    The reciprocal square root is not counted, like other activations."""
    add = (d - 1) + d + (d - 1) + 1 + (d if affine else 0)
    mul = 1 + d + 1 + d + (d if affine else 0)
    return OpCounts(mul=tokens * mul, add=tokens * add)


def check_convention(convention: str):
    if convention not in CONVENTIONS:
        raise ValueError(f"--convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")


def dot_scores(lq: int, lk: int, d: int, heads: int, convention: str) -> OpCounts:
    """q k^T for every head: an n-term dot product has n multiplications and n - 1 additions (paper: n and n)."""
    return OpCounts(mul=lq * lk * d, add=lq * lk * (d if convention == "paper" else d - heads))


def scaled_dot_scores(lq: int, lk: int, d: int, heads: int, convention: str) -> OpCounts:
    """q k^T / sqrt(d_k): dot products, and the query scaling (counted only in the complete convention)."""
    return dot_scores(lq, lk, d, heads, convention) + only_complete(convention, OpCounts(mul=lq * d))


def weighted_sum(lq: int, lk: int, d: int, convention: str) -> OpCounts:
    """probabilities times values: lk terms per output (paper: lk multiplications and lk additions)."""
    return OpCounts(mul=lq * lk * d, add=lq * lk * d if convention == "paper" else lq * (lk - 1) * d)


def only_complete(convention: str, ops: OpCounts) -> OpCounts:
    """Terms the paper's convention leaves out (score scaling, normalizations, bookkeeping arithmetic)."""
    return ops if convention == "complete" else OpCounts()

# bytes per stored value; E-ATT's binarized inputs are produced and consumed inside the call (not traffic)
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

# which level each category lives in, per assumption
MEMORY: Dict[str, Dict[str, str]] = {
    "dram": {"weights": "dram", "activations": "sram", "cache_read": "dram", "cache_write": "dram",
             "reorder": "dram"},
    "sram": {"weights": "sram", "activations": "sram", "cache_read": "sram", "cache_write": "sram",
             "reorder": "sram"},
}
MEMORY_HELP = {
    "dram": "weights read from DRAM once per batch, decoding caches in DRAM, activations in SRAM",
    "sram": "weights, caches and activations resident on chip (SRAM)",
}


@dataclass(frozen=True)
class Traffic:
    """Bytes moved by one call (or a sum of calls), by category (see the module docstring)."""
    weights: float = 0.0
    activations: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0
    reorder: float = 0.0

    def __add__(self, other: "Traffic") -> "Traffic":
        return Traffic(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, factor: float) -> "Traffic":
        return Traffic(*(getattr(self, f.name) * factor for f in fields(self)))

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def by_level(self, memory: str) -> Dict[str, float]:
        """Bytes at each level (``dram``, ``sram``) under the assumption ``memory``."""
        check_memory(memory)
        levels = {"dram": 0.0, "sram": 0.0}
        for f in fields(self):
            levels[MEMORY[memory][f.name]] += getattr(self, f.name)
        return levels

    def as_dict(self) -> Dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_memory(memory: str):
    if memory not in MEMORY:
        raise ValueError(f"--memory must be one of {', '.join(MEMORY)}, got {memory!r}")


def check_precision(precision: str) -> int:
    if precision not in PRECISION_BYTES:
        raise ValueError(f"--precision must be one of {', '.join(PRECISION_BYTES)}, got {precision!r}")
    return PRECISION_BYTES[precision]


def intensity(operations: float, traffic: Traffic, memory: str) -> float:
    """Arithmetic intensity: operations per byte of off-chip (DRAM) traffic under ``memory``; with everything on
    chip, operations per byte moved at all."""
    levels = traffic.by_level(memory)
    moved = levels["dram"] if memory == "dram" else levels["sram"]
    return operations / moved if moved else float("inf")

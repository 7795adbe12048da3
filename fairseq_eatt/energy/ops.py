"""Operation counts and the two counting conventions.

Nothing for activations (softmax, relu) is counted, following the E-ATT paper's Appendix A: modern AI chips
implement them specially and they cost far less than an addition.

- ``paper``: the paper's convention. A d_in x d_out projection of l tokens costs l*d_in*d_out multiplications and
  as many additions; a dot product of length d costs d of each; E-ATT's selection (Eq. 8) is charged l*d additions
  per projection and its L1 distance (Eq. 10) one addition per term. This reproduces the paper's Tables 2 and 7.
- ``complete``: every addition the computation performs. E-ATT's selection adds every selected row of W
  (nonzero ratio x d_in x d_out per token, using the measured ratio, or 0.5 when none is given) and each L1 term
  costs a subtraction and an accumulation (2 additions).
"""
from dataclasses import dataclass

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


def weighted_sum(lq: int, lk: int, d: int, convention: str) -> OpCounts:
    """probabilities times values: lk terms per output (paper: lk multiplications and lk additions)."""
    return OpCounts(mul=lq * lk * d, add=lq * lk * d if convention == "paper" else lq * (lk - 1) * d)


def only_complete(convention: str, ops: OpCounts) -> OpCounts:
    """Terms the paper's convention leaves out (score scaling, normalizations, bookkeeping arithmetic)."""
    return ops if convention == "complete" else OpCounts()

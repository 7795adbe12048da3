"""Binary, ternary and 8-bit weights with quantization-aware training (the survey's low-bit weights).

A quantized linear map keeps its float weights for training and uses, in every forward pass, their quantized form
with one scale per output channel; gradients reach the float weights through the straight-through estimator
(the quantizer's gradient taken as the identity), as in BinaryConnect / XNOR-Net and TernaryBERT:

- 1 bit (binary): w_q = alpha_c * sign(w), alpha_c = mean |w| over output channel c (XNOR-Net's scale);
- 2 bits (ternary): w_q = alpha_c * t, t in {-1, 0, +1}: t = sign(w) where |w| > delta_c = 0.7 mean |w| (TWN's
  threshold), else 0; alpha_c = mean |w| over the kept entries;
- 8 bits: symmetric per-channel integers, w_q = s_c * round(w / s_c), s_c = max |w| / 127.

A binary or ternary matrix-vector product is additions and subtractions of the inputs (no multiplications) plus one
multiplication by alpha_c per output: :func:`matvec_op_counts` declares it.
"""
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention.counts import OpCounts

WEIGHT_BITS = (1, 2, 8)
QUANTIZABLE_MODULES = ("attn", "ffn")


def check_weight_bits(bits) -> int:
    if bits not in WEIGHT_BITS:
        raise ValueError(f"--weight-bits must be one of {', '.join(map(str, WEIGHT_BITS))}, got {bits!r}")
    return int(bits)


def parse_modules(text: str):
    names = [m for m in (text or "").split(",") if m]
    unknown = [m for m in names if m not in QUANTIZABLE_MODULES]
    if not names or unknown:
        raise ValueError(f"--quantize-modules must be a comma-separated subset of {', '.join(QUANTIZABLE_MODULES)}, "
                         f"got {text!r}")
    return tuple(dict.fromkeys(names))


def quantize(weight: Tensor, bits: int) -> Tensor:
    """The quantized weights (float, same shape), one scale per output channel (row)."""
    w = weight
    if bits == 1:
        alpha = w.abs().mean(dim=1, keepdim=True)
        return alpha * torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    if bits == 2:
        delta = 0.7 * w.abs().mean(dim=1, keepdim=True)
        kept = (w.abs() > delta).to(w.dtype)
        alpha = (w.abs() * kept).sum(dim=1, keepdim=True) / kept.sum(dim=1, keepdim=True).clamp_min(1.0)
        return alpha * torch.sign(w) * kept
    scale = (w.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
    return scale * torch.round(w / scale).clamp(-127, 127)


def straight_through(weight: Tensor, bits: int) -> Tensor:
    """quantize(weight) in the forward pass, the identity's gradient in the backward pass."""
    return weight + (quantize(weight, bits) - weight).detach()


class QuantizedLinear(nn.Linear):
    """nn.Linear whose forward uses its weights quantized to ``bits`` (straight-through in training). In evaluation
    the quantized weights are computed once and kept until the float weights change (a deployed model stores them:
    fairseq-eatt-pack), so decoding does not redo, nor get charged for, the quantization."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 2):
        super().__init__(in_features, out_features, bias)
        self.bits = check_weight_bits(bits)
        self._deployed: Optional[Tensor] = None
        self._deployed_of: Tuple[int, int, int, torch.dtype] = (0, -1, 0, torch.float32)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int) -> "QuantizedLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, bits)
        q.weight = linear.weight
        q.bias = linear.bias
        return q

    def forward(self, x: Tensor) -> Tensor:
        if self.training or torch.jit.is_scripting():
            return nn.functional.linear(x, straight_through(self.weight, self.bits), self.bias)
        return nn.functional.linear(x, self.deployed_weight(), self.bias)

    @torch.jit.unused
    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self.deployed_weight()  # quantized when the model is put to use, not within its first call
        return self

    @torch.jit.unused
    def deployed_weight(self) -> Tensor:
        """The quantized weights, recomputed only when the float weights changed (in place, replaced or cast)."""
        w = self.weight
        key = (id(w), w._version, w.data_ptr(), w.dtype)
        if self._deployed is None or self._deployed_of != key:
            with torch.no_grad():
                self._deployed = quantize(w.detach(), self.bits)
            self._deployed_of = key
        return self._deployed

    def op_counts(self, rows: int, selection: bool = False) -> OpCounts:
        """What ``rows`` input vectors cost through this map: binary/ternary weights, per output channel c with
        n_c nonzero weights, n_c - 1 additions (+ 1 for the bias) and one multiplication by its scale; 8 bits, a
        dense product. ``selection``: the input is E-ATT's 0/1 code, a sum of selected rows either way (as for float
        weights: see fairseq_eatt.energy.measure)."""
        if selection or self.bits == 8:
            return OpCounts()  # charged as for float weights
        weights = quantize(self.weight.detach(), self.bits) if self.training else self.deployed_weight()
        nonzero = (weights != 0).sum(dim=1)
        adds = float((nonzero - 1).clamp_min(0).sum()) + (self.out_features if self.bias is not None else 0)
        return OpCounts(mul=rows * self.out_features, add=rows * adds)

    def float_op_counts(self, rows: int, selection: bool = False) -> OpCounts:
        """The same rows through float weights (what a float declaration charges for this map)."""
        if selection or self.bits == 8:
            return OpCounts()
        bias = self.out_features if self.bias is not None else 0
        return OpCounts(mul=rows * self.in_features * self.out_features,
                        add=rows * ((self.in_features - 1) * self.out_features + bias))

    def stored_bytes(self, scale_bytes: float = 4.0) -> float:
        """Bytes of the weight matrix as a deployed model stores it: ``bits`` per weight (packed) and one scale per
        output channel (the bias is not included)."""
        return self.weight.numel() * self.bits / 8 + self.out_features * scale_bytes

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bits={self.bits}"


# ---- packed storage ----------------------------------------------------------------------------------------------

def pack(weight: Tensor, bits: int) -> Dict[str, Tensor]:
    """The quantized weights as integers packed into bytes (8 // bits codes per byte for 1 and 2 bits, int8 for 8)
    and the per-channel scales: what a checkpoint stores."""
    q = quantize(weight.detach().float(), bits)
    rows, cols = q.shape
    if bits == 8:
        scale = (weight.detach().float().abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
        return {"codes": torch.round(q / scale).to(torch.int8), "scale": scale.squeeze(1),
                "shape": torch.tensor([rows, cols])}
    alpha = q.abs().amax(dim=1)  # every nonzero entry of a row is +-alpha_c
    if bits == 1:
        codes = (q >= 0).to(torch.uint8)  # 1: +alpha, 0: -alpha
    else:
        codes = (torch.sign(q) + 1).to(torch.uint8)  # 0: -alpha, 1: 0, 2: +alpha
    per_byte = 8 // bits
    flat = codes.flatten()
    padded = torch.zeros(math.ceil(flat.numel() / per_byte) * per_byte, dtype=torch.uint8)
    padded[: flat.numel()] = flat
    groups = padded.view(-1, per_byte).to(torch.int32)
    shifts = torch.arange(per_byte, dtype=torch.int32) * bits
    packed = (groups << shifts).sum(dim=1).to(torch.uint8)
    return {"codes": packed, "scale": alpha, "shape": torch.tensor([rows, cols])}


def unpack(packed: Dict[str, Tensor], bits: int) -> Tensor:
    rows, cols = (int(v) for v in packed["shape"])
    if bits == 8:
        return packed["codes"].float() * packed["scale"].unsqueeze(1)
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.int32) * bits
    codes = ((packed["codes"].to(torch.int32).unsqueeze(1) >> shifts) & ((1 << bits) - 1)).flatten()[: rows * cols]
    codes = codes.view(rows, cols).float()
    signs = codes * 2 - 1 if bits == 1 else codes - 1
    return signs * packed["scale"].unsqueeze(1)


def matvec_op_counts(tokens: int, d_in: int, d_out: int, bits: int, nonzero: float = 1.0) -> OpCounts:
    """A quantized projection of ``tokens`` vectors: binary/ternary weights are additions and subtractions of the
    (kept) inputs plus one scale multiplication per output and the bias; 8-bit weights are multiply-adds."""
    if bits == 8:
        n = tokens * d_in * d_out
        return OpCounts(mul=n, add=n)
    terms = d_in * (nonzero if bits == 2 else 1.0)
    return OpCounts(mul=tokens * d_out, add=tokens * d_out * terms)


# ---- packed checkpoints ------------------------------------------------------------------------------------------
PACKED = ".weight_packed_"  # X.weight -> X.weight_packed_{codes,scale,shape,bits}: every entry a tensor


def pack_state(state: Dict[str, Tensor], quantized: Dict[str, int]) -> Dict[str, Tensor]:
    """``state`` with the weight of every quantized map (``quantized``: module name -> bits) replaced by its packed
    codes and scales (the float weights a training run keeps are not needed to decode)."""
    out = dict(state)
    for name, bits in quantized.items():
        packed = pack(out.pop(name + ".weight"), bits)
        for part, value in packed.items():
            out[name + PACKED + part] = value
        out[name + PACKED + "bits"] = torch.tensor(bits)
    return out


def unpack_state(state: Dict[str, Tensor]):
    """In place: packed weights back to (quantized) float weights, so that the model loads them."""
    for key in [k for k in state if k.endswith(PACKED + "bits")]:
        name = key[: -len(PACKED + "bits")]
        parts = {part: state.pop(name + PACKED + part) for part in ("codes", "scale", "shape")}
        bits = int(state.pop(key))
        state[name + ".weight"] = unpack(parts, bits)


def quantized_maps(model: nn.Module) -> Dict[str, int]:
    return {name: m.bits for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}

"""E-ATT's binarized selection (Eqs. 6-9) computed as the paper counts it: additions of the rows it selects.

Q = binary(X) W_Q^T + b is a sum, per token, of the rows of W_Q^T whose input bit is 1. The dense product reads all
of W_Q; the selection reads only the selected rows (the ratio of ones in the binarized input, about a fifth in our
trained models), which is the saving in reads the paper's accounting assumes. Kind ``select`` of
:mod:`fairseq_eatt.attention.backends` chooses how:

- ``dense_select``: ``nn.Linear`` on the bits (the fallback; the only one that gives the bits a gradient, which
  the surrogate needs in training);
- ``gather_select``: ``index_select`` of the selected rows and ``index_add_`` per token, in PyTorch: it reads what
  the kernel reads, and the traffic measurement sees its reads;
- ``cpp_select``: the compiled CPU kernel (``fairseq_eatt/csrc``), one pass per token over its selected rows.

The gather paths read a contiguous copy of W^T (rows of W^T are columns of W, strided in nn.Linear's layout),
kept beside the weight and rebuilt when the weight changes; they apply only where no gradient is needed.
"""
from typing import Optional

import torch
from torch import Tensor, nn


def rows_of(module: nn.Module, linear: nn.Linear, name: str) -> Tensor:
    """The contiguous W^T of ``linear``, kept as the non-persistent buffer ``name`` of ``module`` (a buffer, so
    that traffic measurement watches it); rebuilt when the weight was changed in place or replaced."""
    weight = linear.weight
    stamp = (weight.data_ptr(), weight._version, weight.dtype)
    kept = getattr(module, name, None)
    if kept is None or getattr(module, f"_{name}_stamp", None) != stamp:
        module.register_buffer(name, weight.detach().t().contiguous(), persistent=False)
        setattr(module, f"_{name}_stamp", stamp)
        kept = getattr(module, name)
    return kept


def gather_rows(bits: Tensor, rows: Tensor, bias: Optional[Tensor]) -> Tensor:
    """bits (T, D) of 0 / 1: bias + the rows (D, O) each token selects, summed (PyTorch operations)."""
    token, feature = bits.nonzero(as_tuple=True)
    picked = rows.index_select(0, feature)
    out = torch.zeros(bits.size(0), rows.size(1), dtype=rows.dtype, device=rows.device)
    out.index_add_(0, token, picked)
    return out if bias is None else out + bias


def compiled_rows(bits: Tensor, rows: Tensor, bias: Optional[Tensor]) -> Tensor:
    from ..functional import l1_kernel

    return l1_kernel().select_rows(bits, rows, bias)


GATHERS = {"gather_select": gather_rows, "cpp_select": compiled_rows}


def gatherable(linear: nn.Module) -> bool:
    """Whether the kept W^T computes what ``linear(bits)`` computes: a plain nn.Linear (not a quantized or otherwise
    overridden one) that no hook watches (the energy counter's, pruning's) and whose weight needs no gradient here."""
    return (type(linear) is nn.Linear and isinstance(linear.weight, Tensor) and not linear._forward_hooks
            and not linear._forward_pre_hooks and not (torch.is_grad_enabled() and linear.weight.requires_grad))


def select(module: nn.Module, linear: nn.Linear, bits: Tensor, name: str) -> Tensor:
    """``linear(bits)`` by the backend the choice of kind ``select`` takes for these bits."""
    from ..backends import select as choose, setting_is_auto

    if setting_is_auto() or not gatherable(linear):  # auto keeps nn.Linear (no crossover measured yet)
        return linear(bits)
    backend = choose("select", bits)
    if backend == "dense_select":
        return linear(bits)
    flat = bits.reshape(-1, bits.size(-1))
    out = GATHERS[backend](flat, rows_of(module, linear, name), linear.bias)
    return out.view(*bits.shape[:-1], out.size(-1))


def forget_rows(module: nn.Module, names=("q_rows", "k_rows")):
    """Drop the kept W^T copies (rebuilt on the next gather): the weights may change in ways the stamp cannot see,
    e.g. an optimizer writing through ``.data``, which has its own version counter."""
    for name in names:
        if getattr(module, name, None) is not None:
            delattr(module, name)
            setattr(module, f"_{name}_stamp", None)

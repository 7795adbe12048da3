"""The roofline view: each variant's arithmetic intensity against a machine's balance point.

A call is memory-bound when its operations per byte moved fall below the machine's balance point (peak
operations per second / bandwidth in bytes per second): then its speed, and much of its energy, is set by the
bytes. Operations are the complete convention's (what the code executes), bytes the declared traffic
(:meth:`AttentionBase.byte_counts`) under a memory assumption. :func:`measure_machine` measures this machine's two
numbers with a matrix product and a copy of a large buffer.
"""
import argparse
import time
from typing import Dict, List

import torch

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions, get_attention_class
from .traffic import intensity

# the calls a translator makes: the encoder's full pass, and decoding's incremental steps
CALLS = (("encoder_self full pass", ENCODER_SELF, None), ("decoder self step", DECODER_SELF, 1),
         ("cross step (cached source)", DECODER_CROSS, 0))


def measure_machine(gemm_n: int = 1024, copy_mib: int = 256, repeats: int = 5) -> Dict[str, float]:
    """Peak fp32 operations per second (a gemm_n^3 matrix product, 2 n^3 operations) and memory bandwidth (a copy
    of copy_mib MiB: read + written), the best of ``repeats``."""
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    src = torch.empty(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return {"peak_gops": 2 * gemm_n**3 / best / 1e9, "bandwidth_gbs": 2 * src.numel() * 4 / copy / 1e9,
            "gemm_n": gemm_n, "copy_mib": copy_mib, "threads": torch.get_num_threads()}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows(l: int, d: int, heads: int, peak_gops: float, bandwidth_gbs: float, memory: str = "dram",
         precision: str = "fp32", batch: int = 1) -> List[Dict]:
    """Intensity, attainable throughput and bound of each variant's calls at length ``l`` (keys so far for the
    steps) and ``batch`` rows sharing the weights."""
    balance = peak_gops / bandwidth_gbs
    out = []
    for name in available_attentions():
        cls = get_attention_class(name)
        for label, position, new_keys in CALLS:
            if position not in cls.capabilities.allowed_positions():
                continue
            lq = l if new_keys is None else 1
            self_attention = position != DECODER_CROSS
            options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=max(512, l)), position)
            ops = cls.op_counts(lq, l, d, heads, "complete", None, new_keys=new_keys, self_attention=self_attention,
                                **options)["attention"].scaled(batch)
            traffic = cls.byte_counts(lq, l, d, heads, precision, new_keys=new_keys, self_attention=self_attention,
                                      rows=batch, **options)
            operations = ops.mul + ops.add + ops.cmp
            ai = intensity(operations, traffic, memory)
            attainable = min(peak_gops, ai * bandwidth_gbs)
            out.append({"variant": name, "call": label, "operations": operations, "bytes": traffic.total,
                        "intensity": ai, "attainable_gops": attainable,
                        "bound": "memory" if ai < balance else "compute"})
    return out

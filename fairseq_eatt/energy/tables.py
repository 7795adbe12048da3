"""Energy per operation, in picojoules.

- ``paper-asic`` / ``paper-fpga``: the E-ATT paper's Table 1 (from Li et al., 2020).
- ``horowitz-45nm-<type>``: the 45 nm figures commonly cited from Horowitz (ISSCC 2014): int8 add 0.03 / mul 0.2,
  int32 add 0.1 / mul 3.1, fp16 add 0.4 / mul 1.1, fp32 add 0.9 / mul 3.7.
- a user table: a JSON file ``{"name": "my-chip", "add": 0.5, "mul": 2.0, "cmp": 0.5, "dram": 160, "sram": 1.25}``
  (``cmp``, the cost of a comparison such as E-ATT's binarization, defaults to the cost of an addition; ``dram`` and
  ``sram``, pJ per byte read or written, default to Horowitz's).

Memory costs (pJ per byte, reads and writes alike): every built-in table carries Horowitz's 45 nm figures, a 32-bit
DRAM access 640 pJ (160 pJ/byte) and a 32-bit access of an 8 KB SRAM 5 pJ (1.25 pJ/byte).
"""
import json
import math
from dataclasses import dataclass
from typing import Dict, Optional

from ..attention.counts import OpCounts
from ..attention.counts import Traffic

HOROWITZ_DRAM_PJ_PER_BYTE = 640.0 / 4
HOROWITZ_SRAM_PJ_PER_BYTE = 5.0 / 4


@dataclass(frozen=True)
class EnergyTable:
    name: str
    add: float
    mul: float
    cmp: Optional[float] = None  # None: same as an addition
    dram: float = HOROWITZ_DRAM_PJ_PER_BYTE  # pJ per byte
    sram: float = HOROWITZ_SRAM_PJ_PER_BYTE

    def energy(self, ops: OpCounts) -> float:
        cmp = self.add if self.cmp is None else self.cmp
        return ops.add * self.add + ops.mul * self.mul + ops.cmp * cmp

    def memory_energy(self, traffic: Traffic, memory: str) -> float:
        """pJ of ``traffic`` under the memory assumption ``memory`` (see :mod:`fairseq_eatt.attention.counts`)."""
        levels = traffic.by_level(memory)
        return levels["dram"] * self.dram + levels["sram"] * self.sram

    def total_energy(self, ops: OpCounts, traffic: Traffic, memory: str) -> float:
        return self.energy(ops) + self.memory_energy(traffic, memory)


BUILTIN: Dict[str, EnergyTable] = {
    t.name: t
    for t in (
        EnergyTable("paper-asic", add=0.9, mul=3.7),
        EnergyTable("paper-fpga", add=0.4, mul=18.8),
        EnergyTable("horowitz-45nm-int8", add=0.03, mul=0.2),
        EnergyTable("horowitz-45nm-int32", add=0.1, mul=3.1),
        EnergyTable("horowitz-45nm-fp16", add=0.4, mul=1.1),
        EnergyTable("horowitz-45nm-fp32", add=0.9, mul=3.7),
    )
}


def load_table(path: str) -> EnergyTable:
    """A user-supplied table (see the module docstring for the format); errors name the file and the key."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"--energy-table {path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--energy-table {path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f'--energy-table {path}: expected an object like {{"name": ..., "add": ..., "mul": ...}}')
    values = {}
    for key in ("add", "mul", "cmp", "dram", "sram"):
        if key not in data:
            if key in ("cmp", "dram", "sram"):
                continue
            raise ValueError(f"--energy-table {path}: missing {key!r} (pJ per operation)")
        value = data[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"--energy-table {path}: {key!r} must be a finite number >= 0 (pJ), got {value!r}")
        values[key] = float(value)
    unknown = sorted(set(data) - {"name", "add", "mul", "cmp", "dram", "sram"})
    if unknown:
        raise ValueError(f"--energy-table {path}: unknown key(s) {', '.join(map(repr, unknown))}; valid: name, add, "
                         f"mul, cmp, dram, sram")
    return EnergyTable(str(data.get("name", path)), values["add"], values["mul"], values.get("cmp"),
                       values.get("dram", HOROWITZ_DRAM_PJ_PER_BYTE), values.get("sram", HOROWITZ_SRAM_PJ_PER_BYTE))

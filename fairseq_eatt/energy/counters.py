"""Measured joules from hardware energy counters: Linux powercap (Intel/AMD RAPL) and NVIDIA NVML.

Only counters that can be read are used, and a reading is only ever a measurement: where no counter is readable,
:func:`available_counters` is empty and callers report nothing (never an estimate in a measurement's place).

- powercap: ``/sys/class/powercap/<zone>/energy_uj`` (micro-joules, wrapping at ``max_energy_range_uj``), the zone
  named by its ``name`` file (``package-0``, ``dram``, ``core``, ...); subzones (``intel-rapl:0:1``) included.
- NVML: ``nvmlDeviceGetTotalEnergyConsumption`` (milli-joules since the driver loaded), through ``pynvml`` (the
  ``nvidia-ml-py`` package), one counter per GPU.
"""
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

POWERCAP_ROOT = "/sys/class/powercap"
NVML_WRAP_MJ = 2**64  # NVML's total energy is an unsigned 64-bit count of millijoules


@dataclass
class Counter:
    name: str  # e.g. powercap:intel-rapl:0 (package-0)
    read: Callable[[], float]  # the counter's reading, in its own unit (integers: differences stay exact)
    unit_j: float  # joules per unit (powercap: micro-joules, NVML: milli-joules)
    wrap: Optional[float] = None  # the reading wraps at this many units


def _read_number(path: str) -> Optional[float]:
    try:
        with open(path, encoding="utf-8") as handle:
            return float(handle.read().strip())
    except (OSError, ValueError):
        return None


def powercap_counters(root: str = POWERCAP_ROOT) -> List[Counter]:
    """Every readable powercap zone under ``root`` (zones whose energy_uj cannot be read are left out)."""
    counters = []
    if not os.path.isdir(root):
        return counters
    for zone in sorted(os.listdir(root)):
        path = os.path.join(root, zone)
        energy = os.path.join(path, "energy_uj")
        if _read_number(energy) is None:
            continue
        try:
            with open(os.path.join(path, "name"), encoding="utf-8") as handle:
                label = handle.read().strip()
        except OSError:
            label = zone
        wrap = _read_number(os.path.join(path, "max_energy_range_uj"))
        counters.append(Counter(f"powercap:{zone} ({label})", lambda e=energy: _read_number(e), 1e-6,
                                wrap if wrap else None))
    return counters


def nvml_counters() -> List[Counter]:
    """One counter per NVIDIA GPU whose total-energy counter NVML can read; none without pynvml or a GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        counters = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            counters.append(Counter(f"nvml:{i} ({name})",
                                    lambda h=handle: pynvml.nvmlDeviceGetTotalEnergyConsumption(h), 1e-3,
                                    NVML_WRAP_MJ))
        return counters
    except pynvml.NVMLError:
        return []


def available_counters(powercap_root: str = POWERCAP_ROOT) -> List[Counter]:
    return powercap_counters(powercap_root) + nvml_counters()


def read_all(counters: List[Counter]) -> Dict[str, float]:
    """Every counter's reading, in its own unit."""
    return {c.name: c.read() for c in counters}


def difference(counters: List[Counter], start: Dict[str, float], end: Dict[str, float]) -> Dict[str, float]:
    """Joules per counter between two readings, across one wrap of the counter."""
    out = {}
    for c in counters:
        delta = end[c.name] - start[c.name]
        if delta < 0 and c.wrap:
            delta += c.wrap
        out[c.name] = delta * c.unit_j
    return out


def measure_command(command: List[str], idle_s: float = 5.0, powercap_root: str = POWERCAP_ROOT) -> Dict:
    """Run ``command`` and report the joules each readable counter counted, with the idle power measured over
    ``idle_s`` seconds before it (baseline) and the joules above that baseline. Raises NoCounterError where no
    counter can be read."""
    counters = available_counters(powercap_root)
    if not counters:
        raise NoCounterError(f"no readable energy counter: powercap ({powercap_root}/*/energy_uj) is absent or "
                             "not readable, and NVML (pynvml) finds no GPU energy counter; nothing is reported")
    start = read_all(counters)
    time.sleep(idle_s)
    idle = difference(counters, start, read_all(counters))
    start, t0 = read_all(counters), time.time()
    proc = subprocess.run(command)
    seconds = time.time() - t0
    total = difference(counters, start, read_all(counters))
    return {
        "command": command, "returncode": proc.returncode, "seconds": seconds, "idle_seconds": idle_s,
        "counters": {name: {"joules": total[name], "idle_watts": idle[name] / idle_s,
                            "joules_above_idle": total[name] - idle[name] / idle_s * seconds}
                     for name in total},
    }


class NoCounterError(RuntimeError):
    """No hardware energy counter is readable on this machine."""

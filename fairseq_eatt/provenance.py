"""Where the plugin is, and what a result was made on: the machine, the commit and the provenance a record carries.

The bottom layer: it imports nothing of the plugin, so that every module can say where its results came from."""
import datetime
import os
import platform
import subprocess
from typing import Dict, Optional

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))  # what --user-dir takes
REPO_ROOT = os.path.dirname(PLUGIN_DIR)


def machine(threads: bool = False) -> Dict:
    """The machine a result was measured on: CPU, cores, GPU, torch, fairseq and Python versions; ``threads``:
    also torch's thread count (benchmarks run at a chosen count)."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        from importlib.metadata import version

        fairseq_version = version("fairseq-fixed")
    except Exception:  # noqa: BLE001 (an unusual install: report what fairseq says)
        import fairseq

        fairseq_version = getattr(fairseq, "__version__", "unknown")
    info = {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "fairseq": fairseq_version,
            "python": platform.python_version()}
    if threads:
        info["threads"] = torch.get_num_threads()
    return info


def machine_label(machine: Dict) -> str:
    """The processor a run trained on: its CPU, or its GPU (and host CPU) where it had one."""
    return f"{machine['gpu']} ({machine['cpu']} host)" if machine.get("gpu") else machine["cpu"]


def git_commit() -> Optional[str]:
    """The repository's short commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def provenance(command: Optional[str] = None, threads: bool = False) -> Dict:
    """What a record carries about its making: the command (when given), today's date, the machine and the
    commit, in this order (records keep their keys' order)."""
    made = {"command": command} if command is not None else {}
    return {**made, "date": datetime.date.today().isoformat(), "machine": machine(threads), "git_commit": git_commit()}

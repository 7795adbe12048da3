"""Turn the runs' JSON results into the paper's tables (markdown) and figures (PNG), with their status.

Every table says which runs it needs, which exist, and where they came from (command, machine, dates, commits),
so a partially finished recipe is reported as partial, never as complete. Loading: results.py; the reports:
tables.py; plots: plots.py; the results index: index.py.
"""
import os
from typing import Dict, Optional, Sequence

from .index import update_index
from .results import Collection, ResultError, attention_energy, describe_setting, load_runs, mean_std  # noqa: F401
from .settings import SETTINGS
from .tables import figure1, figure1_name, figure2, figure3, table4, table5, table6, variants  # noqa: F401


def aggregate(results: str, out_root: str, scales: Optional[Sequence[str]] = None,
              recipe: str = "paper") -> Dict[str, Dict[str, str]]:
    """Write ``out_root/<scale>/{table4,table5,table6,variants,figure1,figure2,figure3}.md`` (+ PNGs); returns
    the status of each."""
    from ..data.text import atomic_output

    col = Collection(load_runs(results), recipe)
    chosen = list(scales) if scales else (col.scales() or ["small"])
    report: Dict[str, Dict[str, str]] = {}
    for scale in chosen:
        if not any(s == scale for _, s in SETTINGS):
            raise ResultError(f"unknown scale {scale!r}")
        folder = os.path.join(out_root, scale)
        os.makedirs(folder, exist_ok=True)
        parts = {
            "table4": table4(col, scale), "table5": table5(col, scale), "table6": table6(col, scale),
            "variants": variants(col, scale, folder), "figure1": figure1(results, scale, folder, recipe),
            "figure2": figure2(folder, scale, recipe), "figure3": figure3(folder, scale, recipe),
        }
        report[scale] = {}
        for name, (status, text) in parts.items():
            with atomic_output(os.path.join(folder, name + ".md")) as handle:
                handle.write(text)
            report[scale][name] = status
        update_index(os.path.join(out_root, "README.md"), scale, report[scale])
    return report

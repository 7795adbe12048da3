"""The energy reports under results/ (written by ``reports.write``): their records and their markdown."""
import dataclasses
from typing import Dict, List, Optional, Sequence

from ..provenance import provenance
from ..reports import renderer
from .checkpoint import markdown as checkpoint_section
from .report import paper_tables
from .tables import EnergyTable


@renderer("tables")
def tables_markdown(record: Dict) -> str:
    """Tables 1, 2 and 7 (every variant, every hybrid) of ``record``: its setting, conventions and energy tables."""
    extra = [EnergyTable(**table) for table in record["tables"]]
    body = paper_tables(record["l"], record["d"], record["heads"], record["conventions"], extra)
    return (f"# Energy tables\n\nMade by `{record['command']}` from the operation counts each attention variant "
            f"declares next to its code (no training; the test suite checks them against the arithmetic a forward "
            f"pass executes). Date, machine and commit: the JSON file beside this one.\n\n" + body)


@renderer("checkpoint")
def checkpoint_markdown(record: Dict) -> str:
    """Energy per sentence of a trained checkpoint, one section per convention."""
    head = f"# Energy per sentence of a trained checkpoint\n\nMade by `{record['command']}`"
    head += f" ({record['note']})" if record.get("note") else ""
    head += ". Date, machine and commit: the JSON file beside this one.\n\n"
    return head + "\n".join(checkpoint_section(r) for r in record["results"])


def tables_record(command: str, conventions: Sequence[str], tables: Sequence[EnergyTable], l: int = 22,  # noqa: E741 (the paper's l)
                  d: int = 512, heads: int = 8) -> Dict:
    """``tables``: the energy tables beside the paper's two (built-in or a user's), stored whole."""
    return {"kind": "tables", "l": l, "d": d, "heads": heads, "conventions": list(conventions),
            "tables": [dataclasses.asdict(t) for t in tables], **provenance(command)}


def checkpoint_record(command: str, results: List[Dict], note: Optional[str] = None) -> Dict:
    return {"kind": "checkpoint", "results": results, "note": note, **provenance(command)}

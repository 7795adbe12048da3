"""The energy reports under results/: markdown made from a JSON record, so that the markdown regenerates byte for
byte from what is committed (the provenance lives in the JSON: command, date, machine, commit)."""
import dataclasses
import datetime
import json
from typing import Dict, List, Optional, Sequence

from ..data.text import atomic_output
from .checkpoint import markdown as checkpoint_section
from .report import paper_tables
from .tables import EnergyTable

def provenance(command: str) -> Dict:
    from ..fairseq_tools import git_commit, machine

    return {"command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
            "git_commit": git_commit()}


def tables_markdown(record: Dict) -> str:
    """Tables 1, 2 and 7 (every variant, every hybrid) of ``record``: its setting, conventions and energy tables."""
    extra = [EnergyTable(**table) for table in record["tables"]]
    body = paper_tables(record["l"], record["d"], record["heads"], record["conventions"], extra)
    return (f"# Energy tables\n\nMade by `{record['command']}` from the operation counts each attention variant "
            f"declares next to its code (no training; the test suite checks them against the arithmetic a forward "
            f"pass executes). Date, machine and commit: the JSON file beside this one.\n\n" + body)


def checkpoint_markdown(record: Dict) -> str:
    """Energy per sentence of a trained checkpoint, one section per convention."""
    head = f"# Energy per sentence of a trained checkpoint\n\nMade by `{record['command']}`"
    head += f" ({record['note']})" if record.get("note") else ""
    head += ". Date, machine and commit: the JSON file beside this one.\n\n"
    return head + "\n".join(checkpoint_section(r) for r in record["results"])


RENDERERS = {"tables": tables_markdown, "checkpoint": checkpoint_markdown}


def write(out_prefix: str, record: Dict) -> str:
    """Write OUT.json (the record) and OUT.md (rendered from it); returns the markdown."""
    text = RENDERERS[record["kind"]](record)
    with atomic_output(out_prefix + ".json") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
        handle.write("\n")
    with atomic_output(out_prefix + ".md") as handle:
        handle.write(text)
    return text


def tables_record(command: str, conventions: Sequence[str], tables: Sequence[EnergyTable], l: int = 22,
                  d: int = 512, heads: int = 8) -> Dict:
    """``tables``: the energy tables beside the paper's two (built-in or a user's), stored whole."""
    return {"kind": "tables", "l": l, "d": d, "heads": heads, "conventions": list(conventions),
            "tables": [dataclasses.asdict(t) for t in tables], **provenance(command)}


def checkpoint_record(command: str, results: List[Dict], note: Optional[str] = None) -> Dict:
    return {"kind": "checkpoint", "results": results, "note": note, **provenance(command)}


def regenerate(json_path: str) -> str:
    """The markdown that ``json_path``'s record renders to (what its .md file must hold)."""
    with open(json_path, encoding="utf-8") as handle:
        record = json.load(handle)
    return RENDERERS[record["kind"]](record)

"""Report files under results/: OUT.json holds a record (measurements and provenance: command, date, machine,
commit) and OUT.md is rendered from that record alone, so that a test regenerates every committed report byte for
byte and a change of the rendering or of the counts shows.

Each module that makes a kind of record registers its renderer here with ``@renderer(kind)``; this module imports
none of them (they import it), so rendering finds the kinds whose modules are imported: the producer of a record
has been, and ``fairseq_eatt.cli.report_kinds`` imports them all."""
import json
from typing import Callable, Dict

from .data.text import atomic_output
from .provenance import provenance  # noqa: F401  (re-exported: reports.provenance(command))

_RENDERERS: Dict[str, Callable[[Dict], str]] = {}


def renderer(kind: str) -> Callable[[Callable[[Dict], str]], Callable[[Dict], str]]:
    """Decorator: ``function(record) -> markdown`` renders records of ``kind``; a kind has one renderer."""
    def register(function: Callable[[Dict], str]) -> Callable[[Dict], str]:
        known = _RENDERERS.get(kind)
        where = (function.__module__, function.__qualname__)
        if known is not None and (known.__module__, known.__qualname__) != where:  # a reload may register again
            raise ValueError(f"report kind {kind!r} is already rendered by {known.__module__}.{known.__qualname__}")
        _RENDERERS[kind] = function
        return function

    return register


def renderers() -> Dict[str, Callable[[Dict], str]]:
    """{kind: renderer} of the kinds registered so far (by the modules imported)."""
    return dict(_RENDERERS)


def render(record: Dict) -> str:
    kinds = renderers()
    if record.get("kind") not in kinds:
        raise ValueError(f"a report record of kind {record.get('kind')!r}; known kinds: {', '.join(kinds)}")
    return kinds[record["kind"]](record)


def write(out_prefix: str, record: Dict) -> str:
    """Write OUT.json (the record) and OUT.md (rendered from it); returns the markdown."""
    text = render(record)
    with atomic_output(out_prefix + ".json") as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    with atomic_output(out_prefix + ".md") as handle:
        handle.write(text)
    return text


def publish(out_prefix, record: Dict):
    """A command's report: written to OUT.json and OUT.md when ``out_prefix`` is given, printed either way."""
    if out_prefix:
        write(out_prefix, record)
        print(f"wrote {out_prefix}.md and {out_prefix}.json")
    print(render(record), end="")


def regenerate(json_path: str) -> str:
    """The markdown that ``json_path``'s record renders to (what its .md file must hold)."""
    with open(json_path, encoding="utf-8") as handle:
        return render(json.load(handle))

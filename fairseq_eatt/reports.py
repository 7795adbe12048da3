"""Report files under results/: OUT.json holds a record (measurements and provenance: command, date, machine,
commit) and OUT.md is rendered from that record alone, so that a test regenerates every committed report byte for
byte and a change of the rendering or of the counts shows."""
import datetime
import json
from typing import Callable, Dict

from .data.text import atomic_output


def provenance(command: str) -> Dict:
    from .fairseq_tools import git_commit, machine

    return {"command": command, "date": datetime.date.today().isoformat(), "machine": machine(),
            "git_commit": git_commit()}


def renderers() -> Dict[str, Callable[[Dict], str]]:
    from .energy.decoding_report import markdown as decoding_markdown
    from .energy.files import checkpoint_markdown, tables_markdown
    from .energy.pareto import markdown as pareto_markdown
    from .energy.roofline import markdown as roofline_markdown
    from .experiments.techniques import markdown as techniques_markdown
    from .perf.deploy import markdown as deploy_markdown
    from .perf.params import markdown as params_markdown
    from .perf.precision import markdown as precision_markdown

    return {"tables": tables_markdown, "checkpoint": checkpoint_markdown, "precision": precision_markdown,
            "params": params_markdown, "deploy": deploy_markdown, "decoding": decoding_markdown,
            "roofline": roofline_markdown, "pareto": pareto_markdown, "techniques": techniques_markdown}


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

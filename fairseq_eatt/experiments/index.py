"""The status block of the results index (results/README.md), rewritten by each aggregation."""
import os
from typing import Dict

INDEX_ROWS = (("table4", "Table 4: vanilla vs E-ATT, several seeds"), ("table5", "Table 5: ablations"),
              ("table6", "Table 6: hybrids of self- and cross-attention"),
              ("figure1", "Figure 1: distillation with halved dimensions"),
              ("figure2", "Figure 2: cross-attention heat maps"),
              ("figure3", "Figure 3: binarization ratios per layer"),
              ("variants", "All registered variants: quality, parameters, energy"))


def update_index(readme: str, scale: str, statuses: Dict[str, str]):
    """Rewrite the status table between ``<!-- status:SCALE:begin -->`` and ``end`` markers, if the file has them."""
    rows = [f"| paper item | {scale} scale: status | file |", "|---|---|---|"]
    rows += [f"| {label} | {statuses[name]} | `{scale}/{name}.md` |" for name, label in INDEX_ROWS]
    update_block(readme, f"status:{scale}", "\n".join(rows))


def update_block(readme: str, name: str, body: str):
    """Rewrite the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, if the file has them: numbers
    there are rendered from results, never typed."""
    from ..data.text import atomic_output

    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if not os.path.exists(readme):
        return
    text = open(readme, encoding="utf-8").read()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with atomic_output(readme) as handle:
        handle.write(head + begin + "\n" + body.rstrip("\n") + "\n" + end + tail)

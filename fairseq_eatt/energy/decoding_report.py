"""The decoding-energy report (record kind ``decoding``): beam search counted per sentence and per target token,
arithmetic only and with memory traffic under each memory assumption, at several batch sizes."""
from typing import Dict, List, Optional, Sequence

from ..provenance import provenance
from ..reports import renderer
from .decoding import count_generation
from .tables import EnergyTable
from ..attention.counts import MEMORY, MEMORY_HELP

FORMS = ("arithmetic",) + tuple(MEMORY)  # arithmetic only, then with traffic under each assumption


def summarize(count, table: EnergyTable) -> Dict:
    ops, traffic = count.total_ops(), count.total_traffic()
    attention_ops = count.attention()
    energy = {"arithmetic": table.energy(ops)}
    for memory in MEMORY:
        energy[memory] = energy["arithmetic"] + table.memory_energy(traffic, memory)
    attention = {"arithmetic": table.energy(attention_ops)}
    attention_traffic = count.attention(part="traffic")
    for memory in MEMORY:
        attention[memory] = attention["arithmetic"] + table.memory_energy(attention_traffic, memory)
    return {
        "sentences": count.sentences, "target_tokens": count.target_tokens,
        "ops": {"attention": vars(attention_ops), "other": vars(count.other_executed)},
        "traffic_bytes": traffic.as_dict(), "attention_traffic_bytes": attention_traffic.as_dict(),
        "declared_equals_executed": all(c.executed.mul == c.declared.mul and c.executed.cmp == c.declared.cmp
                                        and abs(c.executed.add - c.declared.add) <= 1e-9 * max(1.0, c.declared.add)
                                        for c in count.calls),
        "energy_uj_per_sentence": {k: v / count.sentences / 1e6 for k, v in energy.items()},
        "energy_uj_per_token": {k: v / count.target_tokens / 1e6 for k, v in energy.items()},
        "attention_energy_uj_per_sentence": {k: v / count.sentences / 1e6 for k, v in attention.items()},
    }


def measure_model(model, task, samples_by_batch: Dict[int, list], table: EnergyTable, beam: int,
                  match_source_len: bool, max_len_b: int) -> Dict[str, Dict]:
    return {str(bsz): summarize(count_generation(model, task, samples, beam=beam, max_len_b=max_len_b,
                                                 match_source_len=match_source_len), table)
            for bsz, samples in samples_by_batch.items()}


def record(command: str, rows: List[Dict], table: EnergyTable, beam: int, note: Optional[str]) -> Dict:
    return {"kind": "decoding", "rows": rows, "table": vars(table), "beam": beam, "note": note,
            **provenance(command)}


@renderer("decoding")
def markdown(rec: Dict) -> str:
    table = rec["table"]
    lines = ["# Decoding energy: fairseq's beam search, counted", "",
             f"Made by `{rec['command']}`" + (f" ({rec['note']})" if rec.get("note") else "") + ". Date, machine and "
             "commit: the JSON file beside this one.", "",
             f"fairseq's SequenceGenerator (beam {rec['beam']}) ran under the operation counter: every attention "
             "call's executed arithmetic (checked against its declaration: last column), the rest of the model "
             "(embeddings, layer norms, feed-forward layers, output projection) as executed, and the memory "
             "traffic each call declares plus the caches beam search reorders. Costs: "
             f"`{table['name']}` (add {table['add']} pJ, mul {table['mul']} pJ; DRAM {table['dram']} pJ/byte, SRAM "
             f"{table['sram']} pJ/byte). Memory assumptions: "
             + "; ".join(f"`{k}`: {v}" for k, v in MEMORY_HELP.items()) + ".", ""]
    batches = sorted({b for r in rec["rows"] for b in r["batches"]}, key=int)
    for bsz in batches:
        lines += [f"## Batch {bsz}", "",
                  "| model | sentences | target tokens | µJ / sentence, arithmetic | µJ / sentence, with traffic "
                  "(dram) | with traffic (sram) | µJ / token (dram) | attention share of arithmetic | "
                  "declared = executed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            m = r["batches"].get(bsz)
            if m is None:
                continue
            e, t = m["energy_uj_per_sentence"], m["energy_uj_per_token"]
            share = m["attention_energy_uj_per_sentence"]["arithmetic"] / e["arithmetic"]
            lines.append(f"| {r['label']} | {m['sentences']} | {m['target_tokens']} | {e['arithmetic']:.1f} | "
                         f"{e['dram']:.1f} | {e['sram']:.1f} | {t['dram']:.2f} | {100 * share:.1f}% | "
                         f"{'yes' if m['declared_equals_executed'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def ratio_lines(rec: Dict, a: str, b: str) -> List[str]:
    """``a``'s energy per sentence as a fraction of ``b``'s, per batch and form."""
    rows = {r["label"]: r for r in rec["rows"]}
    out = []
    for bsz in sorted(rows[a]["batches"], key=int):
        ea = rows[a]["batches"][bsz]["energy_uj_per_sentence"]
        eb = rows[b]["batches"][bsz]["energy_uj_per_sentence"]
        out.append(f"batch {bsz}: " + ", ".join(f"{f} {ea[f] / eb[f]:.3f}" for f in FORMS))
    return out


def batch_sizes(text: str) -> Sequence[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated positive integers, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"--batch-sizes must be comma-separated positive integers, got {text!r}")
    return sizes

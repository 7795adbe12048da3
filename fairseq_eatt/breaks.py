"""Paths of the code broken on purpose (scripts/break_on_purpose.py): each names the tests that must catch it."""
import dataclasses
from typing import Dict, List

from .reports import renderer


@dataclasses.dataclass(frozen=True)
class Break:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: List[str]


BREAKS = [
    Break("onnx-cache-reorder", "ONNX Runtime beam search no longer reorders the decoder caches with the hypotheses",
          "fairseq_eatt/deploy/ort_translate.py",
          "state = [s[order] if follows else s for s, follows in zip(state, self.follows)]",
          "state = [s if follows else s for s, follows in zip(state, self.follows)]",
          ["tests/test_deployment.py::test_onnx_runtime_beam_search_translates_like_fairseq[eatt]",
           "tests/test_deployment.py::test_onnx_runtime_beam_search_translates_like_fairseq[vanilla]"]),
    Break("allow-list-namespace", "argparse.Namespace (fairseq's saved arguments) dropped from the loading allow-list",
          "fairseq_eatt/compat.py", "return [argparse.Namespace, DictConfig,", "return [DictConfig,",
          ["tests/test_safe_loading.py"]),
    Break("fused-causal-mask-sign", "the fused E-ATT kernel subtracts the additive future mask instead of adding it",
          "fairseq_eatt/attention/eatt/triton_kernels.py", "s += _load(mask_ptr, rows, cols, m_t, m_s, T, S)",
          "s -= _load(mask_ptr, rows, cols, m_t, m_s, T, S)",
          # beam search decodes one query per step, with no future mask: it cannot see this break (recorded)
          ["tests/test_triton_l1.py::test_beam_search_with_fused_kernels_equals_the_dense_path",
           "tests/test_triton_l1.py::test_fused_attention_equals_the_dense_path",
           "tests/test_triton_l1.py::test_eatt_layers_attend_through_the_fused_kernel_like_the_dense_path"]),
    Break("eatt-selection-count", "E-ATT's paper-convention selection counted over d instead of its Q/K width",
          "fairseq_eatt/attention/eatt/cost.py", "return OpCounts(add=(lq + lk) * qk)",
          "return OpCounts(add=(lq + lk) * d)",
          ["tests/test_eatt_recipes.py::test_the_energy_tables_count_the_attention_of_the_default_recipe"]),
    Break("runtime-top-k-ties", "the exported beam search's partition drops candidates tied with the k-th best",
          "fairseq_eatt/deploy/ort_translate.py", "candidates = np.nonzero(flat >= kth)[0]",
          "candidates = np.nonzero(flat > kth)[0]",
          ["tests/test_deployment.py::test_the_runtimes_top_k_is_a_stable_sorts_first_k"]),
    Break("selection-rows-stale", "the selection's kept W^T is never rebuilt when the weights change",
          "fairseq_eatt/attention/eatt/selection.py",
          "if kept is None or getattr(module, f\"_{name}_stamp\", None) != stamp:", "if kept is None:",
          ["tests/test_selection.py::test_the_rows_follow_the_weights"]),
    Break("counter-wrap", "an energy counter's wraparound is no longer added back",
          "fairseq_eatt/energy/counters.py", "delta += c.wrap", "delta += 0",
          ["tests/test_energy_traffic.py::test_the_nvml_reader_measures_joules_above_the_idle_baseline",
           "tests/test_energy_traffic.py::test_powercap_zones_are_read_and_wraps_handled"]),
]



@renderer("deliberate_breaks")
def markdown(rec: Dict) -> str:
    lines = ["# Deliberate breaks: each path broken on purpose, and the test that caught it", "",
             f"Made by `{rec['command']}`; date, machine and the commit tested in the JSON beside this file. Each "
             f"break replaces one piece of a source file in a copy of that commit, runs the tests named for it "
             f"(passing on intact code first), and restores the file.", "",
             "| break | what | tests that failed |", "|---|---|---|"]
    if rec.get("tested_commit"):
        lines[2] = lines[2].replace("the commit tested", f"the commit tested ({rec['tested_commit']})")
    for r in rec["breaks"]:
        caught = "<br>".join(f"`{t}`" for t in r["failed"]) if r["caught"] else "**not caught**"
        lines.append(f"| {r['name']} | {r['what']} (`{r['file']}`) | {caught} |")
    return "\n".join(lines) + "\n"


"""Which training runs each table of the E-ATT paper needs.

A run is identified by its task, scale, attention variant per position and seed, not by the table asking for it:
the vanilla and E-ATT runs of Table 4 are also the diagonal of Table 6 and rows of Table 5, and are trained once.
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions, get_attention_class
from .settings import PAPER_TASKS, SMALL_TASK

TABLE5_ROWS = (("vanilla", "Vanilla"), ("eatt_select", "Replace with discrete selection"),
               ("eatt_l1", "Replace with L1 distance"), ("eatt", "E-ATT"))
TABLE6_AXIS = (("vanilla", "Vanilla"), ("synth_dense", "Dense"), ("synth_random", "RandInit"), ("eatt", "E-ATT"))
TRAINING_RECIPES = ("table4", "table5", "table6", "variants")


@dataclass(frozen=True)
class RunSpec:
    task: str
    scale: str
    encoder_self: str
    decoder_self: str
    decoder_cross: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.encoder_self}-{self.decoder_self}-{self.decoder_cross}.seed{self.seed}"

    @property
    def attention(self) -> Dict[str, str]:
        return {"encoder_self": self.encoder_self, "decoder_self": self.decoder_self,
                "decoder_cross": self.decoder_cross}


def uniform(task: str, scale: str, variant: str, seed: int) -> RunSpec:
    return RunSpec(task, scale, variant, variant, variant, seed)


def default_tasks(recipe: str, scale: str) -> List[str]:
    if scale == "small":
        return [SMALL_TASK]
    return list(PAPER_TASKS) if recipe == "table4" else ["iwslt15-en-vi"]  # Tables 5, 6: En-Vi in the paper


def default_seeds(recipe: str, scale: str) -> List[int]:
    if recipe in ("table4", "figure3"):  # Figure 3 measures every E-ATT seed of Table 4
        return [1, 2, 3, 4, 5] if scale == "paper" else [1, 2, 3]
    return [1]


def everywhere_allowed(variant: str) -> Dict[str, str]:
    """``variant`` in every position it supports, vanilla attention in the others."""
    allowed = get_attention_class(variant).capabilities.allowed_positions()
    return {pos: (variant if pos in allowed else "vanilla") for pos in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)}


def runs_for(recipe: str, scale: str, tasks: Sequence[str], seeds: Sequence[int]) -> List[RunSpec]:
    runs: List[RunSpec] = []
    for task in tasks:
        for seed in seeds:
            if recipe == "table4":
                runs += [uniform(task, scale, v, seed) for v in ("vanilla", "eatt")]
            elif recipe == "table5":
                runs += [uniform(task, scale, v, seed) for v, _ in TABLE5_ROWS]
            elif recipe == "table6":
                runs += [RunSpec(task, scale, s, s, c, seed) for c, _ in TABLE6_AXIS for s, _ in TABLE6_AXIS]
            elif recipe == "variants":
                for v in available_attentions():
                    p = everywhere_allowed(v)
                    runs.append(RunSpec(task, scale, p[ENCODER_SELF], p[DECODER_SELF], p[DECODER_CROSS], seed))
            else:
                raise ValueError(f"unknown training recipe {recipe!r}; valid: {', '.join(TRAINING_RECIPES)}")
    unique: Dict[RunSpec, None] = dict.fromkeys(runs)
    return list(unique)


def select(runs: Sequence[RunSpec], pattern: str) -> List[RunSpec]:
    """Runs whose name matches the regular expression ``pattern`` (``--only``)."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--only {pattern!r} is not a valid regular expression: {err}") from None
    return [r for r in runs if regex.search(r.name)]

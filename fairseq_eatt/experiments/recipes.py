"""Which training runs each table of the E-ATT paper needs.

A run is identified by its task, scale, attention variant per position and seed, not by the table asking for it:
the vanilla and E-ATT runs of Table 4 are also the diagonal of Table 6 and rows of Table 5, and are trained once.
"""
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from ..attention import everywhere_allowed  # noqa: F401  (R.everywhere_allowed)
from .settings import PAPER_TASKS, SMALL_TASK

TABLE5_ROWS = (("vanilla", "Vanilla"), ("eatt_select", "Replace with discrete selection"),
               ("eatt_l1", "Replace with L1 distance"), ("eatt", "E-ATT"))
TABLE6_AXIS = (("vanilla", "Vanilla"), ("synth_dense", "Dense"), ("synth_random", "RandInit"), ("eatt", "E-ATT"))
TRAINING_RECIPES = ("table4", "table5", "table6", "variants", "study", "study-long", "study-convert", "techniques")


# ---- where the runs of an E-ATT recipe go: the paper's keep the names and folders they had before recipes existed
def recipe_label(recipe: str) -> str:
    """Suffix of run, checkpoint and summary names trained with E-ATT recipe ``recipe``: "" or "@<recipe>"."""
    return "" if recipe == "paper" else f"@{recipe}"


def recipe_folder(root: str, recipe: str) -> str:
    """Output folder of ``recipe``'s tables and figures under ``root``: ``root`` or ``root/<recipe>``."""
    return root if recipe == "paper" else os.path.join(root, recipe)

# The E-ATT study: levers of the authors' released code and of the paper's text, each alone, and
# combinations. tag -> (variant, what it changes, model flags). A lever's run is named <variant>+<tag>.
STUDY_CONFIGS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "eatt+authors": ("eatt", "--eatt-recipe authors: pre-norm blocks, tau = 0 on the layer-normed input, Q/K of "
                             "d/h, the authors' score scales and initialization", ("--eatt-recipe", "authors")),
    "eatt+prenorm": ("eatt", "the paper's E-ATT in pre-norm blocks",
                     ("--encoder-normalize-before", "--decoder-normalize-before")),
    "vanilla+prenorm": ("vanilla", "vanilla attention in pre-norm blocks (the baseline of pre-norm E-ATT)",
                        ("--encoder-normalize-before", "--decoder-normalize-before")),
    "eatt+authors-attention": ("eatt", "the authors' attention (tau = 0, Q/K of d/h, their scales and "
                                       "initialization) in the paper's post-norm blocks",
                               ("--eatt-threshold", "0", "--eatt-qk-dim", "head-dim",
                                "--eatt-cross-score-scale", "head-dim", "--eatt-init", "authors")),
    "eatt+learn-tau": ("eatt", "learned per-feature thresholds, starting at tau = 1",
                       ("--eatt-learn-threshold", "true")),
    "eatt+module-norm": ("eatt", "the module-owned learnable layer norm of the authors' code, tau = 0",
                         ("--eatt-module-norm", "learnable", "--eatt-threshold", "0")),
    "eatt+cross-tau0": ("eatt", "tau = 0 in cross-attention only (its keys are the sparsest codes at tau = 1)",
                        ("--eatt-threshold", "1,1,0")),
    "eatt+temperature": ("eatt", "a learned temperature per head on the L1 scores",
                         ("--eatt-learn-temperature", "true")),
    "eatt+authors+levers": ("eatt", "the authors' recipe with learned thresholds and temperatures",
                            ("--eatt-recipe", "authors", "--eatt-learn-threshold", "true",
                             "--eatt-learn-temperature", "true")),
}
_PRENORM = ("--encoder-normalize-before", "--decoder-normalize-before")
# The levers again at the longer budget, in pre-norm blocks, and the two roads from a vanilla model:
# distillation (the run trains on the vanilla teacher's translations: ROADS) and conversion (study-convert).
# In a pre-norm block fairseq's layer norm before the attention is the authors' module-owned norm, so "the
# module-owned norm at tau 0" is tau 0 in pre-norm blocks.
LONG_STUDY_CONFIGS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "eatt+prenorm+tau0": ("eatt", "pre-norm blocks with tau = 0: the module-owned norm of the authors' code (the "
                                  "block's own layer norm) binarized at 0", _PRENORM + ("--eatt-threshold", "0")),
    "eatt+prenorm+temperature": ("eatt", "pre-norm blocks, a learned temperature per head on the L1 scores",
                                 _PRENORM + ("--eatt-learn-temperature", "true")),
    "eatt+prenorm+cross-tau0": ("eatt", "pre-norm blocks, tau = 0 in cross-attention only",
                                _PRENORM + ("--eatt-threshold", "1,1,0")),
    "eatt+prenorm+kd": ("eatt", "pre-norm E-ATT trained on the vanilla pre-norm teacher's beam-search translations "
                                "of the training set (sequence-level distillation), same seed", _PRENORM),
    "vanilla+prenorm+kd": ("vanilla", "pre-norm vanilla trained on the same distilled data (the student's "
                                      "baseline)", _PRENORM),
    "eatt+prenorm+convert": ("eatt", "E-ATT converted from the trained vanilla pre-norm model of the same seed "
                                     "(fairseq-eatt-convert), then fine-tuned", _PRENORM),
}
TEACHER_CONFIG = "vanilla+prenorm"  # the vanilla model distillation translates with and conversion starts from
# road of a configuration: "kd" trains on the teacher's translations, "convert" starts from the converted teacher
ROADS = {"eatt+prenorm+kd": "kd", "vanilla+prenorm+kd": "kd", "eatt+prenorm+convert": "convert"}
# fine-tuning updates at which a converted model is scored (0: as converted); the last is the budget
CONVERT_POINTS = {"small": (0, 250, 500, 1000, 2000), "paper": (0, 2500, 5000, 10000, 20000)}
STUDY_LONG_UPDATES = 4000  # the longer budget of the study at small scale (paper scale keeps its own budget)
STUDY_CURVE_EVERY = {"small": 500, "paper": 5000}  # dev BLEU along the way: checkpoints this many updates apart
# hybrids whose cross-attention codes the diagnostics compare (Table 6: E-ATT cross-attention is weak next to
# vanilla self-attention, strong next to RandInit self-attention)
STUDY_HYBRIDS = ("vanilla-vanilla-eatt", "eatt-eatt-vanilla", "synth_random-synth_random-eatt")
STUDY_LONG_DEFAULT = ("eatt+authors",)  # configurations trained at the longer budget besides vanilla and E-ATT

# The survey's techniques on vanilla and on E-ATT, under the plugin's default E-ATT recipe:
# tag -> (variant, what it adds, model flags); the runs without a technique are the recipe's vanilla and E-ATT.
_PRUNE = ("--prune-layer", "1", "--prune-keep-ratio", "0.7")
_EXIT = ("--early-exit",)
TECHNIQUE_CONFIGS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    **{f"{v}+ternary": (v, "ternary weights (2 bits, TWN threshold, per-channel scales) in attention and "
                           "feed-forward layers", ("--weight-bits", "2")) for v in ("vanilla", "eatt")},
    **{f"{v}+binary": (v, "binary weights (1 bit, XNOR scales) in attention and feed-forward layers",
                       ("--weight-bits", "1")) for v in ("vanilla", "eatt")},
    **{f"{v}+prune": (v, "encoder token pruning after layer 1, 70% of the source tokens kept (importance: the "
                         "attention each token receives)", _PRUNE) for v in ("vanilla", "eatt")},
    **{f"{v}+exit": (v, "depth-adaptive decoder: an exit at every decoder layer (shared output layer), trained "
                        "with every layer's loss", _EXIT) for v in ("vanilla", "eatt")},
}


@dataclass(frozen=True)
class RunSpec:
    task: str
    scale: str
    encoder_self: str
    decoder_self: str
    decoder_cross: str
    seed: int
    tag: str = ""  # a study configuration (STUDY_CONFIGS) whose model flags the run adds
    options: Tuple[str, ...] = ()  # its model flags, part of the run's identity
    recipe: str = "paper"  # --eatt-recipe: E-ATT's option defaults and the blocks of the whole model
    # "" or the run it is built from: "kd:<teacher run>.<hash>" (trains on its translations) or
    # "convert:<source run>.<hash>" (fine-tunes its converted model); part of the run's identity
    origin: str = ""

    @property
    def name(self) -> str:
        label = f"+{self.tag.split('+', 1)[1]}" if "+" in self.tag else ""
        label += recipe_label(self.recipe)
        return f"{self.encoder_self}-{self.decoder_self}-{self.decoder_cross}{label}.seed{self.seed}"

    @property
    def attention(self) -> Dict[str, str]:
        return {"encoder_self": self.encoder_self, "decoder_self": self.decoder_self,
                "decoder_cross": self.decoder_cross}


def uniform(task: str, scale: str, variant: str, seed: int) -> RunSpec:
    return RunSpec(task, scale, variant, variant, variant, seed)


def study_run(task: str, scale: str, config: str, seed: int) -> RunSpec:
    """``config``: a variant (everywhere, the paper's settings), ENC-DEC-CROSS variants, or a STUDY_CONFIGS or
    TECHNIQUE_CONFIGS tag."""
    tagged = {**STUDY_CONFIGS, **LONG_STUDY_CONFIGS, **TECHNIQUE_CONFIGS}
    if config in tagged:
        variant, _, flags = tagged[config]
        return RunSpec(task, scale, variant, variant, variant, seed, tag=config, options=flags)
    parts = config.split("-")
    if len(parts) == 3:
        return RunSpec(task, scale, *parts, seed)
    return uniform(task, scale, config, seed)


def study_configs(names: Optional[str], recipe: str) -> List[str]:
    """The configurations of the study recipes: ``study`` trains all of them (650 updates), ``study-long``
    vanilla, E-ATT and STUDY_LONG_DEFAULT; ``--configs`` chooses others."""
    if names:
        chosen = [n.strip() for n in names.split(",") if n.strip()]
        variants = set(available_attentions())
        if recipe == "techniques":
            valid = ["vanilla", "eatt", *TECHNIQUE_CONFIGS]
        elif recipe == "study-convert":
            valid = [c for c, road in ROADS.items() if road == "convert"]
        elif recipe == "study-long":
            valid = ["vanilla", "eatt", *STUDY_CONFIGS, *(c for c in LONG_STUDY_CONFIGS if ROADS.get(c) != "convert")]
        else:
            valid = ["vanilla", "eatt", *STUDY_CONFIGS]
        unknown = [n for n in chosen if n not in valid and not (len(n.split("-")) == 3
                                                                and set(n.split("-")) <= variants)]
        if unknown:
            raise ValueError(f"--configs: unknown configuration {', '.join(unknown)}; valid: {', '.join(valid)}, "
                             f"or three variants ENC-DEC-CROSS (e.g. vanilla-vanilla-eatt)")
        return chosen
    if recipe == "study-long":
        return ["vanilla", "eatt", *STUDY_LONG_DEFAULT]
    if recipe == "study-convert":
        return [c for c, road in ROADS.items() if road == "convert"]
    if recipe == "techniques":
        return ["vanilla", "eatt", *TECHNIQUE_CONFIGS]
    if recipe == "study-diagnose":
        return ["vanilla", "eatt", *STUDY_CONFIGS, *STUDY_HYBRIDS]
    return ["vanilla", "eatt", *STUDY_CONFIGS]


def default_tasks(recipe: str, scale: str) -> List[str]:
    if scale == "small":
        return [SMALL_TASK]
    return list(PAPER_TASKS) if recipe == "table4" else ["iwslt15-en-vi"]  # Tables 5, 6: En-Vi in the paper


def default_seeds(recipe: str, scale: str) -> List[int]:
    if recipe in ("table4", "figure3"):  # Figure 3 measures every E-ATT seed of Table 4
        return [1, 2, 3, 4, 5] if scale == "paper" else [1, 2, 3]
    return [1]


def runs_for(recipe: str, scale: str, tasks: Sequence[str], seeds: Sequence[int],
             configs: Optional[str] = None) -> List[RunSpec]:
    runs: List[RunSpec] = []
    for task in tasks:
        for seed in seeds:
            if recipe in ("study", "study-long", "study-convert", "study-diagnose", "techniques"):
                runs += [study_run(task, scale, c, seed) for c in study_configs(configs, recipe)]
            elif recipe == "table4":
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

"""Is a difference between two systems real? Two tests, and the marks every comparing table uses.

- Across seeds: the mean of the per-seed differences (system minus baseline, same seed) with a Student-t 95%
  interval (n - 1 degrees of freedom). Needs two or more seeds run by both systems.
- Within a seed: sacreBLEU's paired bootstrap resampling (``sacrebleu.significance.PairedTest``, test type
  ``bs``) on the two systems' detokenized hypotheses of the same sentences, for BLEU and chrF. Needs the
  hypotheses, which each run keeps beside its JSON (:func:`hypotheses_path`).

A difference is a finding only where a test says so: the interval excludes 0, or the bootstrap's p < 0.05. A
difference no test could check (one seed, no hypotheses kept) is marked untested, never as a finding.
"""
import gzip
import math
import os
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for the paired bootstrap
SIGNIFICANT, NOT_SIGNIFICANT, UNTESTED = "", " (n.s.)", " (untested)"
LEGEND = ("Differences: 95% interval of the mean of per-seed paired differences (Student t) where two or more "
          "seeds exist; otherwise sacreBLEU's paired bootstrap (1,000 resamples, p < 0.05) where both runs kept "
          "their hypotheses. **(n.s.)**: not significant; **(untested)**: one seed and no kept hypotheses, so no "
          "test is possible. Only unmarked differences are findings.")


class SignificanceError(ValueError):
    """Hypotheses that cannot be compared: other sentences, other counts, a missing file."""


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t critical value with ``df`` degrees of freedom."""
    from scipy.stats import t

    if df < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, got {df}")
    return float(t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class SeedDifference:
    """The mean of per-seed differences (system - baseline) and its interval (None with one seed)."""

    seeds: tuple
    differences: tuple
    mean: float
    low: Optional[float]
    high: Optional[float]

    @property
    def significant(self) -> Optional[bool]:
        return None if self.low is None else not (self.low <= 0.0 <= self.high)

    @property
    def mark(self) -> str:
        return UNTESTED if self.low is None else SIGNIFICANT if self.significant else NOT_SIGNIFICANT

    def text(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def seed_difference(system: Dict[int, float], baseline: Dict[int, float],
                    confidence: float = CONFIDENCE) -> Optional[SeedDifference]:
    """Paired by seed: only seeds both systems ran count. None if they share no seed."""
    seeds = tuple(sorted(set(system) & set(baseline)))
    if not seeds:
        return None
    diffs = tuple(system[s] - baseline[s] for s in seeds)
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return SeedDifference(seeds, diffs, mean, None, None)
    half = t_quantile(len(diffs) - 1, confidence) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return SeedDifference(seeds, diffs, mean, mean - half, mean + half)


@dataclass(frozen=True)
class BootstrapResult:
    """sacreBLEU's paired bootstrap of one metric: both scores, the system's 95% half-width, the p-value."""

    metric: str
    baseline: float
    system: float
    system_ci: float
    p_value: float
    samples: int

    @property
    def difference(self) -> float:
        return self.system - self.baseline

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def text(self) -> str:
        return f"{self.difference:+.2f} (p = {self.p_value:.3f})"


def paired_bootstrap(system: Sequence[str], baseline: Sequence[str], references: Sequence[str],
                     tokenize: str = "13a", samples: int = BOOTSTRAP_SAMPLES) -> Dict[str, BootstrapResult]:
    """BLEU and chrF of ``system`` against ``baseline`` on the same sentences, by sacreBLEU's paired bootstrap
    (seeded by sacreBLEU: ``SACREBLEU_SEED``, default 12345, so a rerun gives the same p-values)."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    if not (len(system) == len(baseline) == len(references)):
        raise SignificanceError(f"paired bootstrap needs the same sentences: {len(system)} system, {len(baseline)} "
                                f"baseline hypotheses, {len(references)} references")
    if not references:
        raise SignificanceError("paired bootstrap needs at least one sentence")
    metrics = {"BLEU": BLEU(tokenize=tokenize), "chrF": CHRF()}
    test = PairedTest([("baseline", list(baseline)), ("system", list(system))], metrics, [list(references)],
                      test_type="bs", n_samples=samples)
    _, scores = test()
    out = {}
    scored = [key for key in scores if key != "System"]  # sacreBLEU's names: BLEU, chrF2, in our order
    for name, key in zip(metrics, scored):
        base, sys_ = scores[key]
        # sacreBLEU's p is (count + 1) / (samples + 1): 0.001 for two systems of equal sentence statistics (e.g.
        # identical ones), but no difference at all is no evidence of one
        p_value = 1.0 if sys_.score == base.score else float(sys_.p_value)
        out[name] = BootstrapResult(name, float(base.score), float(sys_.score), float(sys_.ci), p_value, samples)
    return out


# ---- where a run keeps its hypotheses: beside its JSON, so anyone can re-score them
def hypotheses_path(result_json: str, split: str) -> str:
    """``<run>.json`` -> ``<run>.<split>.hyp.gz`` (one detokenized hypothesis per line, in corpus order)."""
    stem = result_json[:-len(".json")] if result_json.endswith(".json") else result_json
    return f"{stem}.{split}.hyp.gz"


def references_path(result_json: str, split: str) -> str:
    """The references every run of a folder is scored against: ``references.<split>.txt.gz`` beside them."""
    return os.path.join(os.path.dirname(result_json), f"references.{split}.txt.gz")


def write_lines_gz(path: str, lines: Sequence[str]):
    """Gzipped lines, written atomically and byte-identical on a rerun (no time stamp in the header)."""
    partial = path + ".partial"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
        handle.write(("".join(line + "\n" for line in lines)).encode("utf-8"))
    os.replace(partial, path)


def read_lines_gz(path: str) -> List[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def keep_hypotheses(result_json: str, split: str, hypotheses: Sequence[str], references: Sequence[str]):
    """Store a run's hypotheses of ``split`` and, once per folder, the references; references that differ from
    the folder's are an error (the runs of one folder must be scored on the same sentences)."""
    if len(hypotheses) != len(references):
        raise SignificanceError(f"{result_json}: {len(hypotheses)} {split} hypotheses for {len(references)} "
                                f"references")
    refs_path = references_path(result_json, split)
    if os.path.exists(refs_path):
        if read_lines_gz(refs_path) != list(references):
            raise SignificanceError(f"{refs_path}: other {split} references than those {result_json} was scored "
                                    f"against; keep runs of other data in another folder")
    else:
        write_lines_gz(refs_path, references)
    write_lines_gz(hypotheses_path(result_json, split), hypotheses)


def kept_hypotheses(run: Dict, split: str) -> Optional[List[str]]:
    """The hypotheses a loaded run (with its ``_path``) kept, or None."""
    path = hypotheses_path(run["_path"], split)
    return read_lines_gz(path) if os.path.exists(path) else None


def compare_runs(system: Dict, baseline: Dict, split: str = "test") -> Optional[Dict[str, BootstrapResult]]:
    """The paired bootstrap of two loaded runs of one folder, or None where either kept no hypotheses."""
    hyps, base = kept_hypotheses(system, split), kept_hypotheses(baseline, split)
    refs_path = references_path(system["_path"], split)
    if hyps is None or base is None or not os.path.exists(refs_path):
        return None
    if references_path(baseline["_path"], split) != refs_path and \
            read_lines_gz(references_path(baseline["_path"], split)) != read_lines_gz(refs_path):
        raise SignificanceError(f"{system['_path']} and {baseline['_path']} were scored on other {split} sentences")
    tokenize = "none" if "tok:none" in system[split].get("signature", "") else "13a"
    return paired_bootstrap(hyps, base, read_lines_gz(refs_path), tokenize=tokenize)


@dataclass(frozen=True)
class Verdict:
    """How a table shows one system's difference to its baseline: the text and whether it is a finding."""

    text: str
    mark: str  # SIGNIFICANT, NOT_SIGNIFICANT or UNTESTED
    seeds: Optional[SeedDifference] = None
    bootstrap: Optional[Dict[str, BootstrapResult]] = None

    @property
    def cell(self) -> str:
        return self.text + self.mark

    @property
    def finding(self) -> bool:
        return self.mark == SIGNIFICANT


def verdict(system: Sequence[Dict], baseline: Sequence[Dict], split: str = "test") -> Optional[Verdict]:
    """The difference of ``system``'s runs to ``baseline``'s on ``split`` BLEU: across their shared seeds where
    there are two or more, else the bootstrap of their one shared seed where both kept hypotheses, else
    untested. None if they share no seed."""
    sys_by_seed = {r["seed"]: r for r in system}
    base_by_seed = {r["seed"]: r for r in baseline}
    seeds = seed_difference({s: r[split]["bleu"] for s, r in sys_by_seed.items()},
                            {s: r[split]["bleu"] for s, r in base_by_seed.items()})
    if seeds is None:
        return None
    if seeds.low is not None:
        return Verdict(seeds.text(), seeds.mark, seeds)
    seed = seeds.seeds[0]
    boot = compare_runs(sys_by_seed[seed], base_by_seed[seed], split)
    if boot is None:
        return Verdict(seeds.text(), UNTESTED, seeds)
    bleu = boot["BLEU"]
    return Verdict(f"{seeds.mean:+.2f} (p = {bleu.p_value:.3f}; chrF {boot['chrF'].difference:+.2f}, "
                   f"p = {boot['chrF'].p_value:.3f})", SIGNIFICANT if bleu.significant else NOT_SIGNIFICANT,
                   seeds, boot)

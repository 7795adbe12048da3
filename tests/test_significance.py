"""Significance of differences (fairseq_eatt/experiments/significance.py) on made-up hypotheses with known answers."""
import gzip
import json
import os
import random

import pytest

from fairseq_eatt.experiments import significance as S

# Student t, two-sided 95%: t(0.975; 2) = 4.302653, t(0.975; 4) = 2.776445 (standard tables)
T2, T4 = 4.302653, 2.776445


def corpus(n=300, seed=0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(400)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def garbled(lines, seed=1):
    """About one word in four replaced, at random places: clearly worse than the references."""
    rng = random.Random(seed)
    return [" ".join(f"x{rng.randint(0, 999)}" if rng.random() < 0.25 else t for t in line.split())
            for line in lines]


def test_seed_difference_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, half-width t(2) / sqrt(3) = 2.484
    d = S.seed_difference({1: 11.0, 2: 12.0, 3: 13.0}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert d.seeds == (1, 2, 3) and d.differences == (1.0, 2.0, 3.0)
    assert d.mean == pytest.approx(2.0)
    assert d.low == pytest.approx(2.0 - T2 / 3 ** 0.5, abs=1e-5)
    assert d.high == pytest.approx(2.0 + T2 / 3 ** 0.5, abs=1e-5)
    assert d.significant is False  # the interval holds 0
    assert d.text() == "+2.00 [-0.48, +4.48]"


def test_seed_difference_consistent_gap_is_significant():
    # -2.0, -2.1, -1.9: sd 0.1, half-width 0.248: the interval excludes 0
    d = S.seed_difference({1: 33.0, 2: 32.9, 3: 33.1}, {1: 35.0, 2: 35.0, 3: 35.0})
    assert d.mean == pytest.approx(-2.0)
    assert d.high == pytest.approx(-2.0 + T2 * 0.1 / 3 ** 0.5, abs=1e-5)
    assert d.significant is True


def test_seed_difference_pairs_by_seed_only():
    # seed 4 of the system and seed 9 of the baseline have no partner; five pairs remain
    sys_ = {s: 20.0 + s for s in range(1, 6)} | {4: 30.0, 9: 0.0}
    base = {s: 20.0 for s in range(1, 6)} | {9: 50.0}
    d = S.seed_difference({k: v for k, v in sys_.items() if k != 9}, base)
    assert d.seeds == (1, 2, 3, 4, 5)
    diffs = [1.0, 2.0, 3.0, 10.0, 5.0]
    assert d.mean == pytest.approx(sum(diffs) / 5)
    mean = sum(diffs) / 5
    sd = (sum((x - mean) ** 2 for x in diffs) / 4) ** 0.5
    assert d.high - d.mean == pytest.approx(T4 * sd / 5 ** 0.5, abs=1e-5)
    assert S.seed_difference({1: 1.0}, {2: 1.0}) is None


def test_one_seed_has_no_interval():
    d = S.seed_difference({1: 21.0}, {1: 20.0})
    assert d.low is None and d.significant is None and d.text() == "+1.00"


def test_bootstrap_perfect_system_beats_garbled_one():
    refs = corpus()
    out = S.paired_bootstrap(refs, garbled(refs), refs)
    assert set(out) == {"BLEU", "chrF"}
    assert out["BLEU"].system == pytest.approx(100.0)
    assert out["chrF"].system == pytest.approx(100.0)
    assert out["BLEU"].difference > 30 and out["chrF"].difference > 20
    assert out["BLEU"].significant and out["BLEU"].p_value == pytest.approx(1 / 1001)  # no resample reverses it


def test_bootstrap_two_draws_of_one_noise_are_not_different():
    # two systems damaged the same way at other random places: better on some sentences, worse on others
    refs = corpus()
    out = S.paired_bootstrap(garbled(refs, seed=2), garbled(refs, seed=1), refs)
    assert 0 < abs(out["BLEU"].difference) < 2.0
    assert not out["BLEU"].significant and out["BLEU"].p_value > 0.05
    assert not out["chrF"].significant


def test_bootstrap_identical_systems_are_not_different():
    refs = corpus()
    out = S.paired_bootstrap(garbled(refs), garbled(refs), refs)
    assert out["BLEU"].difference == 0 and out["BLEU"].p_value == 1.0 and not out["BLEU"].significant


def test_bootstrap_is_reproducible():
    refs = corpus()
    system = garbled(refs, seed=3)
    system[:150] = refs[:150]
    a = S.paired_bootstrap(system, garbled(refs), refs)
    b = S.paired_bootstrap(system, garbled(refs), refs)
    assert a["BLEU"] == b["BLEU"] and a["chrF"] == b["chrF"]


def test_bootstrap_refuses_other_sentences():
    refs = corpus(20)
    with pytest.raises(S.SignificanceError, match="same sentences"):
        S.paired_bootstrap(refs[:19], refs, refs)


def fake_run(folder, name, seed, bleu, hyps=None, refs=None):
    path = os.path.join(folder, f"{name}.seed{seed}.json")
    run = {"seed": seed, "test": {"bleu": bleu, "signature": "nrefs:1|case:mixed|eff:no|tok:13a"},
           "valid": {"bleu": bleu}, "_path": path}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(run, handle)
    if hyps is not None:
        S.keep_hypotheses(path, "test", hyps, refs)
    return run


def test_keep_hypotheses_round_trip_and_reference_check(tmp_path):
    refs = corpus(30)
    run = fake_run(str(tmp_path), "a", 1, 10.0, garbled(refs), refs)
    assert S.kept_hypotheses(run, "test") == garbled(refs)
    with gzip.open(tmp_path / "references.test.txt.gz", "rt", encoding="utf-8") as handle:
        assert handle.read().splitlines() == refs
    first = (tmp_path / "a.seed1.test.hyp.gz").read_bytes()
    S.keep_hypotheses(run["_path"], "test", garbled(refs), refs)
    assert (tmp_path / "a.seed1.test.hyp.gz").read_bytes() == first  # byte-identical on a rerun
    with pytest.raises(S.SignificanceError, match="other test references"):
        S.keep_hypotheses(run["_path"], "test", garbled(refs), corpus(30, seed=5))
    with pytest.raises(S.SignificanceError, match="29 test hypotheses for 30"):
        S.keep_hypotheses(run["_path"], "test", garbled(refs)[:29], refs)
    assert not list(tmp_path.glob("*.partial"))


def test_verdict_across_seeds_within_a_seed_and_untested(tmp_path):
    refs = corpus()
    folder = str(tmp_path)
    # three seeds each: a consistent gap is a finding, a noisy one is not
    base = [fake_run(folder, "base", s, 35.0) for s in (1, 2, 3)]
    worse = [fake_run(folder, "worse", s, b) for s, b in ((1, 33.0), (2, 32.9), (3, 33.1))]
    noisy = [fake_run(folder, "noisy", s, b) for s, b in ((1, 33.0), (2, 37.0), (3, 34.0))]
    v = S.verdict(worse, base)
    assert v.finding and v.mark == S.SIGNIFICANT and v.cell.startswith("-2.00 [")
    v = S.verdict(noisy, base)
    assert not v.finding and v.cell.endswith(" (n.s.)")
    # one seed without hypotheses: untested, never a finding
    v = S.verdict([fake_run(folder, "single", 1, 20.0)], [base[0]])
    assert v.mark == S.UNTESTED and v.cell == "-15.00 (untested)" and not v.finding
    # one seed with hypotheses: sacreBLEU's paired bootstrap decides
    good = fake_run(folder, "good", 1, 100.0, refs, refs)
    bad = fake_run(folder, "bad", 1, 20.0, garbled(refs), refs)
    v = S.verdict([good], [bad])
    assert v.finding and v.bootstrap["BLEU"].difference > 30 and "chrF" in v.text
    v = S.verdict([fake_run(folder, "other-noise", 1, 20.5, garbled(refs, seed=2), refs)], [bad])
    assert not v.finding and v.mark == S.NOT_SIGNIFICANT
    assert S.verdict([good], [fake_run(folder, "other", 7, 1.0)]) is None  # no shared seed


def test_compare_command_reports_intervals_and_bootstraps(tmp_path, capsys):
    from fairseq_eatt.cli import compare

    refs = corpus()
    folder = str(tmp_path)
    base = [fake_run(folder, "base", 1, 20.0, garbled(refs), refs), fake_run(folder, "base", 2, 21.0)]
    good = [fake_run(folder, "good", 1, 100.0, refs, refs), fake_run(folder, "good", 2, 90.0)]
    compare.main(["--baseline", *[r["_path"] for r in base], "--system", *[r["_path"] for r in good]])
    out = capsys.readouterr().out
    # differences 80 and 69: mean 74.5, sd 7.78, half-width t(2) * 7.78 / sqrt(2) = 69.9
    assert "seeds 1,2: +74.50 [+4.62, +144.38]" in out and "not a finding" not in out
    assert "seed 1: BLEU" in out and "seed 1: chrF" in out and "seed 2: no kept hypotheses" in out
    for argv, message in ((["--baseline", base[0]["_path"], "--system", str(tmp_path / "none.json")], "--system"),
                          (["--baseline", base[0]["_path"], base[0]["_path"], "--system", good[0]["_path"]],
                           "two runs of one seed"),
                          (["--baseline", base[1]["_path"], "--system", fake_run(folder, "x", 5, 1.0)["_path"]],
                           "share no seed")):
        with pytest.raises(SystemExit, match=message):
            compare.main(argv)

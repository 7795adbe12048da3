"""fairseq-eatt-bench runs end to end at a tiny size and writes its report (no timing is asserted)."""
import json
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT

pytestmark = pytest.mark.e2e  # the benchmark trains and decodes real models: make test-e2e / CI


def bench(*args):
    cmd = [sys.executable, "-m", "fairseq_eatt.cli.bench", "--preset", "tiny", "--threads", "1", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def bench_report(demo_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "perf"
    bench("--variants", "eatt,local", "--data", demo_run["data_bin"], "--out", out)
    return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text(), out


def test_merge_re_measures_one_part_and_keeps_the_others(bench_report, demo_run):
    first, _, out = bench_report
    bench("--variants", "eatt,local", "--data", demo_run["data_bin"], "--out", out, "--skip",
          "train,generate,lengths", "--merge", "--op-repeats", "2")
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["train"] == first["train"] and merged["lengths"] == first["lengths"]
    assert merged["scores"] != first["scores"]  # measured again
    assert merged["provenance"]["train"]["command"] == first["command"]
    assert "--merge" in merged["provenance"]["scores"]["command"]
    assert "- scores: `fairseq-eatt-bench" in out.with_suffix(".md").read_text()


def test_bench_measures_every_model_on_the_same_footing(bench_report):
    report, _, _ = bench_report
    for mode, key in (("train", "target_tokens_per_s"), ("generate", "sentences_per_s")):
        assert list(report[mode]) == ["transformer", "vanilla", "eatt", "local"]
        for result in report[mode].values():
            assert len(result[key]) >= 1 and all(v > 0 for v in result[key])
            assert result["peak_rss_mib"] >= result["rss_before_mib"] > 0
            # tiny preset: two rounds, each ratio taken against the transformer of the same round
            assert result["rounds"] == 2 and len(result["ratio_per_round"]) == 2
            assert all(r > 0 for r in result["ratio_per_round"])
        assert report[mode]["transformer"]["ratio_per_round"] == [1.0, 1.0]
    params = {name: r["params"] for name, r in report["train"].items()}
    assert params["transformer"] == params["vanilla"] == params["eatt"]  # same dimensions
    lengths = {tuple(r["mean_output_tokens"]) for r in report["generate"].values()}
    assert len(lengths) == 1  # match_source_len: the same decoding work for every model


def test_bench_reports_scores_and_length_growth(bench_report):
    report, text, _ = bench_report
    for row in report["scores"]:
        assert row["dot_s"]["median"] > 0 and row["l1_reference_s"]["median"] > 0
        # never a buffer of size N x L x L x d, on either path
        assert row["l1_reference_largest_vs_5d"] < 0.5
        if "l1_fast_largest_vs_5d" in row:
            assert row["l1_fast_largest_vs_5d"] < 0.5
    assert set(report["lengths"]) == {"vanilla", "eatt", "local"}
    for section in ("## Targets", "## Training", "## Beam-search generation", "## Score operation alone",
                    "## Growth with sentence length", "vs stock transformer"):
        assert section in text


def test_bench_rejects_bad_input():
    for args, message in ((["--variants", "turbo"], "unknown turbo"), (["--skip", "everything"], "--skip"),
                          (["--repeats", "0"], "--repeats"), (["--rounds", "0"], "--rounds")):
        proc = subprocess.run([sys.executable, "-m", "fairseq_eatt.cli.bench", *args], capture_output=True,
                              text=True, cwd=REPO_ROOT)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-500:]

"""The paper's analyses as tools, on the tiny E-ATT checkpoint of the end-to-end demo run: binarization
statistics (Figure 3), the alignment heat map (Figure 2) and sequence-level distillation (Figure 1)."""
import json
import re
import subprocess
import sys

import pytest

from fairseq_eatt.analysis.binarization import POSITIONS
from fairseq_eatt.analysis import binarization
from fairseq_eatt.fairseq_tools import load_checkpoint

from .helpers import PLUGIN_DIR, REPO_ROOT, fairseq

pytestmark = pytest.mark.e2e  # the analysis commands on a trained checkpoint: make test-e2e / CI


@pytest.fixture(scope="module")
def checkpoint(demo_run):
    (path,) = demo_run["workdir"].glob("checkpoints/*/checkpoint_best.pt")
    return path


def run_tool(module, *args):
    proc = subprocess.run([sys.executable, "-m", f"fairseq_eatt.cli.{module}", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def test_binarization_command_writes_table_json_and_plot(demo_run, checkpoint, tmp_path):
    out = tmp_path / "fig3"
    rc, log = run_tool("binarization_stats", demo_run["data_bin"], "--path", checkpoint, "--subset", "valid",
                       "--out", out)
    assert rc == 0, log
    table = (tmp_path / "fig3.md").read_text()
    for position in POSITIONS:
        assert position in table
    ratios = json.loads((tmp_path / "fig3.json").read_text())["ratios"]
    assert len(ratios) == 2 * 2 + 2 * 2  # tiny model: 2 encoder + 2 decoder layers; self + cross query/key
    assert all(0.0 < r["ratio"] < 1.0 for r in ratios)
    assert (tmp_path / "fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("threshold,expected", [(1e6, 0.0), (-1e6, 1.0)])
def test_binarization_ratio_follows_the_threshold(demo_run, checkpoint, threshold, expected):
    model, task = load_checkpoint(str(checkpoint), str(demo_run["data_bin"]))
    for module in model.modules():
        if hasattr(module, "track_binarization"):
            module.threshold = threshold
    ratios = binarization.collect(model, task, "valid", 2048).ratios()
    assert ratios and all(r == expected for r in ratios.values())


def test_fairseq_logs_binarization_during_validation(demo_run, tmp_path):
    log = fairseq(
        "train", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, "--arch", "transformer_eatt_tiny",
        "--decoder-self-attention", "vanilla", "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "2048",
        "--max-update", "2", "--save-dir", tmp_path, "--no-save", "--log-format", "simple", "--num-workers", "0",
    )
    valid = [line for line in log.splitlines() if "valid on 'valid' subset" in line]
    assert valid, log[-2000:]
    for key in ("binz_encoder_self_L1", "binz_encoder_self_L2", "binz_cross_query_L2", "binz_cross_key_L1"):
        value = re.search(key + r" ([0-9.]+)", valid[-1])
        assert value and 0.0 <= float(value.group(1)) <= 1.0, valid[-1]
    assert "binz_decoder_self" not in valid[-1]  # vanilla there: nothing binarized


@pytest.mark.parametrize("layer", ["mean", "all", "2"])
def test_heatmap_command_writes_png(demo_run, checkpoint, tmp_path, layer):
    out = tmp_path / f"heat-{layer}.png"
    rc, log = run_tool("heatmap", demo_run["data_bin"], "--path", checkpoint, "--source", "A dog runs on the grass.",
                       "--target", "Ein Hund rennt auf dem Gras.", "--tokenize", "moses", "--bpe-codes",
                       demo_run["codes"], "--layer", layer, "--out", out)
    assert rc == 0, log
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = re.search(r"(\d+) panel", log).group(1)
    assert panels == ("2" if layer == "all" else "1")


def test_heatmap_refuses_a_missing_layer(demo_run, checkpoint, tmp_path):
    rc, log = run_tool("heatmap", demo_run["data_bin"], "--path", checkpoint, "--source", "a", "--target", "b",
                       "--layer", "7", "--out", tmp_path / "x.png")
    assert rc != 0 and "--layer 7: the decoder has layers 1..2" in log
    assert not (tmp_path / "x.png").exists()


def test_distillation_workflow(demo_run, checkpoint, tmp_path):
    rc, log = run_tool(
        "distill", demo_run["data_bin"], "--teacher", checkpoint, "--workdir", tmp_path, "--source-lang", "en",
        "--target-lang", "de", "--student-dims", "32,16", "--student-layers", "1", "--teacher-beam", "2",
        "--beam", "2", "--train-args",
        "--optimizer adam --lr 0.002 --max-tokens 2048 --max-update 3 --share-all-embeddings --num-workers 0",
    )
    assert rc == 0, log[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    students = summary["students"]
    assert [s["dim"] for s in students] == [32, 16]
    assert all(s["bleu"] is not None for s in students)
    assert students[0]["params"] > students[1]["params"]
    # the distilled training set has one teacher translation per training sentence
    n_train = sum(1 for _ in open(demo_run["workdir"] / "bpe300" / "train.de", encoding="utf-8"))
    n_distilled = sum(1 for _ in open(tmp_path / "distilled-text" / "train.de", encoding="utf-8"))
    assert n_distilled == n_train
    assert all(s["length_ratio"] > 0 for s in students)
    assert summary["teacher_test"]["bleu"] is not None and (tmp_path / "teacher-test.out").exists()
    # degenerate teacher translations (over 1.5 n + 10 tokens) were replaced by their references, and counted
    record = summary["distillation"]
    assert record["sentences"] == n_train and (record["max_len_a"], record["max_len_b"]) == (1.5, 10)
    teacher = (tmp_path / "teacher-train.out").read_text(encoding="utf-8").splitlines()
    src = {int(line.split("\t")[0][2:]): line.split("\t")[1] for line in teacher if line.startswith("S-")}
    hyp = {int(line.split("\t")[0][2:]): line.split("\t")[2] for line in teacher if line.startswith("H-")}
    ref = {int(line.split("\t")[0][2:]): line.split("\t")[1] for line in teacher if line.startswith("T-")}
    targets = (tmp_path / "distilled-text" / "train.de").read_text(encoding="utf-8").splitlines()
    over = [i for i in sorted(src) if len(hyp[i].split()) > 1.5 * len(src[i].split()) + 10]
    assert record["reference_fallbacks"] == len(over)
    for i, target in zip(sorted(src), targets):
        assert target == (ref[i] if i in over else hyp[i])

    # other distillation settings on the same folders: refused with the difference named, nothing rewritten
    before = (tmp_path / "summary.json").stat().st_mtime_ns
    rc, log = run_tool("distill", demo_run["data_bin"], "--teacher", checkpoint, "--workdir", tmp_path,
                       "--source-lang", "en", "--target-lang", "de", "--student-dims", "32", "--teacher-beam", "2",
                       "--teacher-max-len-a", "2")
    assert rc != 0 and "other distillation settings (max_len_a: 1.5 there, 2.0 now)" in log, log[-2000:]
    assert (tmp_path / "summary.json").stat().st_mtime_ns == before


def test_degenerate_teacher_translations_keep_their_reference():
    from fairseq_eatt.experiments.distill import choose_targets

    sources = {0: "a b", 1: "a b c d", 2: "x"}
    hyps = {0: "p q", 1: "r " * 17, 2: "s " * 12}
    refs = {0: "R0", 1: "R1", 2: "R2"}
    targets, fallbacks = choose_targets(sources, hyps, refs, 1.5, 10)  # bounds: 13, 16, 11.5 tokens
    assert targets == {0: "p q", 1: "R1", 2: "R2"} and fallbacks == 2
    targets, fallbacks = choose_targets(sources, hyps, refs, 2.0, 10)  # bounds: 14, 18, 12 tokens
    assert targets == {0: "p q", 1: hyps[1], 2: hyps[2]} and fallbacks == 0

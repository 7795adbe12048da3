"""fairseq-eatt-diagnose and the statistics behind it, on tiny models whose answers are known."""
import json
import math
import subprocess
import sys

import pytest
import torch
from fairseq import tasks

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.analysis.diagnostics import Diagnostics

from .helpers import REPO_ROOT, parse_train_args


def tiny_model(dict_dir, *extra):
    args = parse_train_args(dict_dir, "--arch", "transformer_eatt_tiny", "--dropout", "0", *extra)
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    return task.build_model(args).eval(), task


def batch(task, pad_first_sentence=2):
    torch.manual_seed(3)
    src = torch.randint(4, len(task.source_dictionary), (3, 6))
    tgt = torch.randint(4, len(task.target_dictionary), (3, 5))
    src[0, :pad_first_sentence] = task.source_dictionary.pad()  # left-padded source
    tgt[1, -2:] = task.target_dictionary.pad()  # right-padded target
    return src, (src != task.source_dictionary.pad()).sum(1), tgt


def run(model, task, src, lengths, tgt):
    diag = Diagnostics(model)
    diag.run_batch(src, lengths, tgt, task.source_dictionary.pad(), task.target_dictionary.pad())
    diag.close()
    return {(r["position"], r["layer"]): r for r in diag.summary()}


def test_codes_under_a_threshold_no_input_reaches_are_dead_and_attention_is_uniform(dict_dir):
    model, task = tiny_model(dict_dir, "--eatt-threshold", "1e9")
    rows = run(model, task, *batch(task))
    assert len(rows) == 2 + 2 + 2
    for key, row in rows.items():
        assert row["variant"] == "eatt"
        for side in ("query_codes", "key_codes"):
            codes = row[side]
            assert codes["nonzero_ratio"] == 0.0 and codes["dead_features"] == codes["features"] == 64
            assert codes["saturated_features"] == 0
            assert codes["mean_hamming_fraction"] == 0.0
            assert codes["distinct_code_fraction"] < 0.5  # one code for every token of a sentence
        # all scores tie: every query attends uniformly to the keys it may see
        assert row["relative_entropy"] == pytest.approx(1.0)
        assert row["attention_vs_key_ones_r"] is None  # no variation in the ones to correlate with


def test_codes_over_a_threshold_every_input_passes_are_saturated(dict_dir):
    model, task = tiny_model(dict_dir, "--eatt-threshold=-1e9")
    for row in run(model, task, *batch(task)).values():
        assert row["key_codes"]["saturated_features"] == 64 and row["key_codes"]["nonzero_ratio"] == 1.0


def test_nonzero_ratio_and_entropy_leave_padding_out(dict_dir):
    model, task = tiny_model(dict_dir, "--eatt-threshold", "0.3")
    src, lengths, tgt = batch(task, pad_first_sentence=2)
    rows = run(model, task, src, lengths, tgt)
    # the same sentences with more left padding on the source: nothing changes
    pad = task.source_dictionary.pad()
    wider = torch.cat([torch.full((3, 3), pad), src], dim=1)
    wider_rows = run(model, task, wider, lengths, tgt)
    for key, row in rows.items():
        other = wider_rows[key]
        for side in ("query_codes", "key_codes"):
            assert other[side]["nonzero_ratio"] == pytest.approx(row[side]["nonzero_ratio"], abs=1e-6)
        assert other["relative_entropy"] == pytest.approx(row["relative_entropy"], abs=1e-5)
        assert other["max_weight"] == pytest.approx(row["max_weight"], abs=1e-5)


def test_the_nonzero_ratio_is_that_of_the_modules_own_codes(dict_dir):
    model, task = tiny_model(dict_dir, "--eatt-threshold", "0.3", "--eatt-recipe", "paper")  # post-norm blocks
    src, lengths, tgt = batch(task, pad_first_sentence=0)
    rows = run(model, task, src, lengths, tgt)
    with torch.no_grad():
        x = model.encoder.forward_embedding(src)[0].transpose(0, 1)  # the first layer's input (post-norm)
    expected = float((x > 0.3).float().mean())
    assert rows[("encoder_self", 1)]["query_codes"]["nonzero_ratio"] == pytest.approx(expected, abs=1e-6)


def test_vanilla_reports_attention_only(dict_dir):
    model, task = tiny_model(dict_dir, "--encoder-self-attention", "vanilla", "--decoder-self-attention", "vanilla",
                             "--decoder-cross-attention", "vanilla")
    rows = run(model, task, *batch(task))
    for row in rows.values():
        assert "key_codes" not in row
        assert 0.0 < row["relative_entropy"] <= 1.0 + 1e-9
        assert 1.0 / 6 - 1e-9 <= row["max_weight"] <= 1.0
        assert len(row["entropy_per_head"]) == 2
    # the model still computes what it did (hooks removed)
    assert not any(m._forward_hooks for m in model.modules())


def test_correlation_follows_keys_with_more_ones():
    """A direct check of the statistic: when attention grows with the ones of a key, r is near 1."""
    from fairseq_eatt.analysis.diagnostics import _Module

    stats = _Module("eatt", heads=1)
    ones = torch.tensor([[1.0, 3.0, 5.0, 7.0]])
    weights = (ones / ones.sum()).view(1, 1, 1, 4).expand(1, 1, 2, 4)  # attention proportional to the ones
    real_q, real_k = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    visible = torch.ones(1, 2, 4, dtype=torch.bool)
    stats.add_correlation(weights, visible, real_q, real_k, ones)
    assert stats.corr_sum / stats.corr_count == pytest.approx(1.0)
    stats = _Module("eatt", heads=1)
    stats.add_correlation(weights, visible, real_q, real_k, -ones)
    assert stats.corr_sum / stats.corr_count == pytest.approx(-1.0)
    stats.add_weights(weights, visible, real_q)
    expected = -(weights[0, 0, 0] * weights[0, 0, 0].log()).sum() / math.log(4)
    assert stats.summary()["relative_entropy"] == pytest.approx(float(expected), abs=1e-4)


def test_command_writes_markdown_json_and_plot_for_several_checkpoints(demo_run, tmp_path):
    (path,) = demo_run["workdir"].glob("checkpoints/*/checkpoint_best.pt")
    out = tmp_path / "diag"
    cmd = [sys.executable, "-m", "fairseq_eatt.cli.diagnose", str(demo_run["data_bin"]), "--path", f"a={path}",
           "--path", f"b={path}", "--subset", "valid", "--max-sentences", "16", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "diag.md").read_text()
    assert "## a" in text and "## b" in text and "| cross | 2 | eatt |" in text
    payload = json.loads((tmp_path / "diag.json").read_text())
    assert [c["label"] for c in payload["checkpoints"]] == ["a", "b"]
    assert payload["checkpoints"][0]["modules"] == payload["checkpoints"][1]["modules"]
    assert (tmp_path / "diag.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_refuses_a_missing_checkpoint_naming_it(demo_run, tmp_path):
    cmd = [sys.executable, "-m", "fairseq_eatt.cli.diagnose", str(demo_run["data_bin"]), "--path",
           str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--path" in proc.stderr and "none.pt" in proc.stderr
    assert not list(tmp_path.glob("x.*"))

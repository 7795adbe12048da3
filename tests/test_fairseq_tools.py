"""The fairseq plumbing the tools share (fairseq_eatt/fairseq_tools.py)."""
import sys

import pytest

from fairseq_eatt.fairseq_tools import (
    PLUGIN_DIR,
    ToolFailed,
    fairseq_command,
    model_flags,
    optimization_flags,
    read_generate_output,
    run_tool,
    shown,
)

GENERATE = """S-1\tein Hund\nT-1\ta dog\nH-1\t-0.25\ta d@@ og\nD-1\t-0.25\ta dog\nP-1\t-0.1 -0.2
S-0\tzwei\nT-0\ttwo\nH-0\t-0.5\t\nD-0\t-0.5\t
Generate test with beam=4: BLEU4 = 10.00
"""


def test_generate_output_is_read_by_kind_and_sentence():
    lines = GENERATE.splitlines(keepends=True)
    assert read_generate_output(lines) == {1: "a dog", 0: ""}  # an empty hypothesis stays a sentence
    assert read_generate_output(lines, "H") == {1: "a d@@ og", 0: ""}
    assert read_generate_output(lines, "S") == {1: "ein Hund", 0: "zwei"}
    assert read_generate_output(lines, "T") == {1: "a dog", 0: "two"}


def test_a_failing_tool_names_itself_and_leaves_no_partial_output(tmp_path):
    out, log = tmp_path / "out.partial", tmp_path / "log"
    cmd = [sys.executable, "-c", "import sys; print('half'); print('boom', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(ToolFailed, match=r"exited with code 3; see .*log"):
        run_tool(cmd, str(log), echo=False, stdout_path=str(out))
    assert not out.exists() and "boom" in log.read_text()
    run_tool([sys.executable, "-c", "print('whole')"], str(log), echo=False, stdout_path=str(out))
    assert out.read_text() == "whole\n"


def test_commands_and_flags():
    cmd = fairseq_command("generate", ["data", 4])
    assert cmd[:3] == [sys.executable, "-m", "fairseq_cli.generate"] and cmd[3:] == ["data", "4"]
    assert shown(cmd) == "fairseq-generate data 4"
    flags = model_flags("transformer_eatt_tiny", {"decoder_cross": "vanilla"}, "decoder", 0.1)
    assert flags[:2] == ["--user-dir", PLUGIN_DIR]
    assert "--decoder-cross-attention" in flags and "--share-decoder-input-output-embed" in flags
    assert flags[-2:] == ["--dropout", "0.1"]
    with pytest.raises(ValueError, match="shared embeddings must be all or decoder"):
        model_flags("transformer_eatt", shared_embeddings="none")
    opt = optimization_flags(lr=0.1, warmup_updates=2, plateau_updates=4, max_tokens=100, max_update=8, seed=3)
    assert opt[opt.index("--lr-scheduler") + 1] == "eatt" and opt[opt.index("--seed") + 1] == "3"



def test_a_split_the_data_directory_lacks_is_an_error_naming_subset_and_the_splits(tmp_path):
    from fairseq_eatt.fairseq_tools import load_subset

    from .helpers import write_dicts
    from .test_model import build

    write_dicts(tmp_path)
    task, _, _ = build(tmp_path, "--arch", "transformer_eatt_tiny")
    with pytest.raises(ValueError, match=r"--subset valid: no such split in .* \(it has: none\)"):
        load_subset(task, "valid")
    for lang in ("en", "de"):
        (tmp_path / f"train.en-de.{lang}.idx").write_bytes(b"")
    with pytest.raises(ValueError, match=r"--subset test: no such split in .* \(it has: train\)"):
        load_subset(task, "test")

"""Session fixtures shared by the end-to-end tests: one tiny E-ATT run of the real demo pipeline."""
import os
import subprocess
import sys

# Without a GPU, Triton's interpreter runs the Triton kernels on CPU tensors (tests/test_triton_l1.py); it must be on
# before triton is first imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from .helpers import REPO_ROOT, TEST_SENTENCES, multi30k_slice, write_dicts


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo itself, shrunk: prepares the data with the real pipeline, trains E-ATT, generates, scores."""
    root = tmp_path_factory.mktemp("e2e")
    raw = multi30k_slice(str(root / "raw"), {"train": 400, "val": 40, "test_2016_flickr": TEST_SENTENCES})
    workdir = root / "work"
    cmd = [sys.executable, "-m", "fairseq_eatt.cli.demo", "--raw-dir", raw, "--workdir", str(workdir),
           "--bpe-merges", "300", "--arch", "transformer_eatt_tiny", "--max-update", "6", "--max-tokens", "2048",
           "--warmup-updates", "2", "--plateau-updates", "4", "--lr", "0.003"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"workdir": workdir, "stdout": proc.stdout, "data_bin": workdir / "data-bin-bpe300", "raw": raw,
            "codes": workdir / "bpe300" / "codes.en-de"}



@pytest.fixture(scope="session")
def translating_checkpoint(demo_run, tmp_path_factory):
    """The demo's tiny E-ATT trained on its slice for 300 updates: a model whose translations differ across
    sentences (the 6-update demo model's agree trivially), for tests that compare ways of decoding one model."""
    save_dir = tmp_path_factory.mktemp("translating")
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(demo_run["data_bin"]), "--user-dir",
           os.path.join(REPO_ROOT, "fairseq_eatt"), "--task", "translation", "--arch", "transformer_eatt_tiny",
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--optimizer", "adam",
           "--lr", "0.003", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "30", "--max-tokens", "1024",
           "--max-update", "300", "--dropout", "0.1", "--seed", "1", "--num-workers", "0", "--cpu",
           "--disable-validation", "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50",
           "--save-dir", str(save_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return save_dir / "checkpoint_last.pt"



@pytest.fixture(scope="session")
def dict_dir(tmp_path_factory):
    """fairseq dictionaries (en, de) of 40 made-up symbols: enough to build a model without data."""
    d = tmp_path_factory.mktemp("dicts")
    write_dicts(d, vocab_size=40)
    return d

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
def dict_dir(tmp_path_factory):
    """fairseq dictionaries (en, de) of 40 made-up symbols: enough to build a model without data."""
    d = tmp_path_factory.mktemp("dicts")
    write_dicts(d, vocab_size=40)
    return d

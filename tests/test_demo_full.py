"""The full demo at its default settings (about 15 minutes on 2 CPU cores): `pytest -m slow`."""
import json
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT


@pytest.mark.slow
def test_full_demo_learns_to_translate(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fairseq_eatt.cli.demo", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result_file,) = tmp_path.glob("generate/*/result.json")
    result = json.loads(result_file.read_text())
    # a model that learned nothing scores near 0; this is a sanity floor, not the expected value
    assert result["bleu"] > 10.0, result

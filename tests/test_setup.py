"""The set-up behind `make demo` / `make test` is idempotent and keeps the installed torch."""
import os
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT


def test_second_setup_run_reuses_the_environment():
    for _ in range(2):  # the first run brings .venv up to date if setup.py changed since `make`
        proc = subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "setup_env.sh")], capture_output=True,
                              text=True, cwd=REPO_ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ".venv is up to date" in proc.stdout
    assert "installing" not in proc.stdout and "building" not in proc.stdout


def test_environment_pins_its_torch():
    venv = os.path.join(REPO_ROOT, ".venv")
    if not os.path.samefile(sys.prefix, venv):
        pytest.skip("tests are not running inside the repository's .venv")
    import torch

    constraints = open(os.path.join(venv, "eatt-constraints.txt"), encoding="utf-8").read()
    assert constraints.strip() == f"torch=={torch.__version__}"


@pytest.mark.e2e
def test_every_console_script_is_installed_and_answers_help():
    import re

    text = open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8").read()
    scripts = re.findall(r'"(fairseq-eatt-[a-z-]+) = ', text)
    assert {"fairseq-eatt-experiment", "fairseq-eatt-aggregate", "fairseq-eatt-demo"} <= set(scripts)
    bindir = os.path.dirname(sys.executable)
    for name in scripts:
        path = os.path.join(bindir, name)
        assert os.path.exists(path), f"{name} is not installed in {bindir} (pip install -e .)"
        proc = subprocess.run([path, "--help"], capture_output=True, text=True, cwd=REPO_ROOT)
        assert proc.returncode == 0 and "usage" in (proc.stdout + proc.stderr).lower(), name

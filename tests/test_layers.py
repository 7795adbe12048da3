"""The plugin's layers import downward only: the contract in pyproject.toml ([tool.importlinter]) holds, and an
upward import, or a top-level module given no layer, breaks it (so that the check is not kept by accident)."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from .helpers import REPO_ROOT

LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")
BROKEN = re.compile(r"^(\S+) is not allowed to import (\S+):$", re.M)


def lint(root):
    """(exit status, {(lower, higher) layers an import breaks}, output) of import-linter over ``root``'s package
    and pyproject.toml."""
    if not os.path.exists(LINT_IMPORTS):
        pytest.fail(f"{LINT_IMPORTS} not found: install import-linter (scripts/setup_env.sh does)")
    env = dict(os.environ, COLUMNS="250")  # no wrapped lines in the report
    proc = subprocess.run([LINT_IMPORTS, "--no-cache", "--no-logo", os.path.join(root, "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, env=env)
    output = proc.stdout + proc.stderr
    return proc.returncode, set(BROKEN.findall(output)), output


def copy_of_the_package(tmp_path):
    """The package's Python files and pyproject.toml under ``tmp_path``, for an import-linter run of their own."""
    shutil.copy(os.path.join(REPO_ROOT, "pyproject.toml"), tmp_path)
    source = os.path.join(REPO_ROOT, "fairseq_eatt")
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        target = tmp_path / os.path.relpath(folder, REPO_ROOT)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.endswith(".py"):
                shutil.copy(os.path.join(folder, name), target / name)
    return tmp_path / "fairseq_eatt"


def test_the_layers_contract_is_kept():
    code, broken, output = lint(REPO_ROOT)
    assert code == 0 and "1 kept, 0 broken" in output, (
        "imports against the layers of pyproject.toml (lower -> higher): "
        + "; ".join(f"{low} -> {high}" for low, high in sorted(broken)) + "\n" + output[-4000:])


def test_an_upward_import_breaks_the_contract(tmp_path):
    package = copy_of_the_package(tmp_path)
    with open(package / "provenance.py", "a", encoding="utf-8") as handle:
        handle.write("\nfrom . import cli  # noqa: E402,F401  (the bottom layer importing the top one)\n")
    code, broken, output = lint(tmp_path)
    assert code != 0 and ("fairseq_eatt.provenance", "fairseq_eatt.cli") in broken, output[-4000:]


def test_a_module_without_a_layer_breaks_the_contract(tmp_path):
    package = copy_of_the_package(tmp_path)
    (package / "stray.py").write_text('"""A new top-level module that pyproject.toml gives no layer."""\n')
    code, _, output = lint(tmp_path)
    assert code != 0 and "fairseq_eatt.stray" in output, output[-4000:]

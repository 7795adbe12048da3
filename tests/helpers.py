"""Shared test helpers."""
import gzip
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(REPO_ROOT, "fairseq_eatt")
MULTI30K = os.path.join(REPO_ROOT, "data_prep", "multi30k")
TEST_SENTENCES = 24  # test split size of the end-to-end slice


def write_dicts(directory, vocab_size=40, langs=("en", "de")):
    """fairseq dictionaries with made-up symbols, enough to build a model without data."""
    for lang in langs:
        with open(os.path.join(directory, f"dict.{lang}.txt"), "w", encoding="utf-8") as handle:
            for i in range(vocab_size):
                handle.write(f"w{i} {1000 - i}\n")


def multi30k_slice(directory, sizes=None, langs=("en", "de")):
    """The first lines of each shipped Multi30k split, as raw {split}.{lang} files."""
    sizes = sizes or {"train": 400, "val": 40, "test_2016_flickr": 24}
    os.makedirs(directory, exist_ok=True)
    for split, n in sizes.items():
        for lang in langs:
            with gzip.open(os.path.join(MULTI30K, f"{split}.{lang}.gz"), "rt", encoding="utf-8") as src:
                lines = [next(src) for _ in range(n)]
            with open(os.path.join(directory, f"{split}.{lang}"), "w", encoding="utf-8") as out:
                out.writelines(lines)
    return directory


def fairseq(tool, *args, stdin=None):
    """Run a fairseq command line tool with the plugin; fail the test with its output if it fails."""
    cmd = [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        pytest.fail(f"fairseq-{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr

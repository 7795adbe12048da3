"""Shared test helpers."""
import gzip
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fairseq_eatt.data.prepare import SHIPPED_MULTI30K as MULTI30K  # noqa: F401  (the tests' import)
from fairseq_eatt.fairseq_tools import PLUGIN_DIR, REPO_ROOT  # noqa: F401  (the tests' import)

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


def assert_same_on_either_padding_side(module, cross: bool, dim: int = 16):
    """Real positions' outputs do not depend on padding, left (fairseq's default for sources) or right."""
    src, tgt = torch.randn(5, 1, dim), torch.randn(3, 1, dim)
    ref, _ = module(tgt if cross else src, src, src)
    for left in (True, False):
        filler = torch.randn(2, 1, dim) * 50
        padded = torch.cat([filler, src]) if left else torch.cat([src, filler])
        mask = torch.tensor([[True] * 2 + [False] * 5]) if left else torch.tensor([[False] * 5 + [True] * 2])
        out, _ = module(tgt if cross else padded, padded, padded, key_padding_mask=mask)
        real = out if cross else (out[2:] if left else out[:5])
        torch.testing.assert_close(real, ref, rtol=1e-5, atol=1e-5)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces (forward and backward) while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def parse_train_args(data_dir, *extra):
    """fairseq-train's arguments for a plugin model on ``data_dir`` (dictionaries suffice), en -> de."""
    from fairseq import options

    parser = options.get_training_parser()
    argv = [str(data_dir), "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de", *extra]
    return options.parse_args_and_arch(parser, input_args=argv)

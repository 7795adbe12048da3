"""The one backend choice: FAIRSEQ_EATT_BACKEND, the module's offer, the device and dtype, the op counter."""
import dataclasses

import pytest
import torch

from fairseq_eatt.attention import backends
from fairseq_eatt.attention.backends import BACKENDS, counting, select
from fairseq_eatt.attention.functional import l1_kernel

X32 = torch.zeros(1, 2, 3)
X64 = torch.zeros(1, 2, 3, dtype=torch.float64)


def without(monkeypatch, name, reason="not built here"):
    monkeypatch.setitem(BACKENDS, name, dataclasses.replace(BACKENDS[name], unavailable=lambda: reason))


@pytest.fixture(autouse=True)
def auto(monkeypatch):
    for variable in ("FAIRSEQ_EATT_BACKEND", *backends.RETIRED_SETTINGS):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(backends, "_warned", set())


def test_auto_takes_the_compiled_kernel_on_the_cpu_and_the_exact_paths_elsewhere():
    if l1_kernel() is None:
        pytest.skip("the compiled kernel is not built")
    assert select("l1", X32) == "cpp_l1"
    assert select("l1", X64) == "reference"  # the kernel computes in float32
    assert select("attend", X32, ("sdpa",)) == "dense"  # SDPA and Triton only on CUDA by default
    assert select("attend", X32, ("triton_fused",)) == "dense"


def test_the_first_listed_backend_that_applies_is_taken(monkeypatch):
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "reference,sdpa")
    assert select("l1", X32) == "reference"
    assert select("attend", X32, ("sdpa",)) == "sdpa"  # listed: on any device
    assert select("attend", X32, ()) == "dense"  # a module that does not offer it keeps its exact path
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "triton_fused,dense")
    if BACKENDS["triton_fused"].unavailable() is None:
        assert select("attend", X32, ("triton_fused",)) == "triton_fused"
    assert select("attend", X64, ("triton_fused",)) == "dense"  # the dtype guard: float64 is not computed in fp32


def test_a_listed_backend_that_cannot_run_here_is_an_error_naming_it(monkeypatch):
    without(monkeypatch, "cpp_l1")
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "cpp_l1")
    with pytest.raises(RuntimeError, match="FAIRSEQ_EATT_BACKEND lists cpp_l1, which cannot run here: not built"):
        select("l1", X32)


def test_auto_warns_once_and_falls_back_when_the_kernel_is_missing(monkeypatch):
    without(monkeypatch, "cpp_l1")
    with pytest.warns(UserWarning, match="compiled CPU kernel.*not used \\(not built here\\)"):
        assert select("l1", X32) == "reference"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select("l1", X32) == "reference"  # no second warning


def test_the_op_counter_gets_the_countable_paths_whatever_the_setting(monkeypatch):
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "cpp_l1,sdpa,triton_fused")
    with counting():
        assert select("l1", X32) == "reference"
        assert select("attend", X32, ("sdpa", "triton_fused")) == "dense"
    assert select("attend", X32, ("sdpa",)) == "sdpa"


def test_describe_lists_every_backend():
    text = backends.describe()
    assert all(name in text for name in BACKENDS) and "FAIRSEQ_EATT_BACKEND" in text

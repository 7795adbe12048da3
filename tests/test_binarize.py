import math

import pytest
import torch

from fairseq_eatt.attention.functional import binarize


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_forward_is_step_function(tau):
    x = torch.tensor([tau - 2.0, tau - 1e-4, tau, tau + 1e-4, tau + 3.0])
    # f(x) = 1 if x > tau else 0: x == tau maps to 0
    assert binarize(x, tau).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("tau", [0.0, 1.0])
@pytest.mark.parametrize("point", [-1.5, -0.25, 0.0, 0.5, 1.0, 2.0])
def test_backward_is_eq5_surrogate(tau, point):
    x = torch.tensor([point], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([0.7], dtype=torch.float64)
    binarize(x, tau).backward(upstream)
    expected = 0.7 * math.sqrt(2 / math.pi) * math.exp(-2 * (point - tau) ** 2)
    assert x.grad.item() == pytest.approx(expected, rel=1e-12)


def test_surrogate_peaks_at_threshold_and_is_finite_in_low_precision():
    x = torch.tensor([1.0, 1000.0, -1000.0], dtype=torch.bfloat16, requires_grad=True)
    binarize(x, 1.0).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == pytest.approx(math.sqrt(2 / math.pi), rel=1e-2)
    assert x.grad[1].item() == 0.0 and x.grad[2].item() == 0.0


@pytest.mark.parametrize("input_norm", ["none", "static", "learnable"])
def test_self_attention_binarizes_its_input_once_with_the_same_result(input_norm, monkeypatch):
    """The key side reuses the query side's bits when both binarize the same input with the same (parameter-free)
    norm: outputs and gradients equal those of two separate binarizations."""
    from fairseq_eatt.attention import functional
    from fairseq_eatt.attention.eatt import EattAttention

    torch.manual_seed(0)
    m = EattAttention(16, 4, threshold=0.3, input_norm=input_norm, self_attention=True)
    x = torch.randn(5, 2, 16, requires_grad=True)
    calls = []
    original = functional.BinarizeWithSurrogate.backward
    monkeypatch.setattr(functional.BinarizeWithSurrogate, "backward",
                        staticmethod(lambda ctx, g: calls.append(1) or original(ctx, g)))

    def run(key):
        out, _ = m(x, key, key)
        grads = torch.autograd.grad(out.square().sum(), [x] + list(m.parameters()), allow_unused=True)
        return out, grads

    shared_out, shared_grads = run(x)
    shared_calls, calls[:] = len(calls), []
    separate_out, separate_grads = run(x.view_as(x))  # same values, another tensor: binarized again
    torch.testing.assert_close(shared_out, separate_out)
    for a, b in zip(shared_grads, separate_grads):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b)
    assert (shared_calls, len(calls)) == ((2, 2) if input_norm == "learnable" else (1, 2))
    assert not any(isinstance(v, torch.Tensor) and v.dim() == 3 for v in vars(m).values())  # no input held

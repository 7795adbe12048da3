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

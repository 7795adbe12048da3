import pytest
import torch

from fairseq_eatt.attention.functional import pairwise_l1


def brute_force(q, k):
    return (q[..., :, None, :] - k[..., None, :, :]).abs().sum(-1)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 4, 1, 16)])
def test_values_and_gradients_match_brute_force(shape):
    torch.manual_seed(0)
    n, t, s, d = shape
    q = torch.randn(n, t, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(n, s, d, dtype=torch.float64, requires_grad=True)
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    out, ref = pairwise_l1(q, k), brute_force(q2, k2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(q.grad, q2.grad)
    torch.testing.assert_close(k.grad, k2.grad)


def test_extra_batch_dims():
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4)
    torch.testing.assert_close(pairwise_l1(q, k), brute_force(q, k), rtol=1e-5, atol=1e-5)


def test_low_precision_inputs_accumulate_in_float32():
    q = torch.full((1, 1, 4096), 60000.0, dtype=torch.float16)
    k = torch.full((1, 1, 4096), -60000.0, dtype=torch.float16)
    out = pairwise_l1(q, k)  # 4096 * 120000 overflows fp16 but not fp32
    assert out.dtype == torch.float32 and torch.isfinite(out).all()

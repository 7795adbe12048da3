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


# ---- the compiled CPU kernel against the reference --------------------------------------------------------------

from fairseq_eatt.attention import functional as F  # noqa: E402


def needs_kernel():
    if F.l1_kernel() is None:
        pytest.skip(F.l1_kernel_error())


def both(q, k, g, monkeypatch):
    """(values, grad q, grad k) from the kernel and from the reference, on copies of the same inputs."""
    results = []
    for choice in ("cpp_l1", "reference"):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", choice)
        qq, kk = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
        out = pairwise_l1(qq, kk)
        out.backward(g)
        results.append((out.detach(), qq.grad, kk.grad))
    return results


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 3), (2, 17, 9, 64), (4, 33, 31, 37), (1, 2, 130, 8)])
def test_kernel_equals_reference(shape, monkeypatch):
    needs_kernel()
    torch.manual_seed(1)
    n, t, s, d = shape
    q, k = torch.randn(n, t, d), torch.randn(n, s, d)
    g = torch.randn(n, t, s)
    g[:, :, -1] = 0.0  # masked scores (padding) carry no gradient
    (o1, gq1, gk1), (o2, gq2, gk2) = both(q, k, g, monkeypatch)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gq1, gq2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gk1, gk2, rtol=1e-5, atol=1e-4)


def test_kernel_gives_zero_gradient_at_ties_like_torch_sign(monkeypatch):
    """Selections of the same binary input give equal features: |0|'s subgradient is 0 in both paths."""
    needs_kernel()
    q = torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]])
    k = torch.tensor([[[1.0, 2.0, 3.0], [1.0, 0.0, 3.0]]])
    g = torch.ones(1, 2, 2)
    (o1, gq1, gk1), (o2, gq2, gk2) = both(q, k, g, monkeypatch)
    assert o1[0, 0, 0] == 0.0
    assert torch.equal(gq1, gq2) and torch.equal(gk1, gk2)


def test_kernel_accepts_views_and_low_precision(monkeypatch):
    needs_kernel()
    torch.manual_seed(2)
    q = torch.randn(3, 16, 10).transpose(1, 2)  # (3, 10, 16), not contiguous
    k = torch.randn(3, 16, 12).transpose(1, 2)
    g = torch.randn(3, 10, 12)
    (o1, gq1, gk1), (o2, gq2, gk2) = both(q, k, g, monkeypatch)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gq1, gq2, rtol=1e-5, atol=1e-4)
    qb, kb = q.bfloat16(), k.bfloat16()
    (o1, gq1, gk1), (o2, gq2, gk2) = both(qb, kb, g, monkeypatch)
    assert o1.dtype == torch.float32 and gq1.dtype == torch.bfloat16
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(gk1.float(), gk2.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("cross", [False, True])
def test_eatt_attention_is_the_same_on_either_path(cross, monkeypatch):
    """A whole E-ATT layer with padding (and a causal mask in self-attention): outputs and parameter gradients."""
    needs_kernel()
    from fairseq_eatt.attention import get_attention_class

    t, s, b, e = 7, 9 if cross else 7, 3, 32
    results = []
    for choice in ("cpp_l1", "reference"):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", choice)
        torch.manual_seed(3)
        m = get_attention_class("eatt")(e, 4, self_attention=not cross, encoder_decoder_attention=cross,
                                        threshold=0.0)
        x, mem = torch.randn(t, b, e), torch.randn(s, b, e)
        pad = torch.zeros(b, s, dtype=torch.bool)
        pad[0, -2:] = True
        mask = None if cross else torch.triu(torch.full((t, t), float("-inf")), 1)
        kv = mem if cross else x
        out, _ = m(x, kv, kv, key_padding_mask=pad, attn_mask=mask)
        out.sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-4)
    for g1, g2 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-4)


def test_kernel_is_built_in_the_project_environment():
    """`make test` builds the kernel (setup.py); a failed build must fail here, not fall back silently."""
    import os
    import sys

    venv = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv")
    if not (os.path.isdir(venv) and os.path.samefile(sys.prefix, venv)):
        pytest.skip("not running in the repository's .venv")
    assert F.l1_kernel() is not None, F.l1_kernel_error()


def test_bad_backend_choice_is_refused(monkeypatch):
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "cpp_l1,turbo")
    with pytest.raises(ValueError, match="FAIRSEQ_EATT_BACKEND='cpp_l1,turbo': unknown backend 'turbo'; valid "
                                         "values are auto or a comma-separated list of reference, cpp_l1"):
        pairwise_l1(torch.randn(1, 2, 3), torch.randn(1, 2, 3))


@pytest.mark.parametrize("retired", ["FAIRSEQ_EATT_L1", "FAIRSEQ_EATT_FUSED", "FAIRSEQ_EATT_SDPA"])
def test_the_retired_backend_variables_are_refused_with_the_new_setting(monkeypatch, retired):
    monkeypatch.setenv(retired, "1")
    with pytest.raises(ValueError, match=f"{retired} is no longer read: set FAIRSEQ_EATT_BACKEND"):
        pairwise_l1(torch.randn(1, 2, 3), torch.randn(1, 2, 3))

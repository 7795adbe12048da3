"""The Triton kernels of E-ATT's L1 scores, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1, set by
conftest.py where no GPU is present): values and gradients against the reference, odd sizes, views, padding and
causal masks through whole E-ATT layers, float16/bfloat16 inputs with float32 accumulation."""
import os

import pytest
import torch

pytest.importorskip("triton")

from fairseq_eatt.attention.functional import PairwiseL1, l1_implementation, pairwise_l1  # noqa: E402
from fairseq_eatt.attention.triton_l1 import BLOCK_D, BLOCK_S, BLOCK_T, TritonPairwiseL1  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="no GPU and Triton's interpreter is off")


def reference(q, k, g):
    q, k = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    out = PairwiseL1.apply(q, k)
    out.backward(g)
    return out, q.grad, k.grad


def triton(q, k, g):
    q, k = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    out = TritonPairwiseL1.apply(q, k)
    out.backward(g)
    return out, q.grad, k.grad


SIZES = [(1, 1, 1, 1), (2, 5, 7, 13), (1, BLOCK_T, BLOCK_S, BLOCK_D), (2, BLOCK_T + 1, 2 * BLOCK_S - 1, 3 * BLOCK_D + 5),
         (3, 1, 40, 64)]


@pytest.mark.parametrize("n, t, s, d", SIZES)
def test_values_and_gradients_equal_the_reference(n, t, s, d):
    torch.manual_seed(n * 1000 + t * 100 + s + d)
    q, k = torch.randn(n, t, d), torch.randn(n, s, d)
    g = torch.randn(n, t, s)
    got, want = triton(q, k, g), reference(q, k, g)
    assert got[0].dtype == torch.float32
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_ties_have_no_gradient_as_in_the_reference():
    q = torch.tensor([[[1.0, 2.0], [0.5, -1.0]]])
    k = torch.tensor([[[1.0, 3.0], [0.5, -1.0], [2.0, 2.0]]])  # equal features: sign 0
    g = torch.ones(1, 2, 3)
    for a, b in zip(triton(q, k, g), reference(q, k, g)):
        torch.testing.assert_close(a, b)


def test_views_with_any_strides():
    torch.manual_seed(0)
    q = torch.randn(4, 9, 2).transpose(1, 2)  # (N 4, T 2, d 9), features not contiguous
    k = torch.randn(9, 4, 11).permute(1, 2, 0)  # (N 4, S 11, d 9)
    assert not q.is_contiguous() and not k.is_contiguous()
    g = torch.randn(4, 2, 11)
    for a, b in zip(triton(q, k, g), reference(q.contiguous(), k.contiguous(), g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    torch.manual_seed(0)
    d = 512  # long sums: float16 accumulation would lose digits a float32 sum keeps
    q, k = torch.randn(2, 9, d).to(dtype), torch.randn(2, 6, d).to(dtype)
    g = torch.randn(2, 9, 6)
    got = triton(q, k, g)
    exact = reference(q.double(), k.double(), g.double())
    assert got[0].dtype == torch.float32 and got[1].dtype == dtype and got[2].dtype == dtype
    torch.testing.assert_close(got[0].double(), exact[0], rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(got[1].double(), exact[1].to(dtype).double(), rtol=0, atol=0)  # sums of +-g: exact
    torch.testing.assert_close(got[2].double(), exact[2].to(dtype).double(), rtol=0, atol=0)


def test_pairwise_l1_takes_the_kernels_when_chosen(monkeypatch):
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8)
    monkeypatch.setenv("FAIRSEQ_EATT_L1", "triton")
    assert l1_implementation(q) == "triton"
    got = pairwise_l1(q, k)
    monkeypatch.setenv("FAIRSEQ_EATT_L1", "reference")
    torch.testing.assert_close(got, pairwise_l1(q, k), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True], ids=["cross-padded", "causal-self"])
def test_whole_eatt_layers_with_masks_and_padding_equal_the_reference(monkeypatch, causal):
    from fairseq_eatt.attention.eatt import EattAttention

    torch.manual_seed(0)
    d, heads, t, s, b = 16, 2, 6, 9 if not causal else 6, 3
    module = EattAttention(d, heads, self_attention=causal, encoder_decoder_attention=not causal, threshold=0.0)
    query = torch.randn(t, b, d, requires_grad=True)
    key = query if causal else torch.randn(s, b, d, requires_grad=True)
    padding = torch.zeros(b, s, dtype=torch.bool)
    padding[1, -3:] = True  # right padding
    if not causal:
        padding[0, :2] = True  # left padding (a causal row over left padding would have no key at all)
    mask = torch.triu(torch.full((t, s), float("-inf")), 1) if causal else None

    def run(implementation):
        monkeypatch.setenv("FAIRSEQ_EATT_L1", implementation)
        module.zero_grad()
        for x in (query, key):
            x.grad = None
        out, weights = module(query, key, key, key_padding_mask=padding, attn_mask=mask)
        out.pow(2).sum().backward()
        grads = [query.grad.clone()] + ([key.grad.clone()] if not causal else []) + \
            [p.grad.clone() for p in module.parameters() if p.grad is not None]
        return [out.detach(), weights.detach()] + grads

    for a, b_ in zip(run("triton"), run("reference")):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)

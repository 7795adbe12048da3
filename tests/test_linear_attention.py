"""Linformer and Performer, and the linear memory of local / linformer / performer."""
import argparse

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, AttentionSpecError, check_position
from fairseq_eatt.attention import get_attention_class

from .helpers import LargestTensor, assert_same_on_either_padding_side


def layer(name, position=ENCODER_SELF, d=16, h=4, **flags):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    cross = position == DECODER_CROSS
    kwargs = cls.kwargs_from_args(argparse.Namespace(**flags), position)
    return cls(d, h, self_attention=not cross, encoder_decoder_attention=cross, **kwargs).eval()


def test_linformer_is_refused_as_decoder_self_attention_with_the_reason():
    with pytest.raises(AttentionSpecError, match="--decoder-self-attention linformer.*would see the future"):
        check_position("linformer", DECODER_SELF)


@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_CROSS])
def test_linformer_same_on_either_padding_side(position):
    m = layer("linformer", position, attention_max_length=16, linformer_k=4)
    assert_same_on_either_padding_side(m, cross=position == DECODER_CROSS)


def test_linformer_shared_projection_has_fewer_parameters():
    own = sum(p.numel() for p in layer("linformer", attention_max_length=32, linformer_k=8).parameters())
    shared = sum(p.numel() for p in layer("linformer", attention_max_length=32, linformer_k=8,
                                          linformer_share_kv=True).parameters())
    assert own - shared == 8 * 32


def performer_error(features):
    torch.manual_seed(3)
    vanilla = layer("vanilla", d=32, h=2)
    perf = layer("performer", d=32, h=2, performer_features=features)
    perf.load_state_dict({**perf.state_dict(), **vanilla.state_dict()})
    x = torch.randn(10, 2, 32) * 0.5
    exact, _ = vanilla(x, x, x)
    approx, _ = perf(x, x, x)
    return ((approx - exact).norm() / exact.norm()).item()


def test_performer_approximates_softmax_attention_better_with_more_features():
    coarse, fine = performer_error(16), performer_error(16384)
    assert fine < 0.05, fine
    assert fine < coarse / 2


def largest_buffer(name, length, causal=False):
    flags = dict(attention_max_length=1024, linformer_k=8, attention_window=2, performer_features=8)
    m = layer(name, DECODER_SELF if causal else ENCODER_SELF, d=8, h=2, **flags).train()
    x = torch.randn(length, 2, 8, requires_grad=True)
    mask = torch.triu(torch.full((length, length), float("-inf")), 1) if causal else None
    with LargestTensor() as probe:
        out, _ = m(x, x, x, attn_mask=mask, need_weights=False)
        out.sum().backward()
    return probe.largest


@pytest.mark.parametrize("name,causal", [("local", False), ("local", True), ("linformer", False),
                                         ("performer", False), ("performer", True)])
def test_memory_grows_linearly_with_length(name, causal):
    small, large = largest_buffer(name, 128, causal), largest_buffer(name, 256, causal)
    assert large <= 2.1 * small, (small, large)


def test_memory_check_detects_quadratic_attention():
    small, large = largest_buffer("vanilla", 128), largest_buffer("vanilla", 256)
    assert large >= 3.9 * small  # the (T, S) score matrix: the check above would fail for vanilla


@pytest.mark.parametrize("length", [1, 5, 64, 70, 130])
@pytest.mark.parametrize("chunk", [7, 64])
def test_performer_chunked_causal_pass_equals_prefix_sums(length, chunk):
    m = layer("performer", DECODER_SELF, d=32, h=4)
    m.CHUNK = chunk
    torch.manual_seed(length)
    q, k, v = (torch.randn(2, 4, length, 8) for _ in range(3))
    phi_q, phi_k = m._features(q, True), m._features(k, False)
    phi_k[0, :, -2:] = 0.0  # padded keys
    kv = torch.einsum("bhsm,bhsd->bhsmd", phi_k, v).cumsum(dim=2)
    expected = m._normalize(torch.einsum("bhtm,bhtmd->bhtd", phi_q, kv), (phi_q * phi_k.cumsum(dim=2)).sum(-1))
    torch.testing.assert_close(m._causal_chunked(phi_q, phi_k, v), expected, rtol=2e-5, atol=1e-6)

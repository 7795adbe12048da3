"""Properties every variant must have, on random shapes (hypothesis), and no silent NaN on degenerate inputs.

- adding padding (left or right, any amount) never changes the outputs at real positions;
- in causal use, changing a future token never changes the past;
- incremental decoding (self- and cross-attention, beam reordering included) equals the full pass;
- fully padded rows, length-1 sentences, all-zero binarized inputs, very large activations (float32 and
  bfloat16) and empty batches give finite outputs and gradients, or a clear error.
"""
import argparse

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from fairseq_eatt.attention import build_attention, get_attention_class

E, H = 16, 4
# every variant with its defaults, and E-ATT under each recipe and each of its options (parsed flags)
CONFIGS = {name: (name, {}) for name in available_attentions()}
CONFIGS.update({
    "eatt[recipe=authors]": ("eatt", {"eatt_recipe": "authors"}),
    "eatt[learn-threshold]": ("eatt", {"eatt_threshold": 0.0, "eatt_learn_threshold": True}),
    "eatt[module-norm=learnable]": ("eatt", {"eatt_threshold": 0.0, "eatt_module_norm": "learnable"}),
    "eatt[module-norm=static]": ("eatt", {"eatt_threshold": 0.0, "eatt_module_norm": "static"}),
    "eatt[learn-temperature]": ("eatt", {"eatt_learn_temperature": True}),
    "eatt[threshold-per-position]": ("eatt", {"eatt_threshold": (0.0, 0.5, -0.25)}),
    "eatt[authors,all-levers]": ("eatt", {"eatt_recipe": "authors", "eatt_learn_threshold": True,
                                         "eatt_module_norm": "learnable", "eatt_learn_temperature": True}),
    "eatt_select[recipe=authors]": ("eatt_select", {"eatt_recipe": "authors", "eatt_learn_threshold": True}),
})
VARIANTS = list(CONFIGS)


def allowed(config):
    return get_attention_class(CONFIGS[config][0]).capabilities.allowed_positions()


CAUSAL = [n for n in VARIANTS if DECODER_SELF in allowed(n)]
CROSS = [n for n in VARIANTS if DECODER_CROSS in allowed(n)]
EXAMPLES = settings(max_examples=12, deadline=None, derandomize=True)


def build(config, position=ENCODER_SELF, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    name, flags = CONFIGS[config]
    args = argparse.Namespace(attention_max_length=32, **flags)
    return build_attention(name, E, H, position, args=args, **kwargs).to(dtype).eval()


def causal_mask(t):
    return torch.triu(torch.full((t, t), float("-inf")), 1)


def randn(seed, *shape, scale=1.5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---- properties on random shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VARIANTS)
@EXAMPLES
@given(length=st.integers(1, 9), pad=st.integers(1, 5), left=st.booleans(), seed=st.integers(0, 10**6))
def test_padding_never_changes_real_positions(name, length, pad, left, seed):
    m = build(name)
    x = randn(seed, length, 1, E)
    ref, _ = m(x, x, x)
    filler = randn(seed + 1, pad, 1, E, scale=30.0)
    padded = torch.cat([filler, x]) if left else torch.cat([x, filler])
    mask = torch.zeros(1, length + pad, dtype=torch.bool)
    if left:
        mask[0, :pad] = True
    else:
        mask[0, length:] = True
    out, _ = m(padded, padded, padded, key_padding_mask=mask)
    real = out[pad:] if left else out[:length]
    torch.testing.assert_close(real, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CROSS)
@EXAMPLES
@given(src_len=st.integers(1, 9), tgt_len=st.integers(1, 6), pad=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_source_padding_never_changes_cross_attention(name, src_len, tgt_len, pad, seed):
    m = build(name, DECODER_CROSS)
    src, tgt = randn(seed, src_len, 1, E), randn(seed + 1, tgt_len, 1, E)
    ref, _ = m(tgt, src, src, static_kv=True)
    padded = torch.cat([randn(seed + 2, pad, 1, E, scale=30.0), src])  # fairseq pads sources on the left
    mask = torch.tensor([[True] * pad + [False] * src_len])
    out, _ = m(tgt, padded, padded, key_padding_mask=mask, static_kv=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
@EXAMPLES
@given(length=st.integers(1, 9), pad=st.integers(1, 5), left=st.booleans(), seed=st.integers(0, 10**6))
def test_padding_with_a_causal_mask_never_changes_real_positions(name, length, pad, left, seed):
    """Decoder self-attention with padding (right, as fairseq pads targets, or left) and the causal mask over
    the padded length: every real position computes what it computes without padding."""
    m = build(name, DECODER_SELF)
    x = randn(seed, length, 2, E)
    ref, _ = m(x, x, x, attn_mask=causal_mask(length))
    filler = randn(seed + 1, pad, 2, E, scale=30.0)
    padded = torch.cat([filler, x]) if left else torch.cat([x, filler])
    mask = torch.zeros(2, length + pad, dtype=torch.bool)
    if left:
        mask[:, :pad] = True
    else:
        mask[:, length:] = True
    out, _ = m(padded, padded, padded, key_padding_mask=mask, attn_mask=causal_mask(length + pad))
    real = out[pad:] if left else out[:length]
    assert torch.isfinite(real).all()
    torch.testing.assert_close(real, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
@EXAMPLES
@given(length=st.integers(2, 10), data=st.data(), seed=st.integers(0, 10**6))
def test_changing_a_future_token_never_changes_the_past(name, length, data, seed):
    m = build(name, DECODER_SELF)
    cut = data.draw(st.integers(1, length - 1))
    x = randn(seed, length, 2, E)
    out, _ = m(x, x, x, attn_mask=causal_mask(length))
    changed = x.clone()
    changed[cut:] += randn(seed + 1, length - cut, 2, E, scale=10.0)
    out2, _ = m(changed, changed, changed, attn_mask=causal_mask(length))
    torch.testing.assert_close(out2[:cut], out[:cut], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CAUSAL)
@EXAMPLES
@given(length=st.integers(1, 8), bsz=st.integers(1, 4), reorder_at=st.integers(0, 7), seed=st.integers(0, 10**6))
def test_incremental_self_attention_equals_the_full_pass(name, length, bsz, reorder_at, seed):
    m = build(name, DECODER_SELF)
    x = randn(seed, length, bsz, E)
    full, _ = m(x, x, x, attn_mask=causal_mask(length))
    perm = torch.randperm(bsz, generator=torch.Generator().manual_seed(seed))
    state, order = {}, torch.arange(bsz)
    for i in range(length):
        if i == reorder_at and i > 0:
            m.reorder_incremental_state(state, perm)
            order = order[perm]
        step, _ = m(x[i : i + 1, order], x[i : i + 1, order], x[i : i + 1, order], incremental_state=state)
        torch.testing.assert_close(step[0], full[i, order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CROSS)
@EXAMPLES
@given(src_len=st.integers(1, 8), tgt_len=st.integers(1, 6), sentences=st.integers(1, 3), beam=st.integers(1, 3),
       seed=st.integers(0, 10**6))
def test_incremental_cross_attention_equals_the_full_pass(name, src_len, tgt_len, sentences, beam, seed):
    m = build(name, DECODER_CROSS)
    m.set_beam_size(beam)
    src = randn(seed, src_len, sentences, E).repeat_interleave(beam, dim=1)
    tgt = randn(seed + 1, tgt_len, sentences * beam, E)
    full, _ = m(tgt, src, src, static_kv=True)
    state = {}
    for i in range(tgt_len):
        step, _ = m(tgt[i : i + 1], src, src, incremental_state=state, static_kv=True)
        torch.testing.assert_close(step[0], full[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,position", [(n, p) for n in VARIANTS for p in (ENCODER_SELF, DECODER_CROSS)
                                           if p in allowed(n)])
def test_the_state_dict_holds_all_state(name, position):
    """A module built with another seed (other weights, other random features) computes the same thing once it
    has loaded the state dict: nothing a worker or a resumed run needs lives outside it."""
    a, b = build(name, position, seed=0), build(name, position, seed=1)
    b.load_state_dict(a.state_dict())
    src, tgt = randn(5, 6, 2, E), randn(6, 4, 2, E)
    query = src if position == ENCODER_SELF else tgt
    torch.testing.assert_close(b(query, src, src)[0], a(query, src, src)[0], rtol=0, atol=0)


# ---- no silent NaN -----------------------------------------------------------------------------------------------

def finite_forward_backward(m, query, key, **kwargs):
    query, key = query.clone().requires_grad_(), key.clone().requires_grad_()
    out, _ = m(query, key, key, **kwargs)
    assert torch.isfinite(out.float()).all()
    if out.numel():
        out.float().square().mean().backward()
        grads = [query.grad, key.grad] + [p.grad for p in m.parameters()]
        assert all(g is None or torch.isfinite(g.float()).all() for g in grads)  # (synthesizers ignore queries)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_length_one_sentences_are_finite(name):
    m = build(name).train()
    finite_forward_backward(m, randn(0, 1, 3, E), randn(0, 1, 3, E))
    if name in CAUSAL:
        finite_forward_backward(build(name, DECODER_SELF).train(), randn(1, 1, 3, E), randn(1, 1, 3, E),
                                attn_mask=causal_mask(1))


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e4), (torch.bfloat16, 1e3)])
def test_very_large_activations_are_finite(name, dtype, scale):
    m = build(name, dtype=dtype).train()
    x = (randn(2, 6, 2, E) * scale).to(dtype)
    finite_forward_backward(m, x, x)
    if name in CAUSAL:
        x = (randn(3, 6, 2, E) * scale).to(dtype)
        finite_forward_backward(build(name, DECODER_SELF, dtype=dtype).train(), x, x, attn_mask=causal_mask(6))


@pytest.mark.parametrize("name", [n for n in VARIANTS if n.startswith("eatt") and not n.startswith("eatt_l1")])
def test_all_zero_binarized_inputs_are_finite(name):
    """Every feature under the threshold: Q and K are the biases alone, all scores tie, attention is uniform."""
    m = build(name, threshold=1e9).train()
    x = randn(4, 5, 2, E)
    out = finite_forward_backward(m, x, x)
    _, w = m(x, x, x, need_weights=True)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 5))
    assert out.abs().sum() > 0


@pytest.mark.parametrize("name", VARIANTS)
def test_empty_batches_give_empty_outputs(name):
    m = build(name)
    out, _ = m(torch.zeros(4, 0, E), torch.zeros(4, 0, E), torch.zeros(4, 0, E))
    assert out.shape == (4, 0, E)
    if name in CROSS:
        c = build(name, DECODER_CROSS)
        out, _ = c(torch.zeros(2, 0, E), torch.zeros(4, 0, E), torch.zeros(4, 0, E), static_kv=True)
        assert out.shape == (2, 0, E)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_nan_coming_in_is_propagated_not_hidden(name):
    """A NaN in a real input token reaches the output (fairseq then stops on the non-finite loss); no variant
    silently turns it into a number, binarization included."""
    m = build(name)
    x = randn(5, 6, 2, E)
    x[3, 1, 0] = float("nan")
    out, _ = m(x, x, x)
    assert torch.isnan(out[:, 1]).any()
    assert torch.isfinite(out[:, 0]).all()  # the other sentence is untouched

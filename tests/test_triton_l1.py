"""The Triton kernels of E-ATT's L1 scores, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1, set by
conftest.py where no GPU is present): values and gradients against the reference, odd sizes, views, padding and
causal masks through whole E-ATT layers, float16/bfloat16 inputs with float32 accumulation."""
import os

import pytest
import torch

pytest.importorskip("triton")

from fairseq_eatt.attention.backends import select  # noqa: E402
from fairseq_eatt.attention.functional import PairwiseL1, pairwise_l1  # noqa: E402
from fairseq_eatt.attention.eatt.triton_kernels import BLOCK_D, BLOCK_S, BLOCK_T, TritonPairwiseL1  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="no GPU and Triton's interpreter is off")
# the interpreter runs the kernels on CPU tensors; on a GPU (scripts/gpu_check.sh) every tensor is made there
DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


@pytest.fixture(autouse=True)
def on_the_kernels_device():
    torch.set_default_device(DEVICE)
    yield
    torch.set_default_device("cpu")


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


SIZES = [(1, 1, 1, 1), (2, 5, 7, 13), (1, BLOCK_T, BLOCK_S, BLOCK_D),
         (2, BLOCK_T + 1, 2 * BLOCK_S - 1, 3 * BLOCK_D + 5),
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
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "triton_l1")
    assert select("l1", q) == "triton_l1"
    got = pairwise_l1(q, k)
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "reference")
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
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", implementation)
        module.zero_grad()
        for x in (query, key):
            x.grad = None
        out, weights = module(query, key, key, key_padding_mask=padding, attn_mask=mask)
        out.pow(2).sum().backward()
        grads = [query.grad.clone()] + ([key.grad.clone()] if not causal else []) + \
            [p.grad.clone() for p in module.parameters() if p.grad is not None]
        return [out.detach(), weights.detach()] + grads

    for a, b_ in zip(run("triton_l1"), run("reference")):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)


# ---- the fused E-ATT attention and the fused dot-product attention of vanilla positions ----

def dense_eatt(q, k, v, scale, heads, mask, padding):
    scores = -scale * (q[:, :, None, :] - k[:, None, :, :]).abs().sum(-1)
    if mask is not None:
        scores = scores + mask
    if padding is not None:
        scores = scores.masked_fill(padding.repeat_interleave(heads, 0)[:, None, :], float("-inf"))
    probs = torch.softmax(scores, -1).masked_fill(scores.amax(-1, keepdim=True) == float("-inf"), 0.0)
    return probs @ v


@pytest.mark.parametrize("b, h, t, s, d, dv, causal", [
    (2, 2, 5, 7, 9, 6, False),   # odd sizes, left/right padding and a fully padded sentence
    (1, 3, 17, 17, 8, 16, True),  # the future mask across tiles
    (2, 1, 1, 20, 5, 3, False),   # one query (a decoding step)
])
def test_fused_attention_equals_the_dense_path(b, h, t, s, d, dv, causal):
    from fairseq_eatt.attention.eatt.triton_kernels import FusedEattAttention

    torch.manual_seed(t + s)
    n = b * h
    q = torch.randn(n, t, d, requires_grad=True)
    k, v = torch.randn(n, s, d, requires_grad=True), torch.randn(n, s, dv, requires_grad=True)
    mask = torch.triu(torch.full((t, s), float("-inf")), 1) if causal else None
    padding = torch.zeros(b, s, dtype=torch.bool)
    padding[0, -2:] = True
    if not causal and b > 1:
        padding[1, :] = True  # no key at all: zeros, as the dense path gives
    out = FusedEattAttention.apply(q, k, v, 0.3, h, mask, padding)
    g = torch.randn_like(out)
    out.backward(g)
    fused = [out.detach()] + [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref = dense_eatt(q, k, v, 0.3, h, mask, padding)
    ref.backward(g)
    for a, b_ in zip(fused, [ref.detach()] + [x.grad for x in (q, k, v)]):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(fused[0]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_attention_takes_half_inputs(dtype):
    from fairseq_eatt.attention.eatt.triton_kernels import FusedEattAttention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, 16).to(dtype), torch.randn(2, 8, 16).to(dtype), torch.randn(2, 8, 4).to(dtype))
    out = FusedEattAttention.apply(q, k, v, 0.1, 1, None, None)
    assert out.dtype == dtype
    exact = dense_eatt(q.double(), k.double(), v.double(), 0.1, 1, None, None)
    torch.testing.assert_close(out.double(), exact, rtol=1e-2, atol=1e-2)


def layer_inputs(causal, t, cross_len, padded_tail, d=16, b=3):
    """(query, key, key padding, future mask) of a self-attention (causal) or a cross-attention layer, with padding
    at the end of sentence 1 and (cross) at the start of sentence 0."""
    s = t if causal else cross_len
    query = torch.randn(t, b, d, requires_grad=True)
    key = query if causal else torch.randn(s, b, d)
    padding = torch.zeros(b, s, dtype=torch.bool)
    padding[1, -padded_tail:] = True
    if not causal:
        padding[0, :2] = True
    mask = torch.triu(torch.full((t, s), float("-inf")), 1) if causal else None
    return query, key, padding, mask


def output_and_gradients(module, query, key, padding, mask):
    module.zero_grad()
    query.grad = None
    out, _ = module(query, key, key, key_padding_mask=padding, attn_mask=mask, need_weights=False)
    out.pow(2).sum().backward()
    return [out.detach(), query.grad.clone()] + [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("causal", [False, True], ids=["cross-padded", "causal-self"])
def test_eatt_layers_attend_through_the_fused_kernel_like_the_dense_path(monkeypatch, causal):
    from fairseq_eatt.attention import eatt as eatt_module
    from fairseq_eatt.attention.eatt import EattAttention

    torch.manual_seed(0)
    heads = 2
    module = EattAttention(16, heads, self_attention=causal, encoder_decoder_attention=not causal, threshold=0.0)
    query, key, padding, mask = layer_inputs(causal, t=6, cross_len=9, padded_tail=3)
    calls = []
    fused_attend = EattAttention._fused_attend
    monkeypatch.setattr(eatt_module.EattAttention, "_fused_attend",
                        lambda self, *a: calls.append(1) or fused_attend(self, *a))

    def run(fused):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "triton_fused" if fused == "1" else "dense")
        return output_and_gradients(module, query, key, padding, mask)

    fused, dense = run("1"), run("0")
    assert calls == [1]  # the fused kernel ran once, the dense path the other time
    for a, b_ in zip(fused, dense):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "triton_fused")
    module(query, key, key, key_padding_mask=padding, attn_mask=mask, need_weights=True)  # weights: dense path
    module.log_temperature = torch.nn.Parameter(torch.zeros(heads))
    module(query, key, key, key_padding_mask=padding, attn_mask=mask, need_weights=False)  # temperatures: dense
    assert calls == [1]


@pytest.mark.parametrize("decoder_self", ["vanilla", "eatt"], ids=["vanilla-decoder-self", "eatt-everywhere"])
def test_beam_search_with_fused_kernels_equals_the_dense_path(monkeypatch, decoder_self):
    from fairseq.sequence_generator import SequenceGenerator

    from .helpers import write_dicts
    from .test_deployment import sample_of, spread
    from .test_model import build

    import tempfile
    import pathlib

    directory = pathlib.Path(tempfile.mkdtemp())
    write_dicts(directory, vocab_size=40)
    torch.manual_seed(0)
    task, model, _ = build(directory, "--arch", "transformer_eatt_tiny", "--decoder-self-attention", decoder_self,
                           "--eatt-threshold", "0.0")
    spread(model).float()  # the Triton kernels take float32 (float64 keeps the exact PyTorch paths)
    sample = sample_of(task)

    from fairseq_eatt.attention.eatt import EattAttention

    fused_by = []
    fused_attend = EattAttention._fused_attend
    monkeypatch.setattr(EattAttention, "_fused_attend",
                        lambda self, q, *a: fused_by.append((id(self), q.size(2))) or fused_attend(self, q, *a))

    def search(fused):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "triton_fused,sdpa" if fused == "1" else "dense")
        with torch.no_grad():
            return SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=8).forward(sample)

    fused, dense = search("1"), search("0")
    for hyps_fused, hyps_dense in zip(fused, dense):
        assert [h["tokens"].tolist() for h in hyps_fused] == [h["tokens"].tolist() for h in hyps_dense]
        assert [h["score"].item() for h in hyps_fused] == pytest.approx([h["score"].item() for h in hyps_dense],
                                                                       abs=1e-4)
    assert len({tuple(hyps[0]["tokens"].tolist()) for hyps in fused}) > 1  # sentences get different translations
    decoder_self_modules = {id(layer.self_attn) for layer in model.decoder.layers}
    steps = [length for module, length in fused_by if module in decoder_self_modules]
    if decoder_self == "eatt":  # the fused kernel served causal decoding steps, one query at a time
        assert steps and set(steps) == {1}
    else:
        assert not steps


@pytest.mark.parametrize("causal, empty", [(False, False), (True, False), (False, True)],
                         ids=["cross-padded", "causal-self", "cross-one-sentence-all-padding"])
def test_vanilla_positions_through_scaled_dot_product_attention_equal_the_dense_path(monkeypatch, causal, empty):
    from fairseq_eatt.attention.vanilla import VanillaAttention

    torch.manual_seed(0)
    module = VanillaAttention(16, 2, self_attention=causal, encoder_decoder_attention=not causal)
    query, key, padding, mask = layer_inputs(causal, t=5, cross_len=7, padded_tail=2)
    if empty:  # the dense path gives its queries zeros and no gradient; a fused kernel alone would give NaN
        padding[2] = True

    def run(sdpa):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "sdpa" if sdpa == "1" else "dense")
        return output_and_gradients(module, query, key, padding, mask)

    fused, dense = run("1"), run("0")
    for a, b_ in zip(fused, dense):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)
    if empty:
        assert fused[0][:, 2].abs().sum() == 0 and fused[1][:, 2].abs().sum() == 0


def test_sdpa_is_kept_away_from_what_it_would_compute_differently(monkeypatch):
    from fairseq_eatt.attention import vanilla as vanilla_module
    from fairseq_eatt.attention.registry import get_attention_class

    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "sdpa")
    calls = []
    real = vanilla_module.F.scaled_dot_product_attention
    monkeypatch.setattr(vanilla_module.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    x = torch.randn(4, 2, 16)
    for name in ("adaptive_span", "local", "eatt_l1", "optimized"):
        module = get_attention_class(name)(16, 2, self_attention=True)
        module(x, x, x, need_weights=False)
        if name == "optimized":  # its own projections, the same scores: fused
            assert calls, name
        else:
            assert not module.sdpa_exact and not calls, name
        calls.clear()
    from fairseq_eatt.attention.backends import counting

    with counting():  # the op counter's block: the dense path, whose operations it charges
        get_attention_class("vanilla")(16, 2, self_attention=True)(x, x, x, need_weights=False)
    assert not calls
    padding = torch.zeros(2, 4, dtype=torch.bool)
    padding[0] = True  # a sentence without keys: zeros on the dense path; the fused path unmasks and zeroes it
    vanilla = get_attention_class("vanilla")(16, 2, encoder_decoder_attention=True)
    out, _ = vanilla(x, x, x, key_padding_mask=padding, need_weights=False)
    assert calls and torch.isfinite(out).all() and out[:, 0].abs().sum() == 0


@pytest.mark.e2e
@pytest.mark.parametrize("fused", ["0", "1"], ids=["l1-kernel", "fused-attention"])
def test_fp16_training_through_the_triton_kernels(demo_run, tmp_path, fused):
    """fairseq-train --fp16 (half-precision model, fp32 master weights, loss scaling) with E-ATT's scores from the
    Triton kernels (on a CPU: Triton's interpreter), surrogate gradient included: finite losses and weights, and
    the same losses as the plain PyTorch path trained alike (the first one before any update, the second after one
    step of the kernels' gradients), up to half-precision rounding."""
    from .test_reliability import losses, params, run, train_flags

    def train_with(backend, save_dir):
        env = dict(os.environ, FAIRSEQ_EATT_BACKEND=backend, TRITON_INTERPRET="1")
        log = run([__import__("sys").executable, "-m", "fairseq_cli.train",
                   *train_flags(demo_run["data_bin"], save_dir, ("eatt",) * 3, "--fp16", "--fp16-no-flatten-grads",
                                "--max-update", "2", "--max-tokens", "128", "--disable-validation")], env=env)
        values = [v[0] for v in losses(log).values()]
        assert len(values) == 2 and all(torch.isfinite(torch.tensor(v)) for v in values), log[-2000:]
        return values

    values = train_with("triton_l1,triton_fused" if fused == "1" else "triton_l1,dense", tmp_path / "triton")
    assert all(torch.isfinite(w.float()).all() for w in params(tmp_path / "triton" / "checkpoint_last.pt").values())
    plain = train_with("reference,dense", tmp_path / "plain")
    assert values == pytest.approx(plain, abs=0.02), (values, plain)  # fairseq logs losses to 3 decimals


# ---- the benchmark's GPU path, without a GPU ----

def test_the_benchmark_times_the_triton_kernels_on_a_gpu_and_checks_the_gpu_targets():
    import argparse

    from fairseq_eatt.perf import bench
    from fairseq_eatt.perf.report import GPU_TARGETS, scores_table, targets

    assert bench.l1_implementations(gpu=True) == ["triton", "reference"]
    assert "triton" not in bench.l1_implementations(gpu=False)
    # the score operation as the GPU path runs it (here on the interpreter): every implementation timed
    args = argparse.Namespace(gpu=False, op_repeats=1, fp16=False)
    original = bench.l1_implementations
    bench.l1_implementations = lambda gpu: ["triton", "reference"]
    try:
        rows = bench.score_op(args, {"lengths": (32, 64), "op_n": 2})
    finally:
        bench.l1_implementations = original
    assert all(r["l1_triton_s"]["median"] > 0 and r["l1_triton_largest_vs_5d"] < 0.5 for r in rows)
    report = {"gpu": True, "scores": rows,
              "train": {"eatt": {"target_tokens_per_s": [89.0], "ratio_per_round": [0.89], "peak_gpu_mib": 10.0,
                                 "working_rss_mib": 1.0},
                        "transformer": {"target_tokens_per_s": [100.0], "ratio_per_round": [1.0],
                                        "peak_gpu_mib": 10.0, "working_rss_mib": 1.0}}}
    table = "\n".join(scores_table(report))
    assert "L1, Triton kernel (ms)" in table and "Triton / dot" in table
    lines = "\n".join(targets(report))
    assert f"(target >= {GPU_TARGETS['train']}): NOT met" in lines  # 0.89 < 0.9 on a GPU
    assert "Triton kernel), forward + backward" in lines and f"(target <= {GPU_TARGETS['scores']})" in lines


@pytest.mark.parametrize("tests_fail", [False, True], ids=["tests-pass", "tests-fail"])
def test_the_gpu_check_script_runs_both_benchmarks_even_when_a_kernel_test_fails(tmp_path, tests_fail):
    """scripts/gpu_check.sh with a stand-in python that records its calls: GPU time is scarce, so a failing test
    must not cost the measurement, and the script's exit status still reports it."""
    import subprocess

    from .helpers import REPO_ROOT

    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n'
                      + ('[[ "$*" == *pytest* ]] && exit 3\n' if tests_fail else "") + "exit 0\n")
    python.chmod(0o755)
    script = os.path.join(REPO_ROOT, "scripts", "gpu_check.sh")
    done = subprocess.run(["bash", script, "data-bin/x"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=str(python)))
    lines = calls.read_text().splitlines()
    assert len(lines) == 4 and "pytest" in lines[1] and "tests/test_triton_l1.py" in lines[1]
    assert all("--gpu" in line and "--preset base" in line and "--data data-bin/x" in line for line in lines[2:])
    assert "--fp16" not in lines[2] and "--fp16" in lines[3] and "performance-gpu-fp16" in lines[3]
    assert done.returncode == (3 if tests_fail else 0)
    assert ("FAILED on the GPU" in done.stderr) == tests_fail

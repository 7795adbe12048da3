"""E-ATT's selection as additions of the selected rows (gather_select, cpp_select) against nn.Linear on the bits:
the same values, the dense path wherever a gradient is needed, and the declared traffic equal to what it reads."""
import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, build_attention, get_attention_class
from fairseq_eatt.attention.backends import BACKENDS
from fairseq_eatt.attention.eatt import selection
from fairseq_eatt.energy.measure import measure_traffic

D, H = 16, 4
GATHERS = [pytest.param("gather_select", id="gather_select"),
           pytest.param("cpp_select", id="cpp_select", marks=pytest.mark.skipif(
               BACKENDS["cpp_select"].unavailable() is not None, reason=str(BACKENDS["cpp_select"].unavailable())))]


def bits_and_linear(tokens=9, d=D, out=12, bias=True, seed=0):
    torch.manual_seed(seed)
    bits = (torch.rand(tokens, d) < 0.25).float()
    bits[3] = 0  # a token with no selected feature: only the bias
    linear = torch.nn.Linear(d, out, bias=bias)
    return bits, linear


@pytest.mark.parametrize("backend", GATHERS)
@pytest.mark.parametrize("bias", [True, False])
def test_the_selected_rows_sum_to_the_dense_product(backend, bias):
    bits, linear = bits_and_linear(bias=bias)
    rows = linear.weight.detach().t().contiguous()
    got = selection.GATHERS[backend](bits, rows, None if linear.bias is None else linear.bias.detach())
    torch.testing.assert_close(got, linear(bits).detach(), rtol=1e-6, atol=1e-6)
    # written out for one token: the bias plus the columns of W where its bit is 1
    expected = (linear.bias.detach() if bias else 0) + linear.weight.detach()[:, bits[0] == 1].sum(dim=1)
    torch.testing.assert_close(got[0], expected, rtol=1e-6, atol=1e-6)


def module(position, **options):
    torch.manual_seed(0)
    cls = get_attention_class("eatt")
    return cls, build_attention("eatt", D, H, position, threshold=0.0, **options).eval()


@pytest.mark.parametrize("backend", GATHERS)
@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_SELF, DECODER_CROSS])
def test_eatt_attends_alike_through_the_selected_rows(monkeypatch, backend, position):
    _, m = module(position)
    tgt, src = torch.randn(5, 2, D), torch.randn(7, 2, D)
    key = src if position == DECODER_CROSS else tgt
    calls = []
    chosen = selection.GATHERS[backend]
    monkeypatch.setitem(selection.GATHERS, backend, lambda *a: calls.append(1) or chosen(*a))
    with torch.no_grad():
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "dense_select")
        dense, _ = m(tgt, key, key, static_kv=position == DECODER_CROSS)
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", backend)
        rows, _ = m(tgt, key, key, static_kv=position == DECODER_CROSS)
    assert calls, "the selected rows were not used"
    torch.testing.assert_close(rows, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", GATHERS)
def test_incremental_decoding_through_the_selected_rows_equals_the_full_pass(monkeypatch, backend):
    _, m = module(DECODER_SELF)
    x = torch.randn(6, 1, D)
    mask = torch.triu(torch.full((6, 6), float("-inf")), 1)
    calls = []
    chosen = selection.GATHERS[backend]
    monkeypatch.setitem(selection.GATHERS, backend, lambda *a: calls.append(1) or chosen(*a))
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", backend)
    with torch.no_grad():
        full, _ = m(x, x, x, attn_mask=mask)
        state, steps = {}, []
        for t in range(6):
            steps.append(m(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)[0])
    torch.testing.assert_close(torch.cat(steps), full, rtol=1e-5, atol=1e-5)
    assert len(calls) >= 7  # the selected rows ran in the full pass and in every step


@pytest.mark.parametrize("backend", GATHERS)
def test_training_takes_the_dense_path_so_the_surrogate_gradient_flows(monkeypatch, backend):
    """The gather paths give the bits no gradient: where one is needed, nn.Linear computes, even when listed."""
    _, m = module(ENCODER_SELF)
    m.train()
    x = torch.randn(5, 2, D, requires_grad=True)
    monkeypatch.setitem(selection.GATHERS, backend, lambda *a: pytest.fail("a gather path ran in training"))

    def gradients(setting):
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", setting)
        x.grad = None
        m.zero_grad()
        torch.manual_seed(1)
        m(x, x, x)[0].square().sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in m.parameters() if p.grad is not None]

    listed, dense = gradients(backend), gradients("dense_select")
    assert listed[0].abs().sum() > 0  # the surrogate reached the input
    for a, b in zip(listed, dense):
        torch.testing.assert_close(a, b)


def test_the_rows_follow_the_weights(monkeypatch):
    """The kept W^T is rebuilt when the weights change (a checkpoint loaded into a module that already ran)."""
    _, m = module(ENCODER_SELF)
    x = torch.randn(4, 1, D)
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "gather_select")
    with torch.no_grad():
        m(x, x, x)
        state = {k: v * 2 for k, v in m.state_dict().items()}
        m.load_state_dict(state)
        after, _ = m(x, x, x)
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "dense_select")
        dense, _ = m(x, x, x)
    torch.testing.assert_close(after, dense, rtol=1e-5, atol=1e-5)
    assert "q_rows" not in m.state_dict()  # a kept copy, never saved


def test_the_rows_follow_weights_a_training_step_wrote_through_data(monkeypatch):
    """fairseq's optimizers write through ``.data``, which the version stamp cannot see: the kept rows are dropped
    whenever the module goes back to training."""
    _, m = module(ENCODER_SELF)
    x = torch.randn(4, 1, D)
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "gather_select")
    with torch.no_grad():
        m(x, x, x)
    m.train()
    for p in m.parameters():
        p.data.add_(0.5)  # as Adam's step does
    m.eval()
    with torch.no_grad():
        after, _ = m(x, x, x)
        monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "dense_select")
        dense, _ = m(x, x, x)
    torch.testing.assert_close(after, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["quantized", "hooked", "weight-needs-gradient"])
def test_the_selected_rows_stand_in_only_for_a_plain_linear_they_compute_alike(monkeypatch, case):
    """A quantized linear, a hooked one (the energy counter, pruning) or a weight that needs its gradient: nn.Linear
    computes, whatever the setting lists."""
    from fairseq_eatt.quantization import QuantizedLinear

    _, m = module(ENCODER_SELF)
    monkeypatch.setitem(selection.GATHERS, "gather_select", lambda *a: pytest.fail("the kept rows stood in"))
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "gather_select")
    x = torch.randn(4, 1, D)
    if case == "quantized":
        m.q_select = QuantizedLinear.from_linear(m.q_select, 2)
        m.k_select = QuantizedLinear.from_linear(m.k_select, 2)
    elif case == "hooked":
        seen = []
        for lin in (m.q_select, m.k_select):
            lin.register_forward_hook(lambda *a: seen.append(1))
    if case == "weight-needs-gradient":  # grad on, the bits need none (an input without gradient)
        m(x, x, x)[0].sum().backward()
        assert m.q_select.weight.grad is not None and m.q_select.weight.grad.abs().sum() > 0
    else:
        with torch.no_grad():
            m(x, x, x)
    if case == "hooked":
        assert seen


def ones_of(m, x, key=None):
    """(query side, key side) ones of the binarized inputs of one call."""
    q_bits, k_bits = m.binary_codes(x, x if key is None else key)
    return float(q_bits.sum()), float(k_bits.sum())


@pytest.mark.parametrize("position", [ENCODER_SELF, DECODER_CROSS])
def test_the_selected_rows_move_what_they_declare(monkeypatch, position):
    cls, m = module(position)
    x, src = torch.randn(7, 1, D) * 1.5, torch.randn(5, 1, D) * 1.5
    key = src if position == DECODER_CROSS else x
    self_attention = position != DECODER_CROSS
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "gather_select")
    with torch.no_grad():
        m(x, key, key)  # builds the kept rows (once: not the traffic of a call)
    _, reads, measured = measure_traffic(m, x, key, key, need_weights=False)
    options = dict(threshold=0.0)
    ones = ones_of(m, x, key)
    declared = cls.cost.byte_counts(7, key.size(0), D, H, "fp32", None, self_attention, selected=ones, **options)
    assert measured == declared
    # each token reads its own rows: over a whole sentence that is more than the dense product, which reads W once
    # for every token of the call (the selection saves reads only below 1 / ratio tokens per call)
    assert reads["q_rows"] == ones[0] * D and reads["k_rows"] == ones[1] * D
    dense = cls.cost.byte_counts(7, key.size(0), D, H, "fp32", None, self_attention, **options)
    assert declared.weights > dense.weights


def test_a_decoder_step_through_the_selected_rows_moves_what_it_declares(monkeypatch):
    cls, m = module(DECODER_SELF)
    x, state = torch.randn(5, 1, D) * 1.5, {}
    monkeypatch.setenv("FAIRSEQ_EATT_BACKEND", "gather_select")
    with torch.no_grad():
        for t in range(4):
            m(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)
    step = x[4:5]
    _, _, measured = measure_traffic(m, step, step, step, incremental_state=state, need_weights=False)
    ones = ones_of(m, step)
    declared = cls.cost.byte_counts(1, 5, D, H, "fp32", 1, True, selected=ones, threshold=0.0)
    assert measured == declared
    # one token: its selected rows only, fewer than the whole W_Q and W_K
    assert declared.weights < cls.cost.byte_counts(1, 5, D, H, "fp32", 1, True, threshold=0.0).weights


def test_auto_keeps_the_dense_selection():
    """No crossover has been measured on a quiet machine yet: auto takes nn.Linear (scripts/bench_selection.py)."""
    from fairseq_eatt.attention.backends import select

    with torch.no_grad():
        assert select("select", torch.zeros(4, D)) == "dense_select"


def test_the_selection_benchmark_records_every_table_and_its_onnx_graph_computes_q(tmp_path):
    """scripts/bench_selection.py at a tiny size: the three tables, and the hand-built ONNX graph of the
    selected rows checked against MatMul (it raises otherwise); its report renders from the record alone."""
    import json

    from fairseq_eatt import reports
    from fairseq_eatt.perf import selection_bench

    selection_bench.main(["--dim", "32", "--heads", "2", "--rows", "1,3", "--repeats", "2", "--out",
                          str(tmp_path / "bench")])
    rec = json.loads((tmp_path / "bench.json").read_text())
    assert [r["rows"] for r in rec["selection"]] == [1, 3] == [r["rows"] for r in rec["onnx"]]
    assert all(r["dense_us"] > 0 and r["gather_us"] > 0 for r in rec["selection"] + rec["onnx"])
    assert all(r["vanilla_us"] > 0 and r["eatt_dense_select_us"] > 0 for r in rec["steps"])
    assert rec["git_commit"] and rec["command"].startswith("python scripts/bench_selection.py")
    assert reports.regenerate(str(tmp_path / "bench.json")) == (tmp_path / "bench.md").read_text()

"""Decoding energy: fairseq's beam search under the counters. For every variant, what each attention call of a
few beam-search steps declares (operations) equals what it executes; traffic and reorders are counted."""
import pytest
import torch

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from fairseq_eatt.energy.decoding import count_generation, energy_of
from fairseq_eatt.energy.tables import BUILTIN

from .test_deployment import mix_flags, sample_of


def unpadded(task, seed=1, bsz=3, length=7):
    """Sentences of one length: the rows of a call share their positions (what a per-call mask computes once)."""
    sample = sample_of(task, seed, bsz, length)
    tokens = sample["net_input"]["src_tokens"]
    tokens[0, :2] = 5
    sample["net_input"]["src_lengths"] = torch.full((bsz,), length)
    return sample
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)


def tiny(data_dir, variant, seed=0):
    torch.manual_seed(seed)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *mix_flags(variant),
                           "--criterion", "label_smoothed_cross_entropy_with_aux")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # hypotheses that differ, so beams reorder
    return task, model.eval()


@pytest.mark.parametrize("padded", [False, True], ids=["same-length", "left-padded"])
@pytest.mark.parametrize("variant", available_attentions())
def test_every_beam_search_step_declares_what_it_executes(data_dir, variant, padded):
    task, model = tiny(data_dir, variant)
    sample = sample_of(task, bsz=3, length=7) if padded else unpadded(task)
    count = count_generation(model, task, [sample], beam=3, max_len_b=4)
    positions = {c.position for c in count.calls}
    assert positions == {ENCODER_SELF, DECODER_SELF, DECODER_CROSS}
    steps = [c for c in count.calls if c.position == DECODER_SELF]
    assert len(steps) >= 2 * 4 and {c.new_keys for c in steps} == {1}  # one new token per step, two layers
    cross = [c for c in count.calls if c.position == DECODER_CROSS]
    assert any(c.new_keys == 0 for c in cross) and any(c.new_keys for c in cross)  # cached after the first step
    for call in count.calls:
        assert call.executed.mul == call.declared.mul, call
        assert call.executed.cmp == call.declared.cmp, call
        assert call.executed.add == pytest.approx(call.declared.add, rel=1e-9), call
    assert count.sentences == 3 and count.target_tokens > 0
    assert count.reorder.reorder > 0  # beam search reorders the decoder's caches
    assert count.other_executed.mul > 0 and count.other_traffic.weights > 0


def test_weights_dominate_a_batch_of_one_and_amortize_over_a_batch(data_dir):
    task, model = tiny(data_dir, "vanilla")
    one = count_generation(model, task, [sample_of(task, seed=s, bsz=1) for s in range(4)], beam=2, max_len_b=4)
    four = count_generation(model, task, [sample_of(task, bsz=4)], beam=2, max_len_b=4)
    per_sentence = lambda c: c.total_traffic().weights / c.sentences  # noqa: E731
    assert per_sentence(four) < per_sentence(one) / 2
    table = BUILTIN["horowitz-45nm-fp32"]
    assert energy_of(one, table, "dram") > energy_of(one, table, "sram") > energy_of(one, table, None)


def test_the_report_renders_from_its_record_and_compares_variants(data_dir):
    from fairseq_eatt import reports
    from fairseq_eatt.energy.decoding_report import measure_model, ratio_lines, record

    table = BUILTIN["horowitz-45nm-fp32"]
    rows = []
    for variant in ("vanilla", "eatt"):
        task, model = tiny(data_dir, variant)
        samples = {1: [unpadded(task, seed=s, bsz=1) for s in range(2)], 2: [unpadded(task, bsz=2)]}
        rows.append({"label": variant, "variant": variant, "decoding": "forced",
                     "batches": measure_model(model, task, samples, table, 2, True, 10)})
    rec = record("fairseq-eatt-energy --decode (test)", rows, table, 2, "tiny")
    text = reports.render(rec)
    assert "## Batch 1" in text and "## Batch 2" in text and "| NO |" not in text
    batch1 = rows[1]["batches"]["1"]
    assert batch1["energy_uj_per_sentence"]["dram"] > batch1["energy_uj_per_sentence"]["sram"] \
        > batch1["energy_uj_per_sentence"]["arithmetic"]
    lines = ratio_lines(rec, "eatt", "vanilla")
    assert lines[0].startswith("batch 1: arithmetic 0.") and len(lines) == 2


@pytest.mark.parametrize("argv, message", [
    (["--decode"], "--decode needs --data"),
    (["--decode", "--data", "."], "--decode needs --path"),
    (["--decode", "--data", ".", "--variants", "eatt", "--batch-sizes", "1,x"], "--batch-sizes must be"),
    (["--decode", "--data", ".", "--variants", "eatt", "--batch-sizes", "0"], "--batch-sizes must be"),
    (["--decode", "--data", ".", "--path", "a.pt", "--labels", "a,b"], "--labels needs one name per --path"),
    (["--measure"], "--measure needs a command"),
    (["--roofline"], "--roofline needs --peak-gops"),
    (["--roofline", "--peak-gops", "0", "--bandwidth-gbs", "1"], "--peak-gops must be positive"),
    (["--path", "a.pt", "--path", "b.pt", "--data", "."], "--path is given once"),
])
def test_energy_command_refuses_bad_flags(argv, message, capsys):
    from fairseq_eatt.cli import energy

    with pytest.raises(SystemExit):
        energy.parse_args(argv)
    assert message in capsys.readouterr().err


def test_roofline_report_and_its_figure(tmp_path):
    from fairseq_eatt import reports
    from fairseq_eatt.cli import energy

    out = tmp_path / "roofline"
    rec = energy.main(["--roofline", "--peak-gops", "100", "--bandwidth-gbs", "10", "--out", str(out)])
    assert (tmp_path / "roofline.png").stat().st_size > 0
    assert reports.regenerate(str(out) + ".json") == (tmp_path / "roofline.md").read_text()
    rows = {(r["variant"], r["call"]): r for r in rec["rows"]["dram"]["1"]}
    step = rows[("vanilla", "decoder self step")]
    # a batch-1 decoding step reads every weight for one token: far below this machine's balance point (10)
    assert step["intensity"] < 1 and step["bound"] == "memory"
    assert rows[("vanilla", "encoder_self full pass")]["intensity"] > rows[("eatt", "encoder_self full pass")]["intensity"]
    batch64 = {(r["variant"], r["call"]): r for r in rec["rows"]["dram"]["64"]}
    assert batch64[("vanilla", "decoder self step")]["intensity"] > 10 * step["intensity"]


def test_pareto_from_a_decoding_report_runs_and_measurements(tmp_path):
    import json
    import os

    from fairseq_eatt import reports
    from fairseq_eatt.cli import energy
    from fairseq_eatt.fairseq_tools import REPO_ROOT

    def row(variant, arithmetic, dram):
        return {"label": variant, "variant": variant, "batches": {"1": {"energy_uj_per_sentence": {
            "arithmetic": arithmetic, "dram": dram, "sram": arithmetic}}}}

    decoding = {"kind": "decoding", "rows": [row("vanilla", 10.0, 100.0), row("eatt", 5.0, 95.0),
                                             row("local", 20.0, 200.0)]}
    (tmp_path / "dec.json").write_text(json.dumps(decoding))
    measured = {"kind": "energy-measured", "machine": {"gpu": "X", "cpu": "Y"},
                "result": {"counters": {"nvml:0 (X)": {"joules_above_idle": 50.0}}}}
    (tmp_path / "m.json").write_text(json.dumps(measured))
    runs = os.path.join(REPO_ROOT, "results", "runs", "multi30k-en-de-small")
    out = tmp_path / "pareto"
    rec = energy.main(["--pareto", str(tmp_path / "dec.json"), "--runs", runs, "--measured",
                       f"vanilla={tmp_path / 'm.json'}@100", "--out", str(out)])
    assert {p["variant"] for p in rec["points"]} == {"vanilla", "eatt", "local"}
    # the lowest energy and the highest BLEU are always on the front
    lowest = min(rec["points"], key=lambda p: p["arithmetic"])["variant"]
    best = max(rec["points"], key=lambda p: p["bleu"])["variant"]
    assert {lowest, best} <= set(rec["fronts"]["arithmetic"]) and rec["fronts"]["measured"] == ["vanilla"]
    by = {p["variant"]: p for p in rec["points"]}
    assert by["vanilla"]["measured"] == pytest.approx(0.5e6) and by["eatt"]["measured"] is None
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert reports.regenerate(str(out) + ".json") == (tmp_path / "pareto.md").read_text()
    with pytest.raises(SystemExit, match="VARIANT=JSON@SENTENCES"):
        energy.main(["--pareto", str(tmp_path / "dec.json"), "--runs", runs, "--measured", "vanilla"])


def test_the_encoder_and_decoder_report_their_forwards_and_a_model_that_does_not_is_refused(data_dir, monkeypatch):
    """The decoding counter learns where the model's work is from the encoder's and decoder's own reports."""
    from fairseq_eatt.attention.observers import observe

    task, model = tiny(data_dir, "eatt")
    seen = []

    class Regions:
        def enter(self, module):
            seen.append(("enter", module))

        def exit(self, module):
            seen.append(("exit", module))

    handles = [observe(model.encoder, Regions()), observe(model.decoder, Regions())]
    sample = sample_of(task, bsz=2, length=5)
    count_generation(model, task, [sample], beam=2, max_len_b=2)
    for handle in handles:
        handle.remove()
    assert seen[0] == ("enter", model.encoder) and seen[1] == ("exit", model.encoder)
    decoder_calls = [event for event, module in seen if module is model.decoder]
    assert decoder_calls.count("enter") == decoder_calls.count("exit") >= 2  # one per decoding step
    # an encoder and a decoder that report nothing (a model from elsewhere)
    monkeypatch.setattr(type(model.encoder), "forward", type(model.encoder).forward_scriptable)
    monkeypatch.setattr(type(model.decoder), "forward", type(model.decoder)._forward)
    with pytest.raises(ValueError, match="report their forwards"):
        count_generation(model, task, [sample], beam=2, max_len_b=2)

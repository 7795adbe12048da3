"""Memory traffic: each variant's declared bytes equal what its calls read and write; energy with memory costs;
measured joules only from counters that exist (a fake powercap tree here)."""
import argparse
import json
import sys

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions, \
    build_attention, get_attention_class
from fairseq_eatt.energy import counters
from fairseq_eatt.energy.measure import measure_traffic
from fairseq_eatt.energy.tables import BUILTIN, load_table
from fairseq_eatt.attention.counts import Traffic

D, H = 16, 4


def module(name, position):
    torch.manual_seed(0)
    cls = get_attention_class(name)
    options = cls.kwargs_from_args(argparse.Namespace(attention_max_length=64), position)
    return cls, options, build_attention(name, D, H, position, **options).eval()


def allowed(position):
    return [n for n in available_attentions() if position in get_attention_class(n).capabilities.allowed_positions()]


@pytest.mark.parametrize("name", available_attentions())
def test_a_full_pass_moves_what_it_declares(name):
    cls, options, m = module(name, ENCODER_SELF)
    x = torch.randn(7, 1, D) * 1.5
    _, _, measured = measure_traffic(m, x, x, x, need_weights=False)
    assert measured == cls.cost.byte_counts(7, 7, D, H, "fp32", None, True, **options)


@pytest.mark.parametrize("name", allowed(DECODER_SELF))
def test_a_decoder_self_step_moves_what_it_declares(name):
    cls, options, m = module(name, DECODER_SELF)
    x, state = torch.randn(5, 1, D) * 1.5, {}
    with torch.no_grad():
        for t in range(4):
            step = x[t:t + 1]
            m(step, step, step, incremental_state=state)
    step = x[4:5]
    _, _, measured = measure_traffic(m, step, step, step, incremental_state=state, need_weights=False)
    declared = cls.cost.byte_counts(1, 5, D, H, "fp32", 1, True, **options)
    assert measured == declared and declared.cache_read > 0 and declared.cache_write > 0


@pytest.mark.parametrize("name", allowed(DECODER_CROSS))
def test_cross_attention_caches_its_source_once_then_reads_it(name):
    cls, options, m = module(name, DECODER_CROSS)
    tgt, src, state = torch.randn(2, 1, D) * 1.5, torch.randn(6, 1, D) * 1.5, {}
    _, _, first = measure_traffic(m, tgt[:1], src, src, static_kv=True, incremental_state=state, need_weights=False)
    assert first == cls.cost.byte_counts(1, 6, D, H, "fp32", 6, False, **options)
    _, _, later = measure_traffic(m, tgt[1:], src, src, static_kv=True, incremental_state=state, need_weights=False)
    assert later == cls.cost.byte_counts(1, 6, D, H, "fp32", 0, False, **options)
    assert later.cache_write == 0 and later.cache_read > 0 and later.weights <= first.weights


def test_the_issue_example_weights_from_dram_dominate():
    """d = 512, 22 tokens, batch 1, weights from DRAM: E-ATT's attention costs about 91% of vanilla's energy
    (the paper's arithmetic-only ratio is about 34%)."""
    table = BUILTIN["paper-asic"]

    def energy(name, memory):
        cls = get_attention_class(name)
        ops = cls.cost.op_counts(22, 22, 512, 8, "paper")["attention"]
        return table.energy(ops) + (table.memory_energy(cls.cost.byte_counts(22, 22, 512, 8), memory) if memory else 0)

    arithmetic = energy("eatt", None) / energy("vanilla", None)
    with_dram = energy("eatt", "dram") / energy("vanilla", "dram")
    assert 0.33 < arithmetic < 0.36 and 0.89 < with_dram < 0.93


def test_precision_and_memory_assumptions():
    cls = get_attention_class("vanilla")
    fp32, fp16 = cls.cost.byte_counts(8, 8, 64, 4, "fp32"), cls.cost.byte_counts(8, 8, 64, 4, "fp16")
    assert fp32.total == 2 * fp16.total
    t = BUILTIN["horowitz-45nm-fp32"]
    assert t.memory_energy(fp32, "dram") > t.memory_energy(fp32, "sram") > 0
    assert t.dram == 160.0 and t.sram == 1.25
    with pytest.raises(ValueError, match="--precision"):
        cls.cost.byte_counts(8, 8, 64, 4, "fp64")
    with pytest.raises(ValueError, match="--memory"):
        Traffic(weights=1).by_level("hbm")


def test_user_tables_take_memory_costs_and_refuse_unknown_keys(tmp_path):
    path = tmp_path / "chip.json"
    path.write_text(json.dumps({"name": "chip", "add": 1, "mul": 2, "dram": 100, "sram": 2}))
    table = load_table(str(path))
    assert table.memory_energy(Traffic(weights=1, activations=1), "dram") == 102
    path.write_text(json.dumps({"name": "chip", "add": 1, "mul": 2, "dram_pj": 100}))
    with pytest.raises(ValueError, match="unknown key.*dram_pj"):
        load_table(str(path))
    path.write_text(json.dumps({"name": "chip", "add": 1, "mul": 2, "sram": -1}))
    with pytest.raises(ValueError, match="'sram' must be a finite number"):
        load_table(str(path))


# ---- measured joules ---------------------------------------------------------------------------------------------

def fake_powercap(root, package_uj=1_000_000, dram_uj=500, wrap_uj=2**32):
    for zone, name, value in (("intel-rapl:0", "package-0", package_uj), ("intel-rapl:0:0", "dram", dram_uj)):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text(f"{value}\n")
        (root / zone / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
    (root / "intel-rapl:1").mkdir()  # a zone whose counter is not readable is left out
    (root / "intel-rapl:1" / "name").write_text("package-1\n")


def test_powercap_zones_are_read_and_wraps_handled(tmp_path):
    fake_powercap(tmp_path)
    found = counters.powercap_counters(str(tmp_path))
    assert [c.name for c in found] == ["powercap:intel-rapl:0 (package-0)", "powercap:intel-rapl:0:0 (dram)"]
    start = counters.read_all(found)
    assert start["powercap:intel-rapl:0 (package-0)"] == 1_000_000  # micro-joules, as the zone counts
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500000\n")  # wrapped past max_energy_range_uj
    end = counters.read_all(found)
    delta = counters.difference(found, start, end)
    assert delta["powercap:intel-rapl:0 (package-0)"] == pytest.approx(2**32 / 1e6 - 0.5)


def test_a_measurement_runs_the_command_and_subtracts_idle(tmp_path):
    fake_powercap(tmp_path)
    energy = tmp_path / "intel-rapl:0" / "energy_uj"
    # the "workload" adds 3 J to the package counter; idle adds nothing (a file does not tick)
    script = f"open({str(energy)!r}, 'w').write(str(1_000_000 + 3_000_000))"
    result = counters.measure_command([sys.executable, "-c", script], idle_s=0.01, powercap_root=str(tmp_path))
    package = result["counters"]["powercap:intel-rapl:0 (package-0)"]
    assert result["returncode"] == 0 and package["joules"] == pytest.approx(3.0)
    assert package["idle_watts"] == 0 and package["joules_above_idle"] == pytest.approx(3.0)


def test_no_counter_means_no_number(tmp_path, monkeypatch):
    monkeypatch.setattr(counters, "nvml_counters", lambda: [])
    with pytest.raises(counters.NoCounterError, match="no readable energy counter"):
        counters.measure_command(["true"], idle_s=0, powercap_root=str(tmp_path / "absent"))


def test_the_measure_command_reports_counters_and_writes_its_record(tmp_path, monkeypatch, capsys):
    from fairseq_eatt.cli import energy

    monkeypatch.setattr(counters, "nvml_counters", lambda: [])
    fake_powercap(tmp_path / "pc")
    target = tmp_path / "pc" / "intel-rapl:0:0" / "energy_uj"
    script = f"open({str(target)!r}, 'w').write('2000500')"  # the DRAM zone counts 2 J
    energy.main(["--powercap-root", str(tmp_path / "pc"), "--idle-seconds", "0.01", "--out", str(tmp_path / "m"),
                 "--measure", "--", sys.executable, "-c", script])
    out = capsys.readouterr().out
    assert "powercap:intel-rapl:0:0 (dram): 2.000 J measured" in out
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["kind"] == "energy-measured" and record["result"]["returncode"] == 0 and record["machine"]
    with pytest.raises(SystemExit, match="no readable energy counter"):
        energy.main(["--powercap-root", str(tmp_path / "none"), "--idle-seconds", "0", "--measure", "--", "true"])


def test_a_measured_command_that_fails_leaves_no_record_and_fails(tmp_path, monkeypatch):
    from fairseq_eatt.cli import energy
    from fairseq_eatt.energy.pareto import parse_measured

    monkeypatch.setattr(counters, "nvml_counters", lambda: [])
    fake_powercap(tmp_path / "pc")
    base = ["--powercap-root", str(tmp_path / "pc"), "--idle-seconds", "0.01", "--out", str(tmp_path / "m")]
    with pytest.raises(SystemExit, match="the command exited with status 3 .*nothing was recorded"):
        energy.main(base + ["--measure", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert not list(tmp_path.glob("m*"))
    with pytest.raises(SystemExit, match="cannot run 'no-such-program-here'"):
        energy.main(base + ["--measure", "--", "no-such-program-here"])
    assert not list(tmp_path.glob("m*"))
    # a record of a failed run written before the refusal existed is not a measurement --pareto accepts
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({"kind": "energy-measured", "machine": {}, "result": {"returncode": 1, "counters": {}}}))
    with pytest.raises(ValueError, match="its command exited with status 1"):
        parse_measured([f"eatt={stale}@10"])


class FakeNVML:
    """A stand-in for pynvml: one GPU whose total-energy counter (millijoules) gives the readings in turn."""

    class NVMLError(Exception):
        pass

    def __init__(self, readings_mj):
        self.readings = iter(readings_mj)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return next(self.readings)


@pytest.mark.parametrize("wraps", [False, True], ids=["plain", "wraparound"])
def test_the_nvml_reader_measures_joules_above_the_idle_baseline(tmp_path, monkeypatch, wraps):
    base = 2**64 - 1_500 if wraps else 10_000  # mJ; wrapping past 2**64 during the command
    # probe, idle start, idle end (+100 mJ over the idle period), command start, command end (+4,000 mJ)
    readings = [base - 200, base - 200, base - 100, base, (base + 4_000) % 2**64]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML(readings))
    result = counters.measure_command(["true"], idle_s=0.05, powercap_root=str(tmp_path / "absent"))
    gpu = result["counters"]["nvml:0 (Fake GPU)"]
    assert gpu["joules"] == pytest.approx(4.0)
    assert gpu["idle_watts"] == pytest.approx(0.1 / 0.05)
    assert gpu["joules_above_idle"] == pytest.approx(4.0 - 2.0 * result["seconds"])


def test_an_nvml_without_an_energy_counter_gives_no_counter(monkeypatch):
    fake = FakeNVML([])

    def unsupported(handle):
        raise FakeNVML.NVMLError("not supported")

    fake.nvmlDeviceGetTotalEnergyConsumption = unsupported
    fake.NVMLError = FakeNVML.NVMLError
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert counters.nvml_counters() == []

"""Energy accounting: the paper's Tables 1, 2 and 7 from declared op counts, the checkpoint report, and the
committed energy files against a regeneration."""
import json
import re

import pytest

from fairseq_eatt.cli import energy as energy_cli
from fairseq_eatt import reports
from fairseq_eatt.attention.counts import OpCounts
from fairseq_eatt.energy.report import counts, paper_report, percent
from fairseq_eatt.energy.tables import BUILTIN, load_table


def row(text, label):
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_table7_reproduces_the_paper_to_two_decimals():
    text = paper_report(22, 512, 8, "paper")
    table7 = text[text.index("### Table 7"):]
    assert row(table7, "alignment") == ["0.45", "0.05"]
    assert row(table7, "attention") == ["34.09", "33.83"]
    assert row(table7, "block") == ["83.17", "83.10"]


def test_table2_rows_follow_the_formulas_at_l22():
    text = paper_report(22, 512, 8, "paper")
    assert row(text, "Dense")[1::2] == ["51.05", "67.59"]
    assert row(text, "RandInit")[1::2] == ["0.00", "33.80"]
    assert row(text, "E-ATT")[1::2] == ["0.45", "34.09"]
    assert "51.10 is what they give at l = 23" in text


def test_paper_formulas_of_appendix_a():
    l, d = 22, 512
    v = counts("vanilla", l, d, 8, "paper")
    assert v["alignment"] == OpCounts(mul=2 * l * d * d + l * l * d, add=2 * l * d * d + l * l * d)
    assert v["block"] == OpCounts(mul=12 * l * d * d + 2 * l * l * d, add=12 * l * d * d + 2 * l * l * d)
    e = counts("eatt", l, d, 8, "paper")
    assert e["alignment"] == OpCounts(mul=0, add=2 * l * d + l * l * d)
    assert e["attention"] == OpCounts(mul=l * d * d + l * l * d, add=l * d * d + 2 * l * d + 2 * l * l * d)
    assert e["block"] == OpCounts(mul=10 * l * d * d + l * l * d, add=10 * l * d * d + 2 * l * d + 2 * l * l * d)


def test_complete_convention_charges_the_selection_and_both_l1_operations():
    asic = BUILTIN["paper-asic"]
    paper = counts("eatt", 22, 512, 8, "paper")
    half = counts("eatt", 22, 512, 8, "complete")  # no measured ratio: 0.5
    sparse = counts("eatt", 22, 512, 8, "complete", ratio=0.1)
    assert half["alignment"].add == 0.5 * 512 * 512 * 44 + 2 * 22 * 22 * 512
    assert sparse["alignment"].add < half["alignment"].add
    assert percent(half["alignment"], paper["alignment"], asic) > 100.0


def test_tool_output_is_stable(capsys):
    energy_cli.main(["--convention", "paper"])
    first = capsys.readouterr().out
    energy_cli.main(["--convention", "paper"])
    assert capsys.readouterr().out == first
    assert "| add | 0.9 | 0.4 |" in first and "| mul | 3.7 | 18.8 |" in first


def test_user_energy_table(tmp_path, capsys):
    path = tmp_path / "chip.json"
    path.write_text(json.dumps({"name": "my-chip", "add": 1.0, "mul": 1.0}))
    assert load_table(str(path)).energy(OpCounts(mul=2, add=3, cmp=1)) == 6.0
    energy_cli.main(["--convention", "paper", "--energy-table", str(path)])
    assert re.search(r"\| alignment \| 0\.45 \| 0\.05 \| [0-9.]+ \|", capsys.readouterr().out)


@pytest.mark.parametrize("content,match", [("{", "not valid JSON"), ('{"add": 1}', "missing 'mul'"),
                                           ('{"add": -1, "mul": 1}', "'add' must be a finite number")])
def test_bad_user_tables_are_refused(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_table(str(path))


def test_checkpoint_energy_per_sentence(demo_run, tmp_path):
    (checkpoint,) = demo_run["workdir"].glob("checkpoints/*/checkpoint_best.pt")
    out = tmp_path / "energy"
    energy_cli.main(["--path", str(checkpoint), "--data", str(demo_run["data_bin"]), "--subset", "test",
                     "--convention", "both", "--out", str(out)])
    record = json.loads((tmp_path / "energy.json").read_text())
    assert record["command"].startswith("fairseq-eatt-energy --path ") and record["date"] and record["machine"]
    results = record["results"]
    assert [r["convention"] for r in results] == ["paper", "complete"]
    for r in results:
        sentences = r["by_sentence"]
        assert len(sentences) == r["sentences"] > 0
        total = sum(s["energy_pj"]["total"] for s in sentences)
        assert r["per_sentence_uj"]["total"] == pytest.approx(total / len(sentences) / 1e6)
        assert r["per_target_token_uj"]["total"] == pytest.approx(total / r["target_tokens"] / 1e6)
        assert set(r["nonzero_ratios"]) >= {"encoder_self_L1", "cross_query_L2", "cross_key_L1"}
        longest = max(sentences, key=lambda s: (s["src_len"], s["tgt_len"]))
        shortest = min(sentences, key=lambda s: (s["src_len"], s["tgt_len"]))
        assert longest["energy_pj"]["total"] > shortest["energy_pj"]["total"]
    assert "| total |" in (tmp_path / "energy.md").read_text()
    assert reports.regenerate(str(tmp_path / "energy.json")) == (tmp_path / "energy.md").read_text()  # round trip


def test_tables_written_with_out_regenerate_from_their_record(tmp_path, capsys):
    user = tmp_path / "chip.json"
    user.write_text(json.dumps({"name": "my-chip", "add": 0.5, "mul": 2.0, "cmp": 0.1}))
    energy_cli.main(["--convention", "complete", "--l", "10", "--energy-table", str(user), "--out", str(tmp_path / "e")])
    text = (tmp_path / "e.md").read_text()
    assert "my-chip" in text and "l = 10" in text and "--energy-table" in text
    assert reports.regenerate(str(tmp_path / "e.json")) == text
    energy_cli.main(["--convention", "complete", "--l", "10", "--energy-table", str(user)])
    assert capsys.readouterr().out.split("## complete convention", 1)[1] == text.split("## complete convention", 1)[1]


def test_measured_ratios_change_the_complete_count_only():
    from types import SimpleNamespace

    from fairseq_eatt.energy.checkpoint import sentence_counts

    args = SimpleNamespace(encoder_embed_dim=16, encoder_attention_heads=2, encoder_layers=1,
                           encoder_ffn_embed_dim=32, decoder_embed_dim=16, decoder_attention_heads=2,
                           decoder_layers=1, decoder_ffn_embed_dim=32, encoder_self_attention="eatt",
                           decoder_self_attention="eatt", decoder_cross_attention="eatt")
    low = {("encoder_self", 1): 0.1, ("decoder_self", 1): 0.1, ("cross_query", 1): 0.1, ("cross_key", 1): 0.1}
    high = {k: 0.9 for k in low}
    for convention, differs in (("paper", False), ("complete", True)):
        a = sentence_counts(args, 9, 7, low, convention)["encoder_self"]
        b = sentence_counts(args, 9, 7, high, convention)["encoder_self"]
        assert (a != b) == differs

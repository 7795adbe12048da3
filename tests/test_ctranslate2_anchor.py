"""CTranslate2 as the deployment anchor: a stock fairseq transformer converted by CTranslate2's own converter
translates like fairseq, and fairseq-eatt-deploy-bench measures it beside the checkpoint's ways (or says how to get
it). CI installs the extra (scripts/setup_env.sh); without it the tests that need it are skipped with the reason."""
import json

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401
from fairseq_eatt.deploy import ctranslate2_anchor

from .test_deployment import sample_of, write_checkpoint
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)

NEEDS_CT2 = pytest.mark.skipif(ctranslate2_anchor.missing() is not None,
                               reason=f"{ctranslate2_anchor.missing()}")
STOCK = ["--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "32",
         "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--encoder-normalize-before",
         "--decoder-normalize-before", "--share-all-embeddings"]


def stock_checkpoint(data_dir, path, seed=0):
    """A stock fairseq transformer (pre-norm, as the demo's) with weights spread so that translations differ."""
    torch.manual_seed(seed)
    task, model, args = build(data_dir, *STOCK)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    write_checkpoint(path, model, args)
    return task, model.eval()


@NEEDS_CT2
def test_ctranslate2_translates_a_converted_stock_transformer_like_fairseq(data_dir, tmp_path):
    import ctranslate2

    task, model = stock_checkpoint(data_dir, tmp_path / "stock.pt")
    out = ctranslate2_anchor.convert(str(tmp_path / "stock.pt"), str(data_dir), str(tmp_path / "ct2"), "float32",
                                     "en", "de")
    sample = sample_of(task, bsz=6, length=8)
    src, d = sample["net_input"]["src_tokens"], task.source_dictionary
    lines = [[d[int(t)] for t in row if t not in (d.pad(), d.eos())] for row in src]
    with torch.no_grad():
        expected = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=10).forward(sample)
    translator = ctranslate2.Translator(out, device="cpu", intra_threads=1)
    tgt = task.target_dictionary
    fairseq_best = [[tgt[int(t)] for t in hyps[0]["tokens"] if t != tgt.eos()] for hyps in expected]
    assert len({tuple(h) for h in fairseq_best}) > 1  # the model translates
    # the converted model computes fairseq's function: the log-probability of each token of fairseq's best
    # hypotheses (</s> included), teacher-forced through CTranslate2, is fairseq's own
    scored = translator.score_batch(lines, fairseq_best)
    for hyps, result in zip(expected, scored):
        torch.testing.assert_close(torch.tensor(result.log_probs), hyps[0]["positional_scores"].float(),
                                   rtol=1e-4, atol=1e-4)
    # and its beam search mostly finds the same: near-ties of a random model may break otherwise
    got = translator.translate_batch(lines, beam_size=2, max_decoding_length=10)
    same = sum(a == r.hypotheses[0] for a, r in zip(fairseq_best, got))
    assert same >= 4, (fairseq_best, [r.hypotheses[0] for r in got])


@NEEDS_CT2
def test_an_eatt_checkpoint_is_not_an_anchor(data_dir, tmp_path):
    torch.manual_seed(0)
    _, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "eatt.pt", model, args)
    with pytest.raises(ctranslate2_anchor.AnchorError, match="stock fairseq transformer"):
        ctranslate2_anchor.convert(str(tmp_path / "eatt.pt"), str(data_dir), str(tmp_path / "ct2"), "int8")


def bench(data_dir, tmp_path, *extra, sizes="1,3"):
    from fairseq_eatt.cli import deploy_bench

    torch.manual_seed(0)
    _, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "checkpoint.pt", model, args)
    stock_checkpoint(data_dir, tmp_path / "stock.pt")
    lines = ["w5 w9 w12 w7", "w30 w4", "w11 w11 w20 w21 w22 w23", "w8 w9"]
    (tmp_path / "src.txt").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "ref.txt").write_text("".join(" ".join(reversed(line.split())) + "\n" for line in lines))
    deploy_bench.main([str(data_dir), "--path", str(tmp_path / "checkpoint.pt"), "--source", str(tmp_path / "src.txt"),
                       "--reference", str(tmp_path / "ref.txt"), "--beam", "2", "--max-len-b", "8",
                       "--anchor", str(tmp_path / "stock.pt"), "--batch-sizes", sizes, "--out",
                       str(tmp_path / "report"), *extra])
    return json.loads((tmp_path / "report.json").read_text()), (tmp_path / "report.md").read_text()


@NEEDS_CT2
def test_the_bench_measures_the_anchor_and_gives_every_ways_ratio_to_ctranslate2_int8(data_dir, tmp_path):
    record, text = bench(data_dir, tmp_path)
    ways = record["measurements"]["ways"]
    assert set(ways) == {"eager", "int8", "torchscript", "onnxruntime", "onnxruntime-int8", "ctranslate2-float32",
                         "ctranslate2-int8"}
    assert record["measurements"]["anchor"] == "ctranslate2-int8"
    assert record["anchor"]["checkpoint"].endswith("stock.pt")
    for way, row in ways.items():
        assert row["ms_per_sentence_mean"] > 0 and row["ms_per_sentence_batch3"] > 0 and row["peak_mib"] > 0
        # ratios of the unrounded times: within what the shown milliseconds (rounded to 0.1) allow
        for key, ratio in (("ms_per_sentence_mean", "ratio_to_anchor_batch1"),
                           ("ms_per_sentence_batch3", "ratio_to_anchor_batch3")):
            mine, anchor = row[key], ways["ctranslate2-int8"][key]
            low, high = max(mine - 0.05, 0) / (anchor + 0.05), (mine + 0.05) / max(anchor - 0.05, 1e-9)
            assert low - 0.01 <= row[ratio] <= high + 0.01, (way, key, mine, anchor, row[ratio])
    assert ways["ctranslate2-int8"]["ratio_to_anchor_batch1"] == 1.0
    # the anchor is another model: no agreement with eager; the exact ways still agree
    assert ways["ctranslate2-int8"]["identical_to_eager"] is None
    assert ways["onnxruntime"]["identical_to_eager"] == 4 and ways["torchscript"]["identical_to_eager"] == 4
    # int8 CTranslate2 stores about a quarter of float32's weights (plus the unquantized embeddings and norms)
    assert ways["ctranslate2-int8"]["size_mib"] < ways["ctranslate2-float32"]["size_mib"]
    assert "x ctranslate2-int8, batch 3" in text and "ctranslate2-float32" in text


@pytest.mark.parametrize("sizes", ["1,3", "1"])
def test_without_ctranslate2_the_bench_measures_the_rest_and_says_how_to_get_it(data_dir, tmp_path, monkeypatch,
                                                                                capsys, sizes):
    monkeypatch.setattr(ctranslate2_anchor, "missing", lambda: "ctranslate2 is not installed (test): "
                        + ctranslate2_anchor.INSTALL_HINT)
    record, text = bench(data_dir, tmp_path, sizes=sizes)
    assert set(record["measurements"]["ways"]) == {"eager", "int8", "torchscript", "onnxruntime", "onnxruntime-int8"}
    assert record["anchor"]["missing"].endswith(ctranslate2_anchor.INSTALL_HINT)
    assert 'pip install "fairseq-eatt[deploy]"' in capsys.readouterr().err
    assert "CTranslate2 anchor not measured" in text and "fairseq-eatt[deploy]" in text
    assert ("ms_per_sentence_batch3" in record["measurements"]["ways"]["eager"]) is (sizes == "1,3")
    assert "against CTranslate2" not in text.splitlines()[0]


@NEEDS_CT2
def test_an_anchor_data_directory_without_dictionaries_is_an_error_naming_it(data_dir, tmp_path):
    stock_checkpoint(data_dir, tmp_path / "stock.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ctranslate2_anchor.AnchorError, match=r"--anchor-data .*empty: .*dict\.en\.txt: no such file"):
        ctranslate2_anchor.convert(str(tmp_path / "stock.pt"), str(tmp_path / "empty"), str(tmp_path / "ct2"),
                                   "int8", "en", "de")


@pytest.mark.parametrize("flags,message", [
    (["--anchor-data", "x"], "--anchor-data applies to --anchor"),
    (["--anchor", "nowhere.pt"], "--anchor nowhere.pt: no such checkpoint file"),
    (["--batch-sizes", "32"], "including 1"),
    (["--batch-sizes", "1,x"], "including 1"),
])
def test_bad_anchor_flags_are_clear_errors(tmp_path, capsys, flags, message):
    from fairseq_eatt.cli import deploy_bench

    for name in ("checkpoint.pt", "src.txt", "ref.txt"):
        (tmp_path / name).write_text("x\n")
    with pytest.raises(SystemExit):
        deploy_bench.main([str(tmp_path), "--path", str(tmp_path / "checkpoint.pt"), "--source",
                           str(tmp_path / "src.txt"), "--reference", str(tmp_path / "ref.txt"), *flags])
    assert message in capsys.readouterr().err


def test_an_old_deploy_record_renders_as_before():
    """results/deploy_demo.json predates the anchor and the batch sizes: its report is unchanged."""
    from fairseq_eatt import reports

    assert reports.regenerate("results/deploy_demo.json") == open("results/deploy_demo.md", encoding="utf-8").read()

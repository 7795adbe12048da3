"""The E-ATT study's recipes: configurations as runs, the longer budget with its dev BLEU curve, the diagnostics
of the study's checkpoints and the study's report; all end to end at a tiny size."""
import json
import os

import pytest

from fairseq_eatt.experiments import recipes as R
from fairseq_eatt.experiments import runner
from fairseq_eatt.experiments.settings import setting
from fairseq_eatt.experiments.study import study_report

from .helpers import multi30k_slice
from .test_experiments import SLICE, experiment


def test_study_configurations_are_runs_with_their_flags():
    runs = R.runs_for("study", "small", ["multi30k-en-de"], [1])
    names = [r.name for r in runs]
    assert names[:2] == ["vanilla-vanilla-vanilla.seed1", "eatt-eatt-eatt.seed1"]
    assert "eatt-eatt-eatt+authors.seed1" in names and "vanilla-vanilla-vanilla+prenorm.seed1" in names
    authors = runs[names.index("eatt-eatt-eatt+authors.seed1")]
    s = setting("multi30k-en-de", "small")
    assert ["--eatt-recipe", "authors"] == runner.train_flags(authors, s, [])[-2:]
    # the plain runs are Table 4's runs (same hash: trained once), a lever's run is another
    assert runner.config_hash(runs[0], s, []) == runner.config_hash(R.uniform("multi30k-en-de", "small", "vanilla", 1),
                                                                    s, [])
    assert runner.config_hash(authors, s, []) != runner.config_hash(runs[1], s, [])
    hybrid = R.study_run("multi30k-en-de", "small", "vanilla-vanilla-eatt", 1)
    assert hybrid.name == "vanilla-vanilla-eatt.seed1" and not hybrid.options


def test_hashes_of_runs_without_options_are_those_of_earlier_versions():
    """Stored results of the paper's tables stay valid: their config hash is unchanged by the study's options."""
    run = R.uniform("multi30k-en-de", "small", "vanilla", 1)
    assert runner.config_hash(run, setting("multi30k-en-de", "small"), []) == "d893aa6d46"  # results/runs/...seed1


def test_study_cli_rejects_unknown_configurations_and_misplaced_flags():
    for args, message in ((["study", "--configs", "eatt+magic"], "unknown configuration eatt+magic"),
                          (["table4", "--configs", "eatt"], "--configs applies to the study and techniques recipes only"),
                          (["table4", "--curve-every", "5"], "--curve-every applies to study-long"),
                          (["study-long,table4"], "run it alone")):
        proc = experiment(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-500:])


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    raw = multi30k_slice(str(root / "raw"), SLICE)
    common = ["--scale", "small", "--local-dir", raw, "--skip-checksum", "--arch", "transformer_eatt_tiny",
              "--warmup-updates", "2", "--plateau-updates", "4", "--bpe-merges", "200", "--workdir", root / "work"]
    results = root / "results"
    experiment("study-long", "--configs", "vanilla,eatt+authors", "--max-update", "4", "--curve-every", "2",
               "--jobs", "2", "--results", results / "study" / "long", *common)
    return {"root": root, "common": common, "results": results}


@pytest.mark.e2e
def test_long_runs_store_a_dev_bleu_curve(tiny_study):
    folder = tiny_study["results"] / "study" / "long" / "multi30k-en-de-small"
    assert sorted(f for f in os.listdir(folder) if f.endswith(".json")) == [
        "eatt-eatt-eatt+authors.seed1.json", "vanilla-vanilla-vanilla.seed1.json"]
    assert (folder / "eatt-eatt-eatt+authors.seed1.test.hyp.gz").exists()  # kept beside the result
    authors = json.loads((folder / "eatt-eatt-eatt+authors.seed1.json").read_text())
    assert [p["num_updates"] for p in authors["curve"]] == [2, 4]
    assert all(0.0 <= p["valid_bleu"] <= 100.0 and p["valid_loss"] is not None for p in authors["curve"])
    assert authors["tag"] == "eatt+authors" and authors["options"] == ["--eatt-recipe", "authors"]
    assert "--eatt-recipe authors" in authors["command"] and "--save-interval-updates 2" in authors["command"]
    # the model was built by the recipe: pre-norm blocks, threshold 0, Q/K of d/h
    assert authors["model"]["normalize_before"] is True
    cross = authors["model"]["attention_options"]["--decoder-cross-attention"]
    assert cross["threshold"] == 0.0 and cross["qk_dim"] == "head-dim" and cross["init"] == "authors"
    run_dir = tiny_study["root"] / "work" / "multi30k-en-de-small" / f"{authors['run']}.{authors['config_hash']}"
    assert (run_dir / "valid.u2.hyp").read_text().count("\n") == SLICE["val"]


@pytest.mark.e2e
def test_a_curve_is_added_to_a_stored_result_without_retraining(tiny_study):
    path = tiny_study["results"] / "study" / "long" / "multi30k-en-de-small" / "vanilla-vanilla-vanilla.seed1.json"
    stored = json.loads(path.read_text())
    curve = stored.pop("curve")
    path.write_text(json.dumps(stored))  # as the runner of an earlier version wrote it
    proc = experiment("study-long", "--configs", "vanilla", "--max-update", "4", "--curve-every", "2",
                      "--results", tiny_study["results"] / "study" / "long", *tiny_study["common"])
    assert "trained, dev curve to decode" in proc.stdout and "fairseq_cli.train" not in proc.stdout
    again = json.loads(path.read_text())
    assert again["curve"] == curve and again["config_hash"] == stored["config_hash"]


@pytest.mark.e2e
def test_study_diagnose_and_report_on_the_tiny_runs(tiny_study):
    results = tiny_study["results"]
    experiment("study-diagnose", "--configs", "vanilla,eatt+authors", "--long-max-update", "4", "--curve-every", "2",
               "--results", results / "runs", *tiny_study["common"])
    payload = json.loads((results / "study" / "diagnostics_long.json").read_text())
    assert [c["label"] for c in payload["checkpoints"]] == ["vanilla", "eatt+authors"]
    authors_rows = payload["checkpoints"][1]["modules"]
    assert all("key_codes" in row for row in authors_rows)
    assert not (results / "study" / "diagnostics_demo.json").exists()  # no demo-budget checkpoint was trained
    status = study_report(str(results / "runs"), str(results / "study" / "long"), str(results / "study"))
    # eatt+authors is pre-norm: its baseline (vanilla+prenorm) was not trained, so nothing is compared
    assert status == {"levers": "not run", "curve": "measured",
                      "verdict": "not run (no configuration has its baseline yet)"}
    text = (results / "study" / "curve.md").read_text()
    assert "| eatt+authors | 1 |" in text and "| vanilla | 1 |" in text and "| dev BLEU | test BLEU |" in text
    assert (results / "study" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_the_study_report_reads_the_paper_recipes_runs_only(tmp_path):
    from fairseq_eatt.experiments.study import study_runs

    from .test_experiments import stored_run, write_runs

    other = dict(stored_run(enc="eatt", test=30.0), eatt_recipe="paper-prenorm", run="eatt-eatt-eatt@paper-prenorm.seed1")
    write_runs(tmp_path, [stored_run(enc="eatt", test=18.0), other])
    found = study_runs(str(tmp_path), "multi30k-en-de", "small")
    assert [r["test"]["bleu"] for r in found["eatt"]] == [18.0]


def test_run_lists_name_the_gpu_a_run_trained_on():
    from fairseq_eatt.experiments.study import machine_label

    assert machine_label({"cpu": "AMD EPYC", "cores": 2, "gpu": None}) == "AMD EPYC"
    assert machine_label({"cpu": "Intel Xeon", "cores": 16, "gpu": "NVIDIA H200"}) == "NVIDIA H200 (Intel Xeon host)"


def test_the_curve_report_counts_runs_without_a_curve_in_the_final_scores(tmp_path):
    from fairseq_eatt.experiments.study import curve_report

    from .test_experiments import stored_run

    curve = [{"num_updates": 500, "valid_bleu": 10.0, "valid_loss": 5.0},
             {"num_updates": 1000, "valid_bleu": 20.0, "valid_loss": 4.5}]
    runs = {"vanilla": [dict(stored_run(seed=1, test=30.0, valid=31.0), curve=curve, _path="a.json"),
                        dict(stored_run(seed=2, test=32.0, valid=33.0), _path="b.json")],
            "eatt": [dict(stored_run(enc="eatt", seed=1, test=28.0, valid=27.0), curve=curve, _path="c.json")]}
    for group in runs.values():
        for r in group:
            r["valid_losses"] = [{"num_updates": 1000, "loss": 4.5}]
    status, text = curve_report(runs, "T", str(tmp_path / "c.png"))
    assert status == "measured"
    assert "| vanilla | 1,2 (1) | 10.00 | 20.00 | 4.50 ± 0.00 | 32.00 ± 1.41 | 31.00 ± 1.41 |" in text
    assert "b.json`" in text and "no dev curve" in text


def _tagged(tag, seed, test, valid, gpu=None):
    from .test_experiments import stored_run

    variant = tag.split("+")[0]
    run = stored_run(enc=variant, seed=seed, test=test, valid=valid)
    flags = ["--encoder-normalize-before", "--decoder-normalize-before"]
    run.update(tag=tag, options=flags, run=f"{variant}-{variant}-{variant}+{tag.split('+', 1)[1]}.seed{seed}")
    run["model"]["normalize_before"] = True
    if gpu:
        run["machine"] = dict(run["machine"], gpu=gpu)
    return run


def test_the_verdict_pairs_seeds_of_one_machine_and_gives_intervals(tmp_path):
    from fairseq_eatt.experiments.study import comparisons, verdict_report

    from .test_experiments import write_runs

    vanilla = [_tagged("vanilla+prenorm", s, 38.0, 38.5) for s in (1, 2, 3)]
    eatt = [_tagged("eatt+prenorm", s, t, v) for s, t, v in ((1, 35.9, 36.4), (2, 36.0, 36.5), (3, 36.1, 36.6))]
    kd = [_tagged("eatt+prenorm+kd", 1, 37.5, 37.0), _tagged("vanilla+prenorm+kd", 1, 38.2, 38.0)]
    gpu = [_tagged("vanilla+prenorm", 4, 30.0, 30.0, gpu="NVIDIA H200"), _tagged("eatt+prenorm", 4, 35.0, 35.0)]
    write_runs(tmp_path / "long", vanilla + eatt + kd + gpu)
    from fairseq_eatt.experiments.study import study_runs

    runs = study_runs(str(tmp_path / "long"), "multi30k-en-de", "small")
    # a distilled E-ATT against the teacher's configuration and against vanilla on the same distilled data
    assert comparisons(runs) == [("eatt+prenorm", "vanilla+prenorm"), ("eatt+prenorm+kd", "vanilla+prenorm"),
                                 ("eatt+prenorm+kd", "vanilla+prenorm+kd"), ("vanilla+prenorm+kd", "vanilla+prenorm")]
    status, text = verdict_report(runs, {}, "T")
    assert status == "measured"
    # seeds 1-3: differences -2.1, -2.0, -1.9: mean -2.00, half-width t(2) * 0.1 / sqrt(3) = 0.25
    row = next(line for line in text.splitlines() if line.startswith("| eatt+prenorm |"))
    assert "| 1,2,3 (left out, other machine: [4]) |" in row and "| -2.00 [-2.25, -1.75] |" in row
    assert "- eatt+prenorm vs vanilla+prenorm: -2.00 [-2.25, -1.75] test BLEU (3 seed(s))" in text
    kd_rows = [line for line in text.splitlines() if line.startswith("| eatt+prenorm+kd |")]
    assert len(kd_rows) == 2 and all("(untested)" in line for line in kd_rows)  # one seed, no hypotheses


def test_readme_verdict_blocks_are_rendered_from_the_committed_results(tmp_path):
    """The verdict in README.md and results/README.md is what aggregating the committed runs gives now."""
    import shutil

    from fairseq_eatt.experiments.study import study_report

    from .helpers import REPO_ROOT

    copies = []
    for name in ("README.md", os.path.join("results", "README.md")):
        copy = tmp_path / name.replace(os.sep, "_")
        shutil.copy(os.path.join(REPO_ROOT, name), copy)
        copies.append(str(copy))
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        study_report("results/runs", "results/study/long", str(tmp_path / "study"),
                     gpu_long_results="results/study/long-h200", convert_results="results/study/convert",
                     index_files=tuple(copies))
    finally:
        os.chdir(cwd)
    for name, copy in zip(("README.md", os.path.join("results", "README.md")), copies):
        committed = open(os.path.join(REPO_ROOT, name), encoding="utf-8").read()
        assert "<!-- verdict:begin -->\n| configuration" in committed, name
        assert open(copy, encoding="utf-8").read() == committed, f"{name}: its verdict block is stale; run " \
                                                                 f"fairseq-eatt-aggregate --eatt-recipe paper"


def test_alignment_energy_as_executed_follows_the_measured_ratio_of_ones():
    from fairseq_eatt.experiments.results import attention_energy, nonzero_ratios

    def run(ratio, variant="eatt"):
        r = _tagged(f"{variant}+prenorm", 1, 30.0, 30.0)
        r["binarization_last_valid"] = {f"{p}_L{i}": ratio for p in ("encoder_self", "decoder_self", "cross_query",
                                                                      "cross_key") for i in (1, 2, 3)}
        return r

    assert nonzero_ratios(run(0.2), "decoder_cross") == (0.2, 0.2) and nonzero_ratios(run(0.2), "encoder_self") == 0.2
    sparse, dense = (attention_energy(run(x), part="alignment", convention="complete") for x in (0.1, 0.5))
    paper = attention_energy(run(0.1), part="alignment")
    assert paper < sparse < dense < 100.0  # the paper counts neither comparisons nor the selected rows' sum
    assert attention_energy(run(0.1, "vanilla"), part="alignment", convention="complete") == 100.0


def test_road_flags_are_checked():
    for args, message in ((["study-convert", "--convert-points", "2,4"], "must rise from 0"),
                          (["table4", "--convert-points", "0,2"], "applies to study-convert"),
                          (["study-convert", "--configs", "eatt+prenorm+kd"], "unknown configuration"),
                          (["study-long", "--configs", "eatt+prenorm+convert"], "unknown configuration")):
        proc = experiment(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-400:])


def test_converted_models_are_compared_with_their_teacher_with_intervals_and_points(tmp_path):
    from fairseq_eatt.experiments.study import convert_report

    teachers = {"vanilla+prenorm": [dict(_tagged("vanilla+prenorm", s, 38.0, 39.0), _path=str(tmp_path / f"t{s}.json"))
                                    for s in (2, 3)]}

    def converted(seed, test, valid, points=None):
        run = _tagged("eatt+prenorm+convert", seed, test, valid)
        run.update(origin=f"convert:vanilla-vanilla-vanilla+prenorm.seed{seed}.cafe",
                   _path=str(tmp_path / f"x{seed}.json"), setting=dict(run["setting"], max_update=2000))
        if points:
            run["points"] = [{"num_updates": n, "test": {"bleu": b}} for n, b in points]
        return run

    status, text = convert_report([converted(2, 37.0, 38.5), converted(3, 36.5, 38.0)], teachers, "T",
                                  str(tmp_path / "c.png"))
    assert status == "measured"
    # test differences -1.0 and -1.5: mean -1.25, half-width t(1) 12.706 * 0.3536 / sqrt(2) = 3.18
    row = next(line for line in text.splitlines() if line.startswith("| 2,3 | 2,000 |"))
    assert "| -1.25 [-4.43, +1.93] (n.s.) |" in row and "| -0.75 [" in row
    assert "Not measured: no run has its points decoded" in text and not (tmp_path / "c.png").exists()
    _, text = convert_report([converted(2, 37.0, 38.5, [(0, 1.0), (250, 30.0), (2000, 37.0)])], teachers, "T",
                             str(tmp_path / "c.png"))
    assert "| 2 | 1.00 | 30.00 | 37.00 | 38.00 |" in text and (tmp_path / "c.png").exists()
    # one seed and no kept hypotheses: no interval, so untested
    assert "| Δ vs teacher | -37.00 (untested) | -8.00 (untested) | -1.00 (untested) | - |" in text

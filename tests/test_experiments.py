"""The paper's recipes: which runs each table needs, the resumable runner end to end at a tiny size, the figure
recipes, and the aggregation of stored JSON results into tables with their status."""
import copy
import json
import os
import subprocess
import sys

import pytest

from fairseq_eatt.attention import available_attentions, get_attention_class
from fairseq_eatt.experiments import recipes as R
from fairseq_eatt.experiments.aggregate import Collection, ResultError, aggregate, attention_energy, load_runs, mean_std
from fairseq_eatt.experiments.settings import SETTINGS, setting

from .helpers import REPO_ROOT, multi30k_slice

SLICE = {"train": 200, "val": 40, "test_2016_flickr": 24}


def experiment(*args, check=True):
    cmd = [sys.executable, "-m", "fairseq_eatt.cli.experiment", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if check and proc.returncode != 0:
        pytest.fail(f"fairseq-eatt-experiment failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return proc


def test_a_run_held_by_another_process_is_skipped_not_trained_twice(tmp_path):
    from fairseq_eatt.experiments import runner

    run = R.uniform("multi30k-en-de", "small", "vanilla", 1)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; os.makedirs(sys.argv[1], exist_ok=True); "
        "h = open(os.path.join(sys.argv[1], '.lock'), 'w'); fcntl.flock(h, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), str(runner.run_dir_of(str(tmp_path), run, "cafe"))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runner.RunBusy, match="another process"):
            with runner.run_lock(runner.run_dir_of(str(tmp_path), run, "cafe")):
                pass
    finally:
        holder.kill()
        holder.wait()
    with runner.run_lock(runner.run_dir_of(str(tmp_path), run, "cafe")):  # released when its holder dies
        pass


# ---- settings and recipes -------------------------------------------------------------------------------------

def test_paper_settings_follow_the_paper():
    """Sec. 4.2 of the E-ATT paper: updates x tokens, dropout, beam and length penalty per task."""
    expected = {"iwslt15-en-vi": (50000, 4096, 0.3, 4, 1.5, "all"),
                "wmt14-en-de": (150000, 32768, 0.1, 4, 0.6, "decoder"),
                "wmt17-zh-en": (200000, 32768, 0.1, 10, 1.5, "decoder")}
    for task, (updates, tokens, dropout, beam, lenpen, shared) in expected.items():
        s = SETTINGS[(task, "paper")]
        assert (s.max_update, s.max_tokens * s.update_freq, s.dropout, s.beam, s.lenpen, s.embeddings) == \
            (updates, tokens, dropout, beam, lenpen, shared), task
        assert (s.arch, s.lr, s.warmup_updates, s.plateau_updates, s.bpe_merges) == \
            ("transformer_eatt", 1e-3, 8000, 20000, 32000)
    assert SETTINGS[("iwslt15-en-vi", "paper")].bleu == "tokenized"  # tokenized BLEU for IWSLT'15, as usual


def test_setting_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="small-scale tasks: multi30k-en-de"):
        setting("wmt14-en-de", "small")
    with pytest.raises(ValueError, match="valid scales are paper, small"):
        setting("multi30k-en-de", "huge")
    assert setting("multi30k-en-de", "small", max_update=7, arch=None).max_update == 7


def test_recipes_list_the_paper_runs_and_share_them():
    t4 = R.runs_for("table4", "paper", R.default_tasks("table4", "paper"), R.default_seeds("table4", "paper"))
    assert len(t4) == 3 * 2 * 5
    t6 = R.runs_for("table6", "small", ["multi30k-en-de"], [1])
    assert len(t6) == 16 and len({(r.encoder_self, r.decoder_cross) for r in t6}) == 16
    assert all(r.encoder_self == r.decoder_self for r in t6)
    t5 = R.runs_for("table5", "small", ["multi30k-en-de"], [1])
    small4 = R.runs_for("table4", "small", ["multi30k-en-de"], R.default_seeds("table4", "small"))
    assert len(small4) == 6 and len(t5) == 4
    # Table 4's seed-1 runs are rows of Table 5 and the diagonal of Table 6: identical specs, trained once
    assert {r for r in small4 if r.seed == 1} <= set(t5) & set(t6)


def test_variants_recipe_puts_each_variant_where_it_can_work():
    runs = R.runs_for("variants", "small", ["multi30k-en-de"], [1])
    assert len(runs) == len(available_attentions())
    for run in runs:
        used = {v for v in run.attention.values() if v != "vanilla"} or {"vanilla"}
        assert len(used) == 1
        (variant,) = used
        allowed = get_attention_class(variant).capabilities.allowed_positions()
        for position, name in run.attention.items():
            assert (name == variant) == (position in allowed), (variant, position)
    linformer = next(r for r in runs if "linformer" in r.attention.values())
    assert linformer.decoder_self == "vanilla"  # linformer cannot be causal


def test_experiment_cli_rejects_bad_input():
    for args, message in ((["table9"], "valid recipes are"), (["table4", "--seeds", "1,x"], "--seeds"),
                          (["table4", "--jobs", "0"], "--jobs must be at least 1"),
                          (["table4", "--scale", "small", "--tasks", "wmt14-en-de"], "small-scale tasks"),
                          (["figure1,table4"], "can be joined"), (["table4", "--max-update", "0"], "--max-update")):
        proc = experiment(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-500:])


def test_dry_run_lists_the_runs_without_training(tmp_path):
    proc = experiment("table4,table5", "--scale", "small", "--dry-run", "--workdir", tmp_path / "w",
                      "--results", tmp_path / "r")
    listed = [line for line in proc.stdout.splitlines() if line.endswith(": to run")]
    assert len(listed) == 8  # 6 of Table 4 + the 2 ablations of Table 5
    assert not (tmp_path / "w").exists()


# ---- the runner end to end, tiny --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    raw = multi30k_slice(str(root / "raw"), SLICE)
    # the paper's recipe keeps plain run names; naming under other recipes has tests of its own
    common = ["--scale", "small", "--eatt-recipe", "paper", "--local-dir", raw, "--skip-checksum",
              "--arch", "transformer_eatt_tiny",
              "--max-update", "4", "--warmup-updates", "2", "--plateau-updates", "4", "--bpe-merges", "200",
              "--workdir", root / "work", "--results", root / "results" / "runs",
              "--figures", root / "results" / "small"]
    proc = experiment("table4", "--seeds", "1", "--jobs", "2", *common)
    return {"root": root, "common": common, "stdout": proc.stdout}


@pytest.mark.e2e
def test_runner_writes_one_complete_json_per_run(tiny_experiment):
    folder = tiny_experiment["root"] / "results" / "runs" / "multi30k-en-de-small"
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
    assert files == ["eatt-eatt-eatt.seed1.json", "vanilla-vanilla-vanilla.seed1.json"]
    # beside each result its kept hypotheses, and the folder's references once
    assert sorted(set(os.listdir(folder)) - set(files)) == sorted(
        [f"{stem}.{split}.hyp.gz" for stem in ("eatt-eatt-eatt.seed1", "vanilla-vanilla-vanilla.seed1")
         for split in ("test", "valid")] + ["references.test.txt.gz", "references.valid.txt.gz"])
    for name in files:
        result = json.loads((folder / name).read_text())
        assert result["valid"]["sentences"] == SLICE["val"] and result["test"]["sentences"] == SLICE["test_2016_flickr"]
        assert 0.0 <= result["test"]["bleu"] <= 100.0 and "tok:13a" in result["test"]["signature"]
        assert result["setting"]["arch"] == "transformer_eatt_tiny" and result["setting"]["max_update"] == 4
        assert result["valid_losses"] and result["valid_losses"][-1]["num_updates"] == 4
        assert result["model"]["embed_dim"] == 64 and result["model"]["params"] > 0
        assert "--seed 1" in result["command"] and result["machine"]["cores"] >= 1
        run_dir = tiny_experiment["root"] / "work" / "multi30k-en-de-small" / f"{result['run']}.{result['config_hash']}"
        hyps = (run_dir / "test.hyp").read_text(encoding="utf-8").splitlines()
        assert len(hyps) == SLICE["test_2016_flickr"]  # every sentence decoded, none dropped by batching
    eatt = json.loads((folder / "eatt-eatt-eatt.seed1.json").read_text())
    assert set(eatt["binarization_last_valid"]) >= {"encoder_self_L1", "cross_key_L2"}


@pytest.mark.e2e
def test_a_finished_training_is_not_restarted(tiny_experiment):
    """fairseq-train restarted on a finished run takes one more update; the runner and distillation check first."""
    from fairseq_eatt.experiments.runner import training_finished, updates_done

    run_dirs = list((tiny_experiment["root"] / "work" / "multi30k-en-de-small").glob("vanilla-vanilla-vanilla.seed1.*"))
    assert len(run_dirs) == 1 and updates_done(str(run_dirs[0])) == 4
    assert training_finished(str(run_dirs[0]), ["--max-update", "4"])
    assert not training_finished(str(run_dirs[0]), ["--max-update", "5"])
    assert not training_finished(str(run_dirs[0] / "nothing-here"), ["--max-update", "4"])


@pytest.mark.e2e
def test_finished_runs_are_skipped_and_changed_settings_are_refused(tiny_experiment):
    root, common = tiny_experiment["root"], list(tiny_experiment["common"])
    path = root / "results" / "runs" / "multi30k-en-de-small" / "vanilla-vanilla-vanilla.seed1.json"
    before = path.stat().st_mtime_ns
    proc = experiment("table4", "--seeds", "1", *common)
    assert "vanilla-vanilla-vanilla.seed1: done" in proc.stdout and path.stat().st_mtime_ns == before
    changed = [("5" if a == "4" and common[i - 1] == "--max-update" else a) for i, a in enumerate(common)]
    proc = experiment("table4", "--seeds", "1", *changed, check=False)
    assert proc.returncode != 0 and "made with other settings" in proc.stderr


@pytest.mark.e2e
def test_figure_recipes_on_the_tiny_runs(tiny_experiment):
    root, common = tiny_experiment["root"], tiny_experiment["common"]
    experiment("figure3", "--seeds", "1", *common)
    ratios = json.loads((root / "results" / "small" / "figure3_multi30k-en-de-small_seed1.json").read_text())["ratios"]
    assert {r["position"] for r in ratios} == {"encoder_self", "decoder_self", "cross_query", "cross_key"}
    experiment("figure2", *common)
    assert (root / "results" / "small" / "figure2_multi30k-en-de-small_eatt.png").stat().st_size > 1000
    assert (root / "results" / "small" / "figure2_multi30k-en-de-small_vanilla.png").stat().st_size > 1000
    experiment("figure1", "--student-dims", "32,16", *common)
    for attention in ("vanilla", "eatt"):
        summary = json.loads((root / "results" / "runs" / "multi30k-en-de-small" / f"figure1.{attention}.json")
                             .read_text())
        energies = [s["energy_vs_vanilla_teacher_size"] for s in summary["students"]]
        assert [s["dim"] for s in summary["students"]] == [32, 16] and energies[0] > energies[1] > 0
    # the teacher's translations of the training set were made once and shared by both student groups
    assert (root / "work" / "multi30k-en-de-small" / "figure1" / "distilled-bin").is_dir()

    report = aggregate(str(root / "results" / "runs"), str(root / "results"), ["small"])["small"]
    assert report["figure1"] == "complete" and report["figure2"] == "complete"
    figure1_md = (root / "results" / "small" / "figure1.md").read_text()
    assert "teacher translations were degenerate (over 1.5 * n + 10 tokens" in figure1_md
    assert "| length ratio |" in figure1_md and "| teacher (vanilla) | 64 |" in figure1_md
    text = (root / "results" / "small" / "table4.md").read_text()
    assert "partial (2 of 6 runs" in text and "**Custom settings**" in text


def test_energy_recipe_writes_the_paper_tables(tmp_path):
    experiment("energy", "--results", tmp_path / "runs")
    text = (tmp_path / "energy.md").read_text()
    assert "Table 7" in text and "| paper-asic" in text


# ---- aggregation on stored JSON -----------------------------------------------------------------------------------

def stored_run(task="multi30k-en-de", scale="small", enc="vanilla", dec=None, cross=None, seed=1, test=20.0,
               valid=21.0):
    """A run result in the runner's format (the fields the aggregation reads)."""
    dec, cross = dec or enc, cross or enc
    signature = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    return {
        "schema": 1, "run": f"{enc}-{dec}-{cross}.seed{seed}", "task": task, "scale": scale, "seed": seed,
        "attention": {"encoder_self": enc, "decoder_self": dec, "decoder_cross": cross}, "config_hash": "abc",
        "setting": SETTINGS[(task, scale)].as_dict(), "extra_train_args": [],
        "model": {"params": 1000, "embed_dim": 256, "heads": 4, "encoder_layers": 3, "decoder_layers": 3},
        "valid": {"bleu": valid, "sentences": 1014, "signature": signature},
        "test": {"bleu": test, "sentences": 1000, "signature": signature},
        "lengths": {"test": {"src": 15.1, "tgt": 15.3}, "valid": {"src": 15.4, "tgt": 16.1}},
        "date": "2026-11-22", "git_commit": "0000000", "threads": 1,
        "machine": {"cpu": "test cpu", "cores": 2, "gpu": None, "torch": "x", "fairseq": "y"},
    }


def write_runs(folder, runs):
    for run in runs:
        path = folder / f"{run['task']}-{run['scale']}" / f"{run['run']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run))


def test_mean_and_sample_std():
    assert mean_std([20.0, 22.0, 24.0]) == "22.00 ± 2.00 (n=3)"
    assert mean_std([19.5]) == "19.50 (n=1)" and mean_std([]) == "-"


def test_table4_aggregates_seeds_and_reports_status(tmp_path):
    runs = [stored_run(enc="vanilla", seed=s, test=t) for s, t in ((1, 24.0), (2, 25.0), (3, 26.0))]
    runs += [stored_run(enc="eatt", seed=s, test=t) for s, t in ((1, 18.0), (2, 19.0))]
    write_runs(tmp_path / "runs", runs)
    report = aggregate(str(tmp_path / "runs"), str(tmp_path / "out"), ["small"])["small"]
    assert report["table4"].startswith("partial (5 of 6 runs; missing: eatt-eatt-eatt.seed3")
    text = (tmp_path / "out" / "small" / "table4.md").read_text()
    assert "| multi30k-en-de | Vanilla | 25.00 ± 1.00 (n=3) |" in text
    assert "| multi30k-en-de | E-ATT | 18.50 ± 0.71 (n=2) |" in text
    write_runs(tmp_path / "runs", [stored_run(enc="eatt", seed=3, test=20.0)])
    assert aggregate(str(tmp_path / "runs"), str(tmp_path / "out"), ["small"])["small"]["table4"] == \
        "complete (6 of 6 runs)"


def test_table6_places_self_in_rows_and_cross_in_columns(tmp_path):
    write_runs(tmp_path / "runs", [stored_run(enc="vanilla", cross="synth_dense", valid=11.0),
                                   stored_run(enc="synth_dense", cross="vanilla", valid=22.0)])
    aggregate(str(tmp_path / "runs"), str(tmp_path / "out"), ["small"])
    text = (tmp_path / "out" / "small" / "table6.md").read_text()
    dev = text.split("dev BLEU (seed 1):")[1].split("test BLEU")[0]
    assert "| Vanilla | - | 11.00 | - | - |" in dev and "| Dense | 22.00 | - | - | - |" in dev


def test_attention_energy_of_stored_runs():
    vanilla, eatt = stored_run(enc="vanilla"), stored_run(enc="eatt")
    assert attention_energy(vanilla) == pytest.approx(100.0)
    assert 25.0 < attention_energy(eatt) < 45.0  # about a third, as the paper's 34% at l = 22, d = 512
    hybrid = stored_run(enc="eatt", dec="eatt", cross="vanilla")
    assert attention_energy(eatt) < attention_energy(hybrid) < 100.0


def test_bad_stored_json_is_named(tmp_path):
    folder = tmp_path / "runs" / "multi30k-en-de-small"
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(ResultError, match="broken.json"):
        load_runs(str(tmp_path / "runs"))
    (folder / "broken.json").write_text(json.dumps({"task": "multi30k-en-de"}))
    with pytest.raises(ResultError, match="missing key"):
        load_runs(str(tmp_path / "runs"))
    run = stored_run()
    dup = copy.deepcopy(run)
    dup["_path"], run["_path"] = "a.json", "b.json"
    with pytest.raises(ResultError, match="same run"):
        Collection([run, dup])


def test_committed_tables_regenerate_byte_for_byte_from_the_committed_json(tmp_path, monkeypatch):
    """Every committed table, figure report and plot made by fairseq-eatt-aggregate is what aggregating the
    committed JSON gives now, for each E-ATT recipe with committed tables, and the study's report too."""
    import filecmp
    import shutil

    from fairseq_eatt.attention.eatt import RECIPES
    from fairseq_eatt.experiments.study import study_report

    monkeypatch.chdir(REPO_ROOT)  # the reports name their inputs as the aggregation command is run: from the root
    results = "results"
    compared = 0
    for recipe in RECIPES:
        committed = R.recipe_folder(results, recipe)
        scales = [s for s in ("small", "paper") if os.path.isdir(os.path.join(committed, s))]
        if not scales:
            continue
        out = tmp_path / recipe
        inputs = {}
        for scale in scales:  # the figures' own files (heat maps, per-seed ratios) are inputs of the reports
            shutil.copytree(os.path.join(committed, scale), out / scale,
                            ignore=shutil.ignore_patterns("*.md", "figure1.png", "figure3.png", "variants.png"))
            inputs[scale] = set(os.listdir(out / scale))  # not compared: they are copies of what is committed
        aggregate(os.path.join(results, "runs"), str(out), scales, recipe)
        if recipe == "paper":
            study_report(os.path.join(results, "runs"), os.path.join(results, "study", "long"), str(out / "study"),
                         gpu_long_results=os.path.join(results, "study", "long-h200"),
                         convert_results=os.path.join(results, "study", "convert"))
            scales.append("study")
        for scale in scales:
            made = sorted(f for f in os.listdir(out / scale)
                          if f.endswith((".md", ".png")) and f not in inputs.get(scale, ()))
            for name in made:
                path = os.path.join(committed, scale, name)
                assert os.path.exists(path), f"{path} is not committed (aggregate writes it)"
                assert filecmp.cmp(path, out / scale / name, shallow=False), f"{path} differs from a regeneration"
                compared += 1
    assert compared >= 10


def test_tokenized_bleu_scoring_for_iwslt(tmp_path):
    """IWSLT'15 is scored on tokenized text with sacreBLEU's tokenizer off (tok:none), as in the literature."""
    from fairseq_eatt.experiments import runner

    refs = ["a b c d .", "e f g h i ."]
    (tmp_path / "test.ref").write_text("\n".join(refs) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # fairseq-generate writes hypotheses in batch order, not in corpus order
    (run_dir / "test.out").write_text(f"D-1\t-0.1\t{refs[1]}\nD-0\t-0.2\t{refs[0]}\n", encoding="utf-8")
    data = runner.PreparedData("unused", "en", "vi", {"test": str(tmp_path / "test.ref")})
    score = runner.decode(str(run_dir), data, SETTINGS[("iwslt15-en-vi", "paper")], "test", str(tmp_path / "log"),
                          False, None, 8)
    assert score["bleu"] == 100.0 and "tok:none" in score["signature"] and score["sentences"] == 2
    (run_dir / "test.out").write_text("D-0\t-0.1\ta b c d .\n", encoding="utf-8")  # one hypothesis missing
    with pytest.raises(runner.RunFailed, match="1 hypotheses for 2 references"):
        runner.decode(str(run_dir), data, SETTINGS[("iwslt15-en-vi", "paper")], "test", str(tmp_path / "log"),
                      False, None, 8)
    assert not (run_dir / "test.out").exists()  # moved aside, so the next run decodes again


def test_aggregation_rewrites_the_status_block_of_the_results_index(tmp_path):
    write_runs(tmp_path / "runs", [stored_run(enc="vanilla")])
    (tmp_path / "out" / "small").mkdir(parents=True)
    stale_plot = tmp_path / "out" / "small" / "figure1.png"
    stale_plot.write_bytes(b"a plot of runs since withdrawn")
    readme = tmp_path / "out" / "README.md"
    readme.write_text("intro\n<!-- status:small:begin -->\nold\n<!-- status:small:end -->\noutro\n")
    aggregate(str(tmp_path / "runs"), str(tmp_path / "out"), ["small"])
    assert not stale_plot.exists()
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| Table 4: vanilla vs E-ATT, several seeds | partial (1 of 6 runs" in text
    assert "| Figure 1: distillation with halved dimensions | not run |" in text


# ---- runs of another E-ATT recipe ----------------------------------------------------------------------------------

def test_the_recipe_is_part_of_a_runs_flags_name_and_identity():
    from fairseq_eatt.experiments import runner

    s = setting("multi30k-en-de", "small")
    paper = R.uniform("multi30k-en-de", "small", "vanilla", 1)
    prenorm = R.RunSpec("multi30k-en-de", "small", "vanilla", "vanilla", "vanilla", 1, recipe="paper-prenorm")
    flags = runner.train_flags(paper, s, [])
    # explicit, so that changing the plugin's default recipe never changes what a run trains
    assert flags[flags.index("--eatt-recipe") + 1] == "paper"
    other = runner.train_flags(prenorm, s, [])
    assert other[other.index("--eatt-recipe") + 1] == "paper-prenorm"
    assert runner.config_hash(paper, s, []) == "d893aa6d46"  # the paper's runs keep their stored hashes
    assert runner.config_hash(prenorm, s, []) != runner.config_hash(paper, s, [])
    assert paper.name == "vanilla-vanilla-vanilla.seed1"
    assert prenorm.name == "vanilla-vanilla-vanilla@paper-prenorm.seed1"


def test_tables_read_the_runs_of_one_recipe_and_say_which(tmp_path):
    runs = [stored_run(enc=v, seed=s, test=t) for v, t in (("vanilla", 24.0), ("eatt", 18.0)) for s in (1, 2, 3)]
    prenorm = [dict(stored_run(enc=v, seed=s, test=t), eatt_recipe="paper-prenorm",
                    run=f"{v}-{v}-{v}@paper-prenorm.seed{s}") for v, t in (("vanilla", 27.0), ("eatt", 26.0))
               for s in (1, 2)]
    write_runs(tmp_path / "runs", runs + prenorm)
    paper_report = aggregate(str(tmp_path / "runs"), str(tmp_path / "paper"), ["small"])["small"]
    other_report = aggregate(str(tmp_path / "runs"), str(tmp_path / "prenorm"), ["small"], "paper-prenorm")["small"]
    assert paper_report["table4"] == "complete (6 of 6 runs)"
    assert other_report["table4"].startswith("partial (4 of 6 runs; missing: vanilla-vanilla-vanilla@paper-prenorm"
                                             ".seed3, eatt-eatt-eatt@paper-prenorm.seed3")
    paper_text = (tmp_path / "paper" / "small" / "table4.md").read_text()
    other_text = (tmp_path / "prenorm" / "small" / "table4.md").read_text()
    assert "| E-ATT | 18.00 ± 0.00 (n=3) |" in paper_text and "`--eatt-recipe paper`" in paper_text
    assert "| E-ATT | 26.00 ± 0.00 (n=2) |" in other_text and "`--eatt-recipe paper-prenorm`" in other_text
    assert "pre-norm" in other_text


def test_experiment_cli_recipe_defaults_and_errors(tmp_path):
    from fairseq_eatt.attention.eatt import DEFAULT_RECIPE
    from fairseq_eatt.cli.experiment import parse_args

    args = parse_args(["table4", "--scale", "small"])
    assert args.eatt_recipe == DEFAULT_RECIPE
    assert args.figures == (os.path.join("results", "small") if DEFAULT_RECIPE == "paper"
                            else os.path.join("results", DEFAULT_RECIPE, "small"))
    args = parse_args(["figure3", "--scale", "small", "--eatt-recipe", "paper-prenorm"])
    assert args.figures == os.path.join("results", "paper-prenorm", "small")
    assert parse_args(["study", "--scale", "small"]).eatt_recipe == "paper"
    proc = experiment("study", "--eatt-recipe", "authors", check=False)
    assert proc.returncode == 2 and "study recipes build their configurations on the paper's" in proc.stderr
    proc = experiment("table4", "--scale", "small", "--eatt-recipe", "paper-prenorm", "--dry-run", "--workdir",
                      tmp_path / "w", "--results", tmp_path / "r")
    listed = [line for line in proc.stdout.splitlines() if line.endswith(": to run")]
    assert len(listed) == 6 and all("@paper-prenorm.seed" in line for line in listed)


def test_example_scripts_aggregate_the_recipe_they_ran():
    script = (f"source {REPO_ROOT}/examples/common.sh; PY=echo; run_recipe table4 small --eatt-recipe paper-prenorm "
              f"--jobs 2; run_recipe table5 small --eatt-recipe=authors; run_recipe study small")
    lines = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    aggregations = [line for line in lines if "fairseq_eatt.cli.aggregate" in line]
    assert [a.split("--eatt-recipe ")[1] for a in aggregations] == ["paper-prenorm", "authors", "paper"]


def test_recipe_flags_that_would_be_ignored_are_refused(tmp_path):
    for args, message in ((["table4", "--train-args", "--eatt-recipe authors"], "give the E-ATT recipe with"),
                          (["energy", "--eatt-recipe", "authors"], "the energy recipe trains nothing")):
        proc = experiment(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-500:])
    write_runs(tmp_path / "runs", [stored_run()])
    proc = subprocess.run([sys.executable, "-m", "fairseq_eatt.cli.aggregate", "--results", str(tmp_path / "runs"),
                           "--eatt-recipe", "paper-prenorm", "--study-long", str(tmp_path / "long"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--study-long: the study builds" in proc.stderr


def test_figure1_counts_the_students_with_their_recipes_options():
    from fairseq_eatt.cli.experiment import recipe_options
    from fairseq_eatt.energy.report import model_counts

    def energy(recipe):
        counts = model_counts("eatt", "eatt", 15, 64, 4, "paper", layers=2, **recipe_options("eatt", recipe))
        return counts.add + counts.mul + counts.cmp

    assert energy("paper-prenorm") == energy("paper")
    assert energy("authors") < energy("paper")  # Q/K of d/h: fewer selections and L1 terms
    assert recipe_options("vanilla", "authors") == {"self_options": {}, "cross_options": {}}

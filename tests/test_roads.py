"""The two roads from a trained vanilla model, through fairseq's tools at a tiny scale: distillation (study-long's
kd configurations) and conversion (study-convert), with the teacher trained first and every result's hypotheses
kept beside it."""
import gzip
import json

import pytest

from .helpers import multi30k_slice
from .test_experiments import SLICE, experiment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def roads(tmp_path_factory):
    root = tmp_path_factory.mktemp("roads")
    raw = multi30k_slice(str(root / "raw"), SLICE)
    common = ["--scale", "small", "--local-dir", raw, "--skip-checksum", "--arch", "transformer_eatt_tiny",
              "--warmup-updates", "2", "--plateau-updates", "4", "--bpe-merges", "200", "--workdir", root / "work",
              "--curve-every", "2"]
    long_dir, convert_dir = root / "results" / "study" / "long", root / "results" / "study" / "convert"
    # the students first: their teacher (vanilla+prenorm, same seed) is trained on the way
    kd = experiment("study-long", "--configs", "eatt+prenorm+kd,vanilla+prenorm+kd", "--max-update", "4",
                    "--results", long_dir, *common)
    conv = experiment("study-convert", "--convert-points", "0,2,4", "--long-max-update", "4",
                      "--results", convert_dir, "--teacher-results", long_dir, *common)
    return {"root": root, "long": long_dir / "multi30k-en-de-small", "convert": convert_dir / "multi30k-en-de-small",
            "kd_stdout": kd.stdout, "convert_stdout": conv.stdout, "common": common, "long_dir": long_dir,
            "convert_dir": convert_dir}


def read(path):
    return json.loads(path.read_text())


def gz_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_students_train_on_the_teachers_translations(roads):
    teacher = read(roads["long"] / "vanilla-vanilla-vanilla+prenorm.seed1.json")
    assert "training the teacher vanilla-vanilla-vanilla+prenorm.seed1 first" in roads["kd_stdout"]
    assert [p["num_updates"] for p in teacher["curve"]] == [2, 4]
    origin = f"kd:{teacher['run']}.{teacher['config_hash']}"
    for name in ("eatt-eatt-eatt+prenorm+kd.seed1", "vanilla-vanilla-vanilla+prenorm+kd.seed1"):
        student = read(roads["long"] / f"{name}.json")
        assert student["origin"] == origin
        assert f"distilled/{teacher['run']}.{teacher['config_hash']}/distilled-bin" in student["command"]
        assert student["config_hash"] != teacher["config_hash"]
    folder = roads["root"] / "work" / "multi30k-en-de-small" / "distilled" / origin.split(":", 1)[1]
    record = json.loads((folder / "distilled-bin" / "distillation.json").read_text())
    assert record["sentences"] == SLICE["train"] and record["teacher"] == origin.split(":", 1)[1]
    distilled = (folder / "distilled-text" / "train.de").read_text().splitlines()
    assert len(distilled) == SLICE["train"]
    # the translations are kept beside the teacher's result, for students trained where the teacher is not
    kept = roads["long"] / "distilled" / origin.split(":", 1)[1]
    assert gz_lines(kept / "train.de.gz") == distilled
    assert json.loads((kept / "distillation.json").read_text()) == record


def test_students_elsewhere_train_from_the_kept_translations_without_the_teacher(roads, tmp_path):
    import shutil

    results = tmp_path / "long"
    shutil.copytree(roads["long_dir"], results)
    students = ("eatt-eatt-eatt+prenorm+kd.seed1", "vanilla-vanilla-vanilla+prenorm+kd.seed1")
    for name in students:
        (results / "multi30k-en-de-small" / f"{name}.json").unlink()
    common = [a if a != roads["root"] / "work" else tmp_path / "work" for a in roads["common"]]  # a new machine
    proc = experiment("study-long", "--configs", "eatt+prenorm+kd,vanilla+prenorm+kd", "--max-update", "4",
                      "--results", results, *common)
    assert "the teacher is not needed" in proc.stdout
    assert "training the teacher" not in proc.stdout and "training it again" not in proc.stdout
    assert not list((tmp_path / "work").glob("multi30k-en-de-small/vanilla-vanilla-vanilla+prenorm.seed1.*"))
    for name in students:  # the same distilled data on the same machine: the same students
        again, first = read(results / "multi30k-en-de-small" / f"{name}.json"), read(roads["long"] / f"{name}.json")
        assert (again["valid"]["bleu"], again["test"]["bleu"]) == (first["valid"]["bleu"], first["test"]["bleu"])


def test_every_run_keeps_its_hypotheses_for_rescoring(roads):
    refs = gz_lines(roads["long"] / "references.test.txt.gz")
    assert len(refs) == SLICE["test_2016_flickr"] and len(gz_lines(roads["long"] / "references.valid.txt.gz")) == \
        SLICE["val"]
    for name in ("vanilla-vanilla-vanilla+prenorm.seed1", "eatt-eatt-eatt+prenorm+kd.seed1"):
        hyps = gz_lines(roads["long"] / f"{name}.test.hyp.gz")
        run = read(roads["long"] / f"{name}.json")
        assert len(hyps) == len(refs)
        import sacrebleu

        # re-scoring the kept hypotheses gives the stored BLEU
        assert round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2) == run["test"]["bleu"]
        assert round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2) == run["test"]["chrf"]


def test_conversion_is_fine_tuned_and_scored_at_each_point(roads):
    teacher = read(roads["long"] / "vanilla-vanilla-vanilla+prenorm.seed1.json")
    run = read(roads["convert"] / "eatt-eatt-eatt+prenorm+convert.seed1.json")
    assert run["origin"] == f"convert:{teacher['run']}.{teacher['config_hash']}"
    assert [p["num_updates"] for p in run["points"]] == [0, 2, 4]
    assert all(0 <= p[s]["bleu"] <= 100 for p in run["points"] for s in ("valid", "test"))
    assert "--finetune-from-model" in run["command"] and "converted-eatt-eatt-eatt.pt" in run["command"]
    assert "--finetune-from-model" not in run["extra_train_args"]  # the origin names it in the run's identity
    for updates in (0, 2, 4):
        assert len(gz_lines(roads["convert"] / f"eatt-eatt-eatt+prenorm+convert.seed1.u{updates}.test.hyp.gz")) == \
            SLICE["test_2016_flickr"]
    assert run["model"]["attention_options"]["--decoder-cross-attention"]["threshold"] == 1.0
    assert "training the teacher" not in roads["convert_stdout"]  # it exists: reused, not retrained


def test_a_finished_road_is_not_run_again(roads):
    proc = experiment("study-convert", "--convert-points", "0,2,4", "--long-max-update", "4",
                      "--results", roads["convert_dir"], "--teacher-results", roads["long_dir"], *roads["common"])
    assert "eatt-eatt-eatt+prenorm+convert.seed1: done" in proc.stdout and "fairseq_cli.train" not in proc.stdout


def test_a_teacher_without_its_checkpoint_is_trained_again_and_checked(roads, tmp_path):
    import shutil

    teachers = tmp_path / "teachers"
    shutil.copytree(roads["long_dir"], teachers)
    common = [a if a != roads["root"] / "work" else tmp_path / "work" for a in roads["common"]]  # a new machine
    args = ["study-convert", "--convert-points", "0,2", "--long-max-update", "4", "--results", tmp_path / "convert",
            "--teacher-results", teachers, *common]
    proc = experiment(*args)
    assert "training it again to reproduce it" in proc.stdout
    converted = tmp_path / "convert" / "multi30k-en-de-small" / "eatt-eatt-eatt+prenorm+convert.seed1.json"
    first = read(converted)
    assert first["points"] and "retrained" not in first
    # a result whose points were never decoded and whose checkpoints are gone is trained again, and says whether
    # it reproduced itself
    converted.write_text(json.dumps({k: v for k, v in first.items() if not k.startswith("points")}))
    run_dir, = (tmp_path / "work").glob("multi30k-en-de-small/eatt-eatt-eatt+prenorm+convert.seed1.*")
    for kept in run_dir.glob("checkpoint_*_*.pt"):
        kept.unlink()
    proc = experiment(*args, check=False)  # a finished training cannot give them back: it is not touched
    assert proc.returncode != 0 and "a finished training without the checkpoints kept after updates [2]" in \
        proc.stdout + proc.stderr
    shutil.rmtree(run_dir)
    experiment(*args)
    again = read(converted)
    assert again["retrained"]["reproduced"] is True and again["retrained"]["previous"]["test_bleu"] == \
        first["test"]["bleu"]
    assert again["points"] == first["points"]
    # a stored result the retrained teacher does not reproduce is refused, not silently replaced
    path = teachers / "multi30k-en-de-small" / "vanilla-vanilla-vanilla+prenorm.seed1.json"
    stored = read(path)
    stored["test"]["bleu"] += 1.0
    path.write_text(json.dumps(stored))
    for best in (tmp_path / "work").glob("multi30k-en-de-small/vanilla-vanilla-vanilla+prenorm.seed1.*/"
                                         "checkpoint_best.pt"):
        best.unlink()
    shutil.rmtree(tmp_path / "convert")
    proc = experiment(*args, check=False)
    assert proc.returncode != 0 and "trained again here, scores test BLEU" in proc.stderr + proc.stdout

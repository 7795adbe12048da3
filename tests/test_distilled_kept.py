"""The teacher's translations kept beside its result: a later call rebuilds the distilled training set from them
without the teacher, and refuses ones made with other settings or cut short."""
import gzip
import json

import pytest

from fairseq_eatt.experiments import distill

RECORD = {"teacher": "vanilla-vanilla-vanilla+prenorm.seed2.cafe", "teacher_beam": 4, "max_len_a": 1.5,
          "max_len_b": 10}


def test_kept_translations_come_back_in_order(tmp_path):
    sources, targets = ["a b", "c", "d e f"], ["x", "y z", "w"]
    distill.keep_translations(str(tmp_path), dict(RECORD, sentences=3, reference_fallbacks=1), sources, targets,
                              "en", "de")
    assert distill.read_kept(str(tmp_path), RECORD, "en", "de") == (sources, targets, 1)
    with gzip.open(tmp_path / "train.de.gz", "rt", encoding="utf-8") as handle:
        assert handle.read() == "x\ny z\nw\n"
    stored = json.loads((tmp_path / "distillation.json").read_text())
    assert stored == dict(RECORD, sentences=3, reference_fallbacks=1)


def test_kept_translations_of_another_teacher_are_refused(tmp_path):
    distill.keep_translations(str(tmp_path), dict(RECORD, sentences=1, reference_fallbacks=0), ["a"], ["x"], "en", "de")
    other = dict(RECORD, teacher="vanilla-vanilla-vanilla+prenorm.seed3.beef")
    with pytest.raises(SystemExit, match="other distillation settings .*teacher"):
        distill.read_kept(str(tmp_path), other, "en", "de")


def test_kept_translations_cut_short_are_refused(tmp_path):
    distill.keep_translations(str(tmp_path), dict(RECORD, sentences=2, reference_fallbacks=0), ["a", "b"], ["x", "y"],
                              "en", "de")
    with gzip.open(tmp_path / "train.de.gz", "wt", encoding="utf-8") as handle:
        handle.write("x\n")
    with pytest.raises(SystemExit, match="2 sources and 1 translations where its distillation.json says 2"):
        distill.read_kept(str(tmp_path), RECORD, "en", "de")


def test_the_record_names_the_teacher_by_its_run_where_given():
    config = distill.DistillConfig("data", "/tmp/x/checkpoint_best.pt", "w", "en", "de")
    assert distill.distillation_record(config)["teacher"] == "/tmp/x/checkpoint_best.pt"
    named = distill.DistillConfig("data", "", "w", "en", "de", teacher_id="vanilla.seed2.cafe")
    assert distill.distillation_record(named)["teacher"] == "vanilla.seed2.cafe"

"""Every report committed under results/ is what its committed record renders to today, byte for byte: a change
of the rendering, of the declared operation counts or of the parameter counts shows here. (The tables and figures
made from run JSON by fairseq-eatt-aggregate are checked in test_experiments.py.)"""
import ast
import glob
import json
import os

import pytest

from fairseq_eatt import reports
from fairseq_eatt.cli.report_kinds import REPORT_MODULES  # registers every kind's renderer

from .helpers import PLUGIN_DIR, REPO_ROOT

RESULTS = os.path.join(REPO_ROOT, "results")


def kind(path):
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return data.get("kind") if isinstance(data, dict) else None


RECORDS = sorted(p for p in glob.glob(os.path.join(RESULTS, "*.json")) if kind(p) is not None)


def test_every_top_level_json_is_a_report_record():
    """A JSON file under results/ (top level) without a record kind would escape the regeneration below."""
    unknown = [os.path.basename(p) for p in glob.glob(os.path.join(RESULTS, "*.json"))
               if kind(p) is None and os.path.basename(p) != "performance.json"]
    assert not unknown, f"results files that are not report records: {unknown}"


def test_every_top_level_report_has_a_record():
    """Each results/*.md (but the index) is rendered from a record: nothing there is written by hand."""
    made = {os.path.splitext(p)[0] for p in RECORDS}
    made.add(os.path.join(RESULTS, "performance"))  # fairseq-eatt-bench's report: checked below
    written = {os.path.splitext(p)[0] for p in glob.glob(os.path.join(RESULTS, "*.md"))} - {
        os.path.join(RESULTS, "README")}
    assert written <= made, f"reports without a record: {sorted(written - made)}"


@pytest.mark.parametrize("record", RECORDS, ids=os.path.basename)
def test_committed_report_regenerates_byte_for_byte(record):
    with open(os.path.splitext(record)[0] + ".md", encoding="utf-8") as handle:
        assert reports.regenerate(record) == handle.read()


def test_the_benchmark_report_regenerates_from_its_json():
    from fairseq_eatt.perf.report import markdown

    with open(os.path.join(RESULTS, "performance.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(RESULTS, "performance.md"), encoding="utf-8") as handle:
        assert markdown(report) == handle.read()


def _registers_a_renderer(path):
    """Whether the module at ``path`` decorates a function with ``renderer(...)`` (or ``reports.renderer(...)``)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        for decorator in getattr(node, "decorator_list", []):
            call = decorator.func if isinstance(decorator, ast.Call) else None
            if getattr(call, "id", None) == "renderer" or getattr(call, "attr", None) == "renderer":
                return True
    return False


def test_every_module_that_renders_a_kind_is_listed():
    """reports.py imports no producer: a renderer whose module REPORT_MODULES leaves out would go unregistered."""
    found = set()
    for path in glob.glob(os.path.join(PLUGIN_DIR, "**", "*.py"), recursive=True):
        if _registers_a_renderer(path):
            relative = os.path.relpath(path, os.path.dirname(PLUGIN_DIR))
            found.add(relative[:-len(".py")].replace(os.sep, "."))
    assert found == {module.__name__ for module in REPORT_MODULES}


def test_a_record_of_an_unknown_kind_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"kind": "nonsense"}))
    with pytest.raises(ValueError, match="known kinds"):
        reports.regenerate(str(path))

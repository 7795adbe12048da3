"""Every module that renders a kind of report record (``@reports.renderer(kind)``), imported here so that whatever
renders records of any kind finds them all: the regeneration of results/ and its test. reports.py imports none of
them, as they sit above it."""
from ..energy import decoding_report, files, pareto, roofline
from ..experiments import techniques
from .. import breaks
from ..perf import deploy, params, precision, selection_bench

REPORT_MODULES = (decoding_report, files, pareto, roofline, techniques, deploy, params, precision, breaks,
                  selection_bench)

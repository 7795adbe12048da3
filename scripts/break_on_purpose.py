"""Break a path of the code on purpose and check that a test catches it: the proof that the tests can fail.

    .venv/bin/python scripts/break_on_purpose.py [--only NAME,...] [--out results/reliability/deliberate_breaks]

Each break replaces one exact piece of a source file (it must occur once), runs the tests named for it, restores the
file whatever happens, and records which tests failed. A break that no test catches makes the command exit 1. Each
test selection is run unbroken first: a selection that fails on intact code proves nothing.

The breaks are applied to a copy of the committed tree (``git archive HEAD``, with the kernel compiled in the working
tree, since a copy is not built), imported through PYTHONPATH: the working tree is never touched, so editing or
committing while it runs is safe. The list of breaks is the working tree's fairseq_eatt/breaks.py.
"""
import argparse
import glob
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fairseq_eatt.breaks import BREAKS, Break  # noqa: E402


def snapshot() -> str:
    """A copy of the committed tree and the compiled kernel (ignored by git, built in place)."""
    copy = tempfile.mkdtemp(prefix="breaks-")
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(copy, filter="data")
    for built in glob.glob(os.path.join(ROOT, "fairseq_eatt", "*.so")):
        shutil.copy(built, os.path.join(copy, "fairseq_eatt"))
    return copy


def run_tests(copy: str, tests: List[str]):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *tests]
    env = dict(os.environ, PYTHONPATH=copy + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, env=env)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)))
    return proc.returncode, failed, proc.stdout[-1500:]


def apply(copy: str, brk: Break) -> str:
    path = os.path.join(copy, brk.path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if text.count(brk.old) != 1:
        raise SystemExit(f"break {brk.name}: {brk.path} holds {text.count(brk.old)} copies of {brk.old!r}, "
                         f"not one; update fairseq_eatt/breaks.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace(brk.old, brk.new))
    return text


def main(argv=None):
    from fairseq_eatt import reports
    from fairseq_eatt.provenance import provenance

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None, help="comma-separated break names (default: all: "
                   + ", ".join(b.name for b in BREAKS) + ")")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md (e.g. results/reliability/"
                   "deliberate_breaks)")
    args = p.parse_args(argv)
    names = {b.name for b in BREAKS}
    chosen = args.only.split(",") if args.only else [b.name for b in BREAKS]
    unknown = sorted(set(chosen) - names)
    if unknown:
        p.error(f"--only: unknown break(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    rows = []
    tested = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    copy = snapshot()
    try:
        for brk in [b for b in BREAKS if b.name in chosen]:
            rc, failed, tail = run_tests(copy, brk.tests)
            if rc != 0:
                raise SystemExit(f"break {brk.name}: its tests fail on intact code, so they prove nothing:\n{tail}")
            original = apply(copy, brk)
            try:
                rc, failed, tail = run_tests(copy, brk.tests)
            finally:
                with open(os.path.join(copy, brk.path), "w", encoding="utf-8") as handle:
                    handle.write(original)
            caught = rc != 0 and bool(failed)
            print(f"[break] {brk.name}: {'caught by ' + ', '.join(failed) if caught else 'NOT CAUGHT'}", flush=True)
            rows.append({"name": brk.name, "what": brk.what, "file": brk.path, "tests": brk.tests,
                         "caught": caught, "failed": failed})
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    rec = {"kind": "deliberate_breaks", "tested_commit": tested, "breaks": rows,
           **provenance("python scripts/break_on_purpose.py" + (f" --only {args.only}" if args.only else ""))}
    if args.out:
        reports.publish(args.out, rec)
    if not all(r["caught"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

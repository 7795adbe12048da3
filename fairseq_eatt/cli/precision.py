"""fairseq-eatt-precision: decode one checkpoint in float32, int8 (dynamic quantization) and bfloat16, and compare.

    fairseq-eatt-precision DATA --path ckpt.pt --out results/precision_demo [fairseq-generate flags]

Reports model size, sacreBLEU against the references, sacreBLEU against float32's own translations and decoding
time for each; with --out writes OUT.json (the measurements, command, date, machine, commit) and OUT.md (rendered
from it). Every flag it does not know goes to fairseq-eatt-generate (e.g. --gen-subset test --beam 4
--post-process subword_nmt --tokenizer moses); --user-dir is the plugin's unless given.
"""
import argparse
import os
import shlex
import sys

from .. import reports
from ..provenance import PLUGIN_DIR
from ..perf.precision import MODES, PrecisionError, compare, record


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fairseq-eatt-precision", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory of the checkpoint")
    p.add_argument("--path", required=True, help="checkpoint to decode")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--note", default=None, help="what the checkpoint is, for the report")
    args, generate_flags = p.parse_known_args(argv)
    for path, flag in ((args.data, "DATA"), (args.path, "--path")):
        if not os.path.exists(path):
            p.error(f"{flag} {path}: no such file or folder")
    bad = [f for f in generate_flags if f.split("=", 1)[0] in ("--quantize", "--inference-dtype")]
    if bad:
        p.error(f"{bad[0].split('=', 1)[0]}: this tool decodes with every precision ({', '.join(MODES)}); give "
                f"fairseq-generate flags only")
    return args, generate_flags


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args, flags = parse_args(argv)
    plugin = [] if "--user-dir" in flags else ["--user-dir", PLUGIN_DIR]
    try:
        result = compare(args.data, args.path, plugin + flags)
    except PrecisionError as err:
        sys.exit(f"fairseq-eatt-precision: {err}")
    rec = record(shlex.join(["fairseq-eatt-precision"] + argv), args.data, args.path, flags, result, args.note)
    reports.publish(args.out, rec)


if __name__ == "__main__":
    main()

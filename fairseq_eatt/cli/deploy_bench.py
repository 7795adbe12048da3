"""fairseq-eatt-deploy-bench: one checkpoint as PyTorch eager, int8, TorchScript and ONNX Runtime, compared.

    fairseq-eatt-deploy-bench DATA --path ckpt.pt --source test.bpe.en --reference test.de [--export DIR]
        [--target-lang de] [--beam 4] [--limit N] [--batch-sizes 1,32] [--anchor vanilla.pt [--anchor-data DIR]]
        [--out results/deploy_demo]

--source: the test sentences tokenized and split into subwords as the model was trained (e.g. the demo's
work/demo/bpe8000/test_2016_flickr.en); --reference: the raw reference translations. Hypotheses are detokenized
(BPE removed, Moses detokenizer of --target-lang) before sacreBLEU. --export: an existing fairseq-eatt-export
directory of the checkpoint (default: export into a temporary one). With --out, writes OUT.json (measurements and
provenance) and OUT.md (rendered from it).
"""
import argparse
import os
import shlex
import sys
import tempfile

from .. import reports
from ..deploy import ctranslate2_anchor
from ..deploy.onnx_export import ExportError, export_checkpoint
from ..deploy.ort_translate import postprocessor
from ..perf.deploy import DeployBenchError, measure, record


def batch_sizes_arg(text: str):
    try:
        sizes = tuple(sorted({int(t) for t in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers including 1, got {text!r}") from None
    if not sizes or sizes[0] != 1:
        raise argparse.ArgumentTypeError(f"comma-separated positive integers including 1, got {text!r}")
    return sizes


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fairseq-eatt-deploy-bench", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory of the checkpoint")
    p.add_argument("--path", required=True, help="checkpoint")
    p.add_argument("--source", required=True, help="test source sentences, tokenized and with BPE, one per line")
    p.add_argument("--reference", required=True, help="raw reference translations, one per line")
    p.add_argument("--export", default=None, help="fairseq-eatt-export directory of the checkpoint")
    p.add_argument("--target-lang", default="de", help="language of the Moses detokenizer (default: de)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--max-len-b", type=int, default=200)
    p.add_argument("--limit", type=int, default=None, help="the first N sentences only")
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.add_argument("--note", default=None, help="what the checkpoint is, for the report")
    p.add_argument("--anchor", default=None, metavar="VANILLA.pt",
                   help="a stock fairseq transformer (--arch transformer) of the same shape, trained the same way: "
                        "converted by CTranslate2 (float32 and int8) and measured beside the checkpoint's ways; "
                        "every way's time is also given as a ratio to CTranslate2 int8's. Needs ctranslate2 "
                        "(pip install \"fairseq-eatt[deploy]\"); without it the rest is measured and the report "
                        "says how to get it")
    p.add_argument("--anchor-data", default=None, metavar="DIR",
                   help="the anchor's binarized data directory (default: DATA)")
    p.add_argument("--batch-sizes", default="1", type=batch_sizes_arg, metavar="1,32",
                   help="batch sizes to time (consecutive chunks of the test sentences); 1 must be among them "
                        "(its hypotheses are scored). Default: 1")
    args = p.parse_args(argv)
    if args.anchor_data and not args.anchor:
        p.error("--anchor-data applies to --anchor, which is not given")
    if args.anchor and not os.path.isfile(args.anchor):
        p.error(f"--anchor {args.anchor}: no such checkpoint file")
    if args.anchor_data and not os.path.isdir(args.anchor_data):
        p.error(f"--anchor-data {args.anchor_data}: no such folder")
    for path, flag in ((args.data, "DATA"), (args.path, "--path"), (args.source, "--source"),
                       (args.reference, "--reference")):
        if not os.path.exists(path):
            p.error(f"{flag} {path}: no such file or folder")
    if args.export and not os.path.isfile(os.path.join(args.export, "export.json")):
        p.error(f"--export {args.export}: no export.json there (write one with fairseq-eatt-export)")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with open(args.source, encoding="utf-8") as handle:
        sources = handle.read().splitlines()
    with open(args.reference, encoding="utf-8") as handle:
        references = handle.read().splitlines()
    if not sources:
        sys.exit(f"fairseq-eatt-deploy-bench: --source {args.source} is empty (give the test sentences, tokenized and "
                 f"with BPE, one per line)")
    if len(sources) != len(references):
        sys.exit(f"fairseq-eatt-deploy-bench: --source has {len(sources)} lines, --reference {len(references)}")
    if args.limit:
        sources, references = sources[:args.limit], references[:args.limit]
    anchor = None
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.export or os.path.join(tmp, "export")
        try:
            anchor_dirs = None  # {} where --anchor was given but ctranslate2 is missing
            if args.anchor:
                why = ctranslate2_anchor.missing()
                if why:
                    print(f"fairseq-eatt-deploy-bench: the CTranslate2 anchor is not measured: {why}",
                          file=sys.stderr)
                    anchor, anchor_dirs = {"missing": why}, {}
                else:
                    anchor_data = args.anchor_data or args.data
                    anchor_dirs = {q: ctranslate2_anchor.convert(args.anchor, anchor_data,
                                                                 os.path.join(tmp, f"ct2-{q}"), q)
                                   for q in ctranslate2_anchor.QUANTIZATIONS}
                    anchor = {"checkpoint": args.anchor, "data": anchor_data}
            if not args.export:
                export_checkpoint(args.data, args.path, export_dir)
            measured = measure(args.data, args.path, export_dir, sources, references, postprocessor(args.target_lang),
                               args.beam, args.lenpen, args.max_len_b, anchor_dirs=anchor_dirs,
                               batch_sizes=args.batch_sizes)
        except (ExportError, DeployBenchError, ctranslate2_anchor.AnchorError) as err:
            sys.exit(f"fairseq-eatt-deploy-bench: {err}")
    rec = record(shlex.join(["fairseq-eatt-deploy-bench"] + argv), args.data, args.path, args.export, measured,
                 args.note, anchor)
    reports.publish(args.out, rec)


if __name__ == "__main__":
    main()

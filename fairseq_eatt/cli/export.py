"""fairseq-eatt-export: export a checkpoint to ONNX for ONNX Runtime (edge deployment), checked against the model.

    fairseq-eatt-export DATA --path ckpt.pt --out DIR [--bpe-codes CODES] [--tokenizer moses]

Writes DIR/encoder.onnx, decoder_first.onnx, decoder_step.onnx (the decoding state as explicit inputs and outputs),
the dictionaries, the BPE codes, export.json and ort_translate.py, a translator that needs only numpy and
onnxruntime (plus sacremoses and subword-nmt for raw text):

    python DIR/ort_translate.py DIR --beam 5 < source.txt > translations.txt

Before anything is kept, the graphs decode random sources of other sizes than the traced example next to the model's
own incremental decoding; an export that computes something else is refused. The export is written next to DIR and
moved into place when complete, so a failed export leaves DIR as it was.
"""
import argparse
import json
import os
import sys

from ..deploy.onnx_export import ExportError, export_checkpoint


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fairseq-eatt-export", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="binarized fairseq data directory of the checkpoint (for its dictionaries)")
    p.add_argument("--path", required=True, help="checkpoint to export")
    p.add_argument("--out", required=True, help="export directory")
    p.add_argument("--bpe-codes", default=None, help="subword-nmt codes the data was split with (raw-text input)")
    p.add_argument("--tokenizer", choices=("moses", "none"), default="none",
                   help="tokenizer the data was prepared with: moses (sacremoses), or none")
    args = p.parse_args(argv)
    for path, flag in ((args.data, "DATA"), (args.path, "--path")):
        if not os.path.exists(path):
            p.error(f"{flag} {path}: no such file or folder")
    return args


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        record = export_checkpoint(args.data, args.path, args.out, args.bpe_codes,
                                   None if args.tokenizer == "none" else args.tokenizer)
    except ExportError as err:
        sys.exit(f"fairseq-eatt-export: {err}")
    check = record["verification"]
    print(f"exported {args.path} to {args.out}: {len(record['state'])} state tensors, "
          f"{sum(record['files'].values()) / 2**20:.1f} MiB of ONNX; checked against the model: largest "
          f"log-probability difference {check['max_abs_log_prob_difference']:.1e}, greedy tokens agree")
    print(json.dumps({"translate": f"python {os.path.join(args.out, 'ort_translate.py')} {args.out}"}))


if __name__ == "__main__":
    main()

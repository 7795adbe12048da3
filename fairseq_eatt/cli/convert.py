"""fairseq-eatt-convert: an E-ATT model (or another variant) from a trained vanilla transformer checkpoint.

    fairseq-eatt-convert --from vanilla.pt --to eatt.pt [--encoder-self-attention eatt ...]

Copies embeddings, feed-forward layers, layer norms and the V / output projections; E-ATT's selection weights
start from W_Q / W_K. Takes checkpoints of fairseq's ``transformer`` and of ``transformer_eatt`` with vanilla
attention. Then fine-tune, as fairseq fine-tunes a pretrained model:

    fairseq-train DATA --user-dir fairseq_eatt --arch transformer_eatt_small --finetune-from-model eatt.pt \\
        --encoder-normalize-before --decoder-normalize-before ...   (the source's flags, E-ATT's attention)

or decode it as it is with fairseq-generate --path eatt.pt.
"""
import argparse
import sys

from ..attention import POSITION_FLAGS, available_attentions
from ..models.conversion import ConversionError, convert_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-eatt-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, metavar="CKPT",
                   help="a trained vanilla transformer checkpoint (fairseq-train)")
    p.add_argument("--to", dest="target", required=True, metavar="CKPT", help="where the converted checkpoint goes")
    for position, flag in POSITION_FLAGS.items():
        p.add_argument(flag, default="eatt", choices=available_attentions(), metavar="VARIANT",
                       help=f"attention of the converted model in {position.replace('_', ' ')} (default: eatt)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    attention = {pos: getattr(args, flag[2:].replace("-", "_")) for pos, flag in POSITION_FLAGS.items()}
    try:
        report = convert_checkpoint(args.source, args.target, attention)
    except ConversionError as err:
        sys.exit(f"fairseq-eatt-convert: {err}")
    print(f"[convert] wrote {args.target}: {len(report.copied)} tensors copied, {len(report.started_from)} started "
          f"from vanilla ones ({', '.join(sorted({k.rsplit('.', 2)[-2] for k in report.started_from})) or 'none'}), "
          f"{len(report.fresh)} fresh, {len(report.dropped)} vanilla tensors unused")


if __name__ == "__main__":
    main()

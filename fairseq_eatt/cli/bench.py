"""fairseq-eatt-bench: speed and memory of attention variants against the stock fairseq transformer, in one run.

    fairseq-eatt-bench [--variants eatt,local | all] [--preset small] [--data DATA-BIN] [--out results/performance]

On the same batches of a real corpus (the shipped Multi30k En-De by default, or any fairseq-preprocess output):
- training throughput (target tokens/s over forward, backward and the optimizer step, after warm-up),
- beam-search generation throughput (sentences/s, beam 4, incremental decoding),
- peak memory of each (resident set on the CPU, allocator peak on a GPU; each measurement in its own process),
for the stock fairseq ``transformer``, ``transformer_eatt`` with vanilla attention (the plugin's own overhead) and
each chosen variant in every position it supports, at the same dimensions; then E-ATT's L1 score operation alone
against dot-product scores (forward + backward, lengths 32-512, head dimension 64) and how each variant's time and
memory grow with the sentence length. Every measurement is repeated: medians with the spread (min-max), ratios to
the stock transformer. Writes OUT.md and OUT.json. A benchmark, not a test: nothing here asserts a timing.
"""
import argparse
import os
import shlex
import sys

import torch

from ..perf.bench import PRESETS, run


def parse_args(argv=None):
    from ..attention import available_attentions

    p = argparse.ArgumentParser(prog="fairseq-eatt-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="eatt",
                   help=f"comma-separated variants, or 'all' ({', '.join(available_attentions())})")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="model dimensions and measurement sizes: small = transformer_eatt_small (d 256, 3+3 layers), "
                        "base = transformer-base (d 512, 6+6), tiny = for tests")
    p.add_argument("--data", default=None, help="binarized fairseq data (default: the shipped Multi30k, prepared "
                   "into --workdir on first use)")
    p.add_argument("--source-lang", default="en")
    p.add_argument("--target-lang", default="de")
    p.add_argument("--gen-subset", default="test", help="split decoded for generation throughput")
    p.add_argument("--workdir", default=os.path.join("work", "bench"), help="where the default data is prepared")
    p.add_argument("--out", default=os.path.join("results", "performance"), help="writes OUT.md and OUT.json")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--gpu", action="store_true",
                   help="measure on the GPU (allocator peak memory; E-ATT's L1 scores through the Triton kernels "
                        "when triton is installed, vanilla attention through PyTorch's fused attention)")
    p.add_argument("--fp16", action="store_true",
                   help="with --gpu: float16 mixed precision (autocast and loss scaling in training, a float16 "
                        "model in generation); the score operation is then timed on float16 inputs too")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: train, generate, scores, lengths")
    p.add_argument("--repeats", type=int, default=None, help="override the preset's repeats per process")
    p.add_argument("--op-repeats", type=int, default=7,
                   help="repeats of the score operation and of the length-growth measurements (default 7)")
    p.add_argument("--merge", action="store_true",
                   help="keep the parts of an existing OUT.json that this run skips (e.g. re-measure only the "
                        "score operation with --skip train,generate,lengths --merge)")
    p.add_argument("--rounds", type=int, default=None,
                   help="override the preset's rounds: each round measures every model once, in alternating order, "
                        "and ratios to the stock transformer are taken within a round (paired), so that a slow "
                        "spell of a shared machine does not land on one model only")
    args = p.parse_args(argv)
    names = available_attentions()
    args.variant_list = names if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variant_list if v not in names]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; valid: {', '.join(names)} or all")
    args.skip_set = {s for s in args.skip.split(",") if s}
    bad = args.skip_set - {"train", "generate", "scores", "lengths"}
    if bad:
        p.error(f"--skip: unknown part(s) {', '.join(sorted(bad))}; valid: train, generate, scores, lengths")
    if args.gpu and not torch.cuda.is_available():
        p.error("--gpu: no CUDA device is available")
    if args.fp16 and not args.gpu:
        p.error("--fp16 needs --gpu (float16 arithmetic on a CPU is not what a GPU user runs)")
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.op_repeats < 1:
        p.error(f"--op-repeats must be at least 1, got {args.op_repeats}")
    if args.rounds is not None and args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv=None):
    args = parse_args(argv)
    run(args, shlex.join(["fairseq-eatt-bench"] + list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

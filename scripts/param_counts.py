"""Parameter counts of a preset with each attention variant in every position it allows (for notes and docs).

    .venv/bin/python scripts/param_counts.py [--arch transformer_eatt_small] [--vocab 7968]
"""
import argparse
import logging
import os
import tempfile

from fairseq import options, tasks

import fairseq_eatt  # noqa: F401
from fairseq_eatt.attention import POSITION_FLAGS, available_attentions, get_attention_class

from fairseq_eatt.fairseq_tools import PLUGIN_DIR  # noqa: E402


def count(data_dir, arch, flags):
    parser = options.get_training_parser()
    argv = [data_dir, "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de", "--arch", arch,
            "--share-all-embeddings", "--max-source-positions", "128", "--max-target-positions", "128",
            "--criterion", "label_smoothed_cross_entropy_with_aux", *flags]
    args = options.parse_args_and_arch(parser, input_args=argv)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    return sum(p.numel() for p in model.parameters())


def layer_table(dim=512, heads=8, max_length=512):
    """One attention layer per variant at d = 512: parameters and capabilities."""
    import torch

    print(f"\nOne attention layer, d = {dim}, {heads} heads, self-attention; fixed-length variants built for "
          f"{max_length} positions\n")
    print("| variant | positions | parameters | vs vanilla | incremental decoding |")
    print("|---|---|---|---|---|")
    counts = {}
    for name in available_attentions():
        cls = get_attention_class(name)
        torch.manual_seed(0)
        kwargs = cls.kwargs_from_args(argparse.Namespace(attention_max_length=max_length), "encoder_self")
        counts[name] = sum(p.numel() for p in cls(dim, heads, self_attention=True, **kwargs).parameters())
    for name in available_attentions():
        caps = get_attention_class(name).capabilities
        allowed = caps.allowed_positions()
        print(f"| `{name}` | {', '.join(allowed)} | {counts[name]:,} | {counts[name] / counts['vanilla']:.1%} | "
              f"{'yes' if caps.incremental else 'no'} |")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="transformer_eatt_small")
    p.add_argument("--vocab", type=int, default=7968, help="joined dictionary size (Multi30k, 8k BPE: 7968)")
    args = p.parse_args()
    logging.disable(logging.INFO)  # fairseq logs every dictionary it loads
    with tempfile.TemporaryDirectory() as d:
        for lang in ("en", "de"):
            with open(os.path.join(d, f"dict.{lang}.txt"), "w") as f:
                f.writelines(f"w{i} 1\n" for i in range(args.vocab - 4))
        print(f"{args.arch}, joined vocabulary {args.vocab}, shared embeddings, max positions 128 "
              "(the synthesizers' max length)\n")
        print("| variant | positions | params, all allowed positions | params, only cross-attention |")
        print("|---|---|---|---|")
        for name in available_attentions():
            allowed = get_attention_class(name).capabilities.allowed_positions()
            everywhere = []
            for pos, flag in POSITION_FLAGS.items():
                everywhere += [flag, name if pos in allowed else "vanilla"]
            cross_only = ["--encoder-self-attention", "vanilla", "--decoder-self-attention", "vanilla",
                          "--decoder-cross-attention", name]
            cross = f"{count(d, args.arch, cross_only):,}" if "decoder_cross" in allowed else "not allowed"
            print(f"| `{name}` | {', '.join(allowed)} | {count(d, args.arch, everywhere):,} | {cross} |")


if __name__ == "__main__":
    main()
    layer_table()

"""Parameter counts of each attention variant: in a whole model (every position it allows, and cross-attention
only) and as one layer. Counts only, no training; the record renders to results/attention_variants.md."""
import argparse
import logging
import os
import tempfile
from typing import Dict

from ..attention import POSITION_FLAGS, available_attentions, get_attention_class
from ..reports import renderer


def model_params(data_dir: str, arch: str, flags) -> int:
    from fairseq import options, tasks

    from ..provenance import PLUGIN_DIR

    parser = options.get_training_parser()
    argv = [data_dir, "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de", "--arch", arch,
            "--share-all-embeddings", "--max-source-positions", "128", "--max-target-positions", "128",
            "--criterion", "label_smoothed_cross_entropy_with_aux", *flags]
    args = options.parse_args_and_arch(parser, input_args=argv)
    return sum(p.numel() for p in tasks.setup_task(args).build_model(args).parameters())


def layer_params(name: str, dim: int, heads: int, max_length: int) -> int:
    from ..attention.registry import build_attention

    module = build_attention(name, dim, heads, args=argparse.Namespace(attention_max_length=max_length))
    return sum(p.numel() for p in module.parameters())


def measure(arch: str = "transformer_eatt_small", vocab: int = 7968, dim: int = 512, heads: int = 8,
            max_length: int = 512) -> Dict:
    from ..attention.eatt import DEFAULT_RECIPE

    rows = {}
    logging.disable(logging.INFO)  # fairseq logs every dictionary it loads
    try:
        with tempfile.TemporaryDirectory() as d:
            for lang in ("en", "de"):
                with open(os.path.join(d, f"dict.{lang}.txt"), "w", encoding="utf-8") as f:
                    f.writelines(f"w{i} 1\n" for i in range(vocab - 4))
            for name in available_attentions():
                allowed = get_attention_class(name).capabilities.allowed_positions()
                everywhere = [w for pos, flag in POSITION_FLAGS.items()
                              for w in (flag, name if pos in allowed else "vanilla")]
                cross_only = ["--encoder-self-attention", "vanilla", "--decoder-self-attention", "vanilla",
                              "--decoder-cross-attention", name]
                rows[name] = {"positions": list(allowed), "model_everywhere": model_params(d, arch, everywhere),
                              "model_cross_only": model_params(d, arch, cross_only)
                              if "decoder_cross" in allowed else None,
                              "layer": layer_params(name, dim, heads, max_length)}
    finally:
        logging.disable(logging.NOTSET)
    return {"kind": "params", "arch": arch, "vocab": vocab, "eatt_recipe": DEFAULT_RECIPE, "layer_dim": dim,
            "layer_heads": heads, "layer_max_length": max_length, "variants": rows}


@renderer("params")
def markdown(rec: Dict) -> str:
    rows = rec["variants"]
    lines = ["# Attention variants: positions and parameter counts", "",
             f"Made by `{rec['command']}` (counts only: no training). Date, machine and commit: the JSON file beside "
             f"this one.", "",
             f"{rec['arch']} (E-ATT recipe `{rec['eatt_recipe']}`, the default), joined vocabulary {rec['vocab']}, "
             f"shared embeddings, max positions 128 (the synthesizers' max length)", "",
             "| variant | positions | params, all allowed positions | params, only cross-attention |",
             "|---|---|---|---|"]
    for name, row in rows.items():
        cross = "not allowed" if row["model_cross_only"] is None else f"{row['model_cross_only']:,}"
        lines.append(f"| `{name}` | {', '.join(row['positions'])} | {row['model_everywhere']:,} | {cross} |")
    vanilla = rows["vanilla"]["layer"]
    lines += ["", f"One attention layer, d = {rec['layer_dim']}, {rec['layer_heads']} heads, self-attention; "
                  f"fixed-length variants built for {rec['layer_max_length']} positions", "",
              "| variant | positions | parameters | vs vanilla |", "|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| `{name}` | {', '.join(row['positions'])} | {row['layer']:,} | {row['layer'] / vanilla:.1%} |")
    lines += ["", "Every variant decodes incrementally (beam search) in every position it allows; Linformer is "
                  "allowed as encoder self- and cross-attention only (its keys must be whole). `synth_random` grows "
                  "with the square of its maximum length; the fixed variant stores the same matrix as a buffer, not "
                  "a parameter."]
    return "\n".join(lines) + "\n"

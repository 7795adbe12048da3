"""Energy per sentence and per token of a trained checkpoint over a binarized dataset split.

Every sentence pair is counted at its real lengths (source and target, end-of-sentence included), layer by layer,
with the variant and options the checkpoint was trained with, and, for E-ATT-style variants, the nonzero ratios of
the binarized inputs measured on the same split (per layer and position). Counted: the attention of each
position (with its output projection) and the feed-forward layers; not counted: embeddings and the output softmax
layer, which every variant shares. The decoder is counted as a teacher-forced full pass (l x l scores), as the
paper does.
"""
from typing import Dict, List

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, get_attention_class
from ..attention import POSITION_ATTRS
from ..attention.counts import OpCounts, projection
from .report import attention_counts, feed_forward
from .tables import EnergyTable

POSITIONS = ("encoder_self", "decoder_self", "decoder_cross", "feed_forward")


def _variant(args, position: str) -> str:
    return getattr(args, POSITION_ATTRS[position], None) or "vanilla"  # stock transformer checkpoints: vanilla


def _attention(args, position: str, lq: int, lk: int, d: int, heads: int, convention: str, ratio) -> OpCounts:
    """One attention layer of the checkpoint's variant in ``position``, with its output projection."""
    name = _variant(args, position)
    options = get_attention_class(name).kwargs_from_args(args, position)
    return (attention_counts(name, lq, lk, d, heads, convention, ratio, options,
                             self_attention=position != DECODER_CROSS, causal=position == DECODER_SELF)["attention"]
            + projection(lq, d, d))


def sentence_counts(args, src_len: int, tgt_len: int, ratios: Dict, convention: str) -> Dict[str, OpCounts]:
    d, heads = args.encoder_embed_dim, args.encoder_attention_heads
    dd, dheads = args.decoder_embed_dim, args.decoder_attention_heads
    per_position = {p: OpCounts() for p in POSITIONS}
    for layer in range(1, args.encoder_layers + 1):
        per_position["encoder_self"] += _attention(args, ENCODER_SELF, src_len, src_len, d, heads, convention,
                                                   ratios.get(("encoder_self", layer)))
        per_position["feed_forward"] += feed_forward(src_len, d, args.encoder_ffn_embed_dim)
    for layer in range(1, args.decoder_layers + 1):
        per_position["decoder_self"] += _attention(args, DECODER_SELF, tgt_len, tgt_len, dd, dheads, convention,
                                                   ratios.get(("decoder_self", layer)))
        cross_ratio = None
        if ("cross_query", layer) in ratios:
            cross_ratio = (ratios[("cross_query", layer)], ratios[("cross_key", layer)])
        per_position["decoder_cross"] += _attention(args, DECODER_CROSS, tgt_len, src_len, dd, dheads, convention,
                                                    cross_ratio)
        per_position["feed_forward"] += feed_forward(tgt_len, dd, args.decoder_ffn_embed_dim)
    return per_position


def formula_limits(args) -> List[str]:
    """The checkpoint's flags that its formula count cannot follow (it assumes float weights, every source token in
    every layer and every decoder layer for every token)."""
    found = []
    if getattr(args, "weight_bits", None):
        found.append(f"--weight-bits {args.weight_bits}")
    if getattr(args, "prune_layer", None) is not None:
        found.append(f"--prune-layer {args.prune_layer}")
    threshold = getattr(args, "exit_threshold", None)
    if threshold is not None and threshold < 1:
        found.append(f"--exit-threshold {threshold}")
    return found


def dataset_energy(model, task, subset: str, table: EnergyTable, convention: str, ratios: Dict,
                   max_sentences=None) -> Dict:
    limits = formula_limits(model.args)
    if limits:
        raise ValueError(f"this checkpoint was trained or decoded with {', '.join(limits)}: the per-sentence formula "
                         f"count assumes float weights, every source token and every layer; count it as it runs with "
                         f"fairseq-eatt-energy --decode --path CHECKPOINT (binary/ternary products, kept lengths and "
                         f"skipped layers included)")
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    n = len(dataset) if not max_sentences else min(len(dataset), max_sentences)
    args = model.args
    sentences: List[Dict] = []
    totals = {p: 0.0 for p in POSITIONS}
    target_tokens = 0
    for i in range(n):
        src_len, tgt_len = int(dataset.src_sizes[i]), int(dataset.tgt_sizes[i])
        per_position = sentence_counts(args, src_len, tgt_len, ratios, convention)
        energy = {p: table.energy(c) for p, c in per_position.items()}
        for p in POSITIONS:
            totals[p] += energy[p]
        target_tokens += tgt_len
        sentences.append({"index": i, "src_len": src_len, "tgt_len": tgt_len,
                          "energy_pj": {**energy, "total": sum(energy.values())}})
    totals["total"] = sum(totals.values())
    return {
        "subset": subset, "sentences": n, "target_tokens": target_tokens, "table": table.name,
        "convention": convention,
        "variants": {p: _variant(args, p) for p in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS)},
        "nonzero_ratios": {f"{p}_L{layer}": r for (p, layer), r in sorted(ratios.items())},
        "per_sentence_uj": {p: v / n / 1e6 for p, v in totals.items()},
        "per_target_token_uj": {p: v / target_tokens / 1e6 for p, v in totals.items()},
        "by_sentence": sentences,
    }


def markdown(result: Dict) -> str:
    lines = [f"Energy of {result['sentences']} sentences of `{result['subset']}` ({result['target_tokens']} target "
             f"tokens), {result['table']} costs, {result['convention']} convention; variants: "
             + ", ".join(f"{k} = `{result['variants'][k]}`" for k in POSITIONS if k in result["variants"]), "",
             "| position | µJ per sentence | µJ per target token |", "|---|---|---|"]
    for p in POSITIONS + ("total",):
        lines.append(f"| {p} | {result['per_sentence_uj'][p]:.3f} | {result['per_target_token_uj'][p]:.4f} |")
    return "\n".join(lines) + "\n"

"""Cross-attention weights of a checkpoint for one sentence pair, drawn as heat maps (the paper's Figure 2)."""
from typing import Optional

import torch

from ..data.text import tokenize_lines
from ..fairseq_tools import load_checkpoint


def cross_attention(model, src_tokens, prev_output_tokens):
    """Per decoder layer: cross-attention weights averaged over heads, (target len, source len)."""
    captured = []

    def keep(_module, _inputs, output):
        weights = output[1].detach().float()
        if weights.dim() == 4:  # fairseq asks its alignment layer for per-head weights: average them too
            weights = weights.mean(dim=0)
        captured.append(weights[0])

    hooks = [layer.encoder_attn.register_forward_hook(keep) for layer in model.decoder.layers]
    try:
        with torch.no_grad():
            encoder_out = model.encoder(src_tokens, src_lengths=torch.tensor([src_tokens.size(1)]))
            model.decoder(prev_output_tokens, encoder_out=encoder_out)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def draw(data: str, checkpoint: str, source: str, target: str, out: str, layer: str = "mean",
         tokenize: str = "none", bpe_codes: Optional[str] = None, source_lang: Optional[str] = None,
         target_lang: Optional[str] = None) -> str:
    """Write the heat map PNG ``out`` of ``checkpoint``'s cross-attention weights (averaged over heads) for the
    teacher-forced pair; ``layer``: a decoder layer (1-based), ``mean`` or ``all``. Returns what was drawn."""
    model, task = load_checkpoint(checkpoint, data)
    if any(getattr(layer, "encoder_attn", None) is None for layer in model.decoder.layers):
        raise ValueError(f"--path {checkpoint}: the model has no cross-attention")
    src_lang = source_lang or task.cfg.source_lang
    tgt_lang = target_lang or task.cfg.target_lang
    src_text, tgt_text = source.strip(), target.strip()
    if tokenize == "moses":
        src_text = tokenize_lines([src_text], src_lang)[0]
        tgt_text = tokenize_lines([tgt_text], tgt_lang)[0]
    if bpe_codes:
        from subword_nmt.apply_bpe import BPE

        with open(bpe_codes, encoding="utf-8") as codes:
            bpe = BPE(codes)
        src_text, tgt_text = bpe.process_line(src_text), bpe.process_line(tgt_text)
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    src = src_dict.encode_line(src_text, add_if_not_exist=False, append_eos=True).long().unsqueeze(0)
    tgt = tgt_dict.encode_line(tgt_text, add_if_not_exist=False, append_eos=True).long()
    prev = torch.cat([tgt.new_tensor([tgt_dict.eos()]), tgt[:-1]]).unsqueeze(0)
    layers = cross_attention(model, src, prev)

    src_labels = [src_dict[i] for i in src[0].tolist()]
    tgt_labels = [tgt_dict[i] for i in tgt.tolist()]
    if layer == "mean":
        panels = [("mean over layers", torch.stack(layers).mean(0))]
    elif layer == "all":
        panels = [(f"layer {i + 1}", w) for i, w in enumerate(layers)]
    else:
        try:
            index = int(layer)
        except ValueError:
            raise ValueError(f"--layer must be a layer number, 'mean' or 'all', got {layer!r}") from None
        if not 1 <= index <= len(layers):
            raise ValueError(f"--layer {index}: the decoder has layers 1..{len(layers)}")
        panels = [(f"layer {index}", layers[index - 1])]

    from ..plots import pyplot, save

    size = 0.32
    width = max(4.0, size * len(src_labels) + 1.5) * len(panels)
    height = max(3.0, size * len(tgt_labels) + 1.5)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(width, height), squeeze=False)
    for ax, (title, weights) in zip(axes[0], panels):
        ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_labels)))
        ax.set_xticklabels(src_labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tgt_labels)))
        ax.set_yticklabels(tgt_labels, fontsize=7)
        ax.set_title(f"cross-attention, {title}", fontsize=8)
        ax.set_xlabel(f"source ({src_lang})", fontsize=8)
        ax.set_ylabel(f"target ({tgt_lang})", fontsize=8)
    fig.tight_layout()
    save(fig, out, dpi=130)
    return f"{len(tgt_labels)} target x {len(src_labels)} source tokens, {len(panels)} panel(s)"


"""What a trained model's attention does, per layer and position, over a dataset (no training).

For every attention module (encoder self, decoder self, decoder cross) of any variant:
- attention entropy (nats, and relative to log of the number of visible keys: 1 = uniform) and the largest
  weight, per head, averaged over real queries;
for modules that binarize their inputs (``Capabilities.binarizes``, E-ATT and ``eatt_select``), on the query and
key sides:
- the nonzero ratio of the binarized codes;
- each feature's on-rate over the split, counting features that are never on (dead) or always on (saturated);
- how distinct the codes of one sentence's tokens are: the fraction of distinct codes and the mean Hamming
  distance between two tokens' codes (as a fraction of the features);
- the Pearson correlation, within a sentence, between the attention a key receives (mean weight over the
  queries that may see it, over heads) and its number of ones (averaged over sentences).

Decoder inputs are teacher-forced (the reference prefix), as in validation. Padding is left out everywhere.
"""
import datetime
import json
import platform
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..data.text import atomic_output
from ..fairseq_tools import load_checkpoint
from ..tracking import REPORT_LABEL, attention_modules, binarizes, capabilities_of

POSITIONS = tuple(REPORT_LABEL.values())


class _Side:
    """Accumulators of one binarized input (the query or the key side of one module)."""

    def __init__(self):
        self.ones = 0.0
        self.tokens = 0
        self.feature_on: Optional[Tensor] = None
        self.distinct_sum = 0.0
        self.hamming_sum = 0.0
        self.sentences = 0

    def add(self, bits: Tensor, real: Tensor):
        """bits (L, B, d) of 0/1, real (B, L) bool."""
        codes = bits.transpose(0, 1).float()  # (B, L, d)
        chosen = codes[real]  # (N, d)
        self.ones += float(chosen.sum())
        self.tokens += chosen.size(0)
        per_feature = chosen.sum(dim=0).double()
        self.feature_on = per_feature if self.feature_on is None else self.feature_on + per_feature
        dim = codes.size(-1)
        for b in range(codes.size(0)):
            sentence = codes[b][real[b]]
            n = sentence.size(0)
            if n < 2:
                continue
            self.distinct_sum += torch.unique(sentence, dim=0).size(0) / n
            ham = torch.cdist(sentence, sentence, p=1)  # Hamming distance between 0/1 codes
            self.hamming_sum += float(ham.sum()) / (n * (n - 1)) / dim
            self.sentences += 1

    def summary(self) -> Dict:
        if not self.tokens:
            return {}
        rate = self.feature_on / self.tokens
        return {
            "nonzero_ratio": self.ones / (self.tokens * rate.numel()),
            "features": rate.numel(),
            "dead_features": int((rate == 0).sum()),
            "saturated_features": int((rate == 1).sum()),
            "rare_features": int((rate < 0.01).sum()),  # on for under 1% of tokens
            "feature_on_rate_quantiles": [round(float(q), 4) for q in
                                          torch.quantile(rate, torch.tensor([0.1, 0.5, 0.9], dtype=rate.dtype))],
            "distinct_code_fraction": self.distinct_sum / self.sentences if self.sentences else None,
            "mean_hamming_fraction": self.hamming_sum / self.sentences if self.sentences else None,
        }


class _Module:
    def __init__(self, variant: str, heads: int):
        self.variant = variant
        self.heads = heads
        self.entropy = torch.zeros(heads, dtype=torch.float64)
        self.relative_entropy = torch.zeros(heads, dtype=torch.float64)
        self.max_weight = torch.zeros(heads, dtype=torch.float64)
        self.queries = 0
        self.query_side = _Side()
        self.key_side = _Side()
        self.corr_sum = 0.0
        self.corr_count = 0

    def add_weights(self, weights: Tensor, visible: Tensor, real_q: Tensor):
        """weights (H, B, T, S); visible (B, T, S) bool (keys a query may see); real_q (B, T) bool."""
        w = weights.double()
        logs = torch.where(w > 0, w.log(), torch.zeros_like(w))
        entropy = -(w * logs).sum(-1)  # (H, B, T)
        keys = visible.sum(-1).clamp(min=1).double()  # (B, T)
        relative = torch.where(keys > 1, entropy / keys.log().clamp(min=1e-12), torch.ones_like(entropy))
        mask = real_q.unsqueeze(0).expand_as(entropy)
        self.entropy += (entropy * mask).sum(dim=(1, 2))
        self.relative_entropy += (relative * mask).sum(dim=(1, 2))
        self.max_weight += (w.amax(-1) * mask).sum(dim=(1, 2))
        self.queries += int(real_q.sum())

    def add_correlation(self, weights: Tensor, visible: Tensor, real_q: Tensor, real_k: Tensor, key_ones: Tensor):
        """Per sentence: mean weight a key receives from the real queries that may see it, against its ones."""
        w = weights.double().mean(0)  # (B, T, S), over heads
        seen = (visible & real_q.unsqueeze(-1)).double()
        received = (w * seen).sum(1) / seen.sum(1).clamp(min=1)  # (B, S)
        for b in range(w.size(0)):
            keep = real_k[b]
            x, y = received[b][keep], key_ones[b][keep].double()
            if x.numel() < 3 or float(x.std()) == 0 or float(y.std()) == 0:
                continue
            self.corr_sum += float(torch.corrcoef(torch.stack([x, y]))[0, 1])
            self.corr_count += 1

    def summary(self) -> Dict:
        n = max(self.queries, 1)
        out = {
            "variant": self.variant,
            "entropy_per_head": [round(float(v) / n, 4) for v in self.entropy],
            "relative_entropy_per_head": [round(float(v) / n, 4) for v in self.relative_entropy],
            "max_weight_per_head": [round(float(v) / n, 4) for v in self.max_weight],
        }
        out["relative_entropy"] = round(sum(out["relative_entropy_per_head"]) / self.heads, 4)
        out["max_weight"] = round(sum(out["max_weight_per_head"]) / self.heads, 4)
        query, key = self.query_side.summary(), self.key_side.summary()
        if query:
            out["query_codes"], out["key_codes"] = query, key
            out["attention_vs_key_ones_r"] = (round(self.corr_sum / self.corr_count, 4)
                                              if self.corr_count else None)
        return out


class Diagnostics:
    """Collects the statistics of every attention module of ``model`` while it runs teacher-forced batches."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.stats: Dict[Tuple[str, int], _Module] = {}
        self._batch: Dict = {}
        self._handles: List = []
        for position, layer, module in attention_modules(model):
            self.stats[(position, layer)] = _Module(getattr(module, "variant_name", type(module).__name__),
                                                    module.num_heads)
            self._handles.append(module.register_forward_pre_hook(self._ask_for_weights, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._hook(position, layer, module),
                                                              with_kwargs=True))

    def close(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @staticmethod
    def _ask_for_weights(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"] = True
        kwargs["need_head_weights"] = True
        return args, kwargs

    def _hook(self, position: str, layer: int, module: nn.Module):
        def record(mod, args, kwargs, output):
            names = ("query", "key", "value", "key_padding_mask")
            given = {**dict(zip(names, args)), **kwargs}
            self._record(position, layer, module, given, output[1])
        return record

    def _record(self, position: str, layer: int, module: nn.Module, given: Dict, weights: Optional[Tensor]):
        src_real, tgt_real = self._batch["src_real"], self._batch["tgt_real"]
        real_q = src_real if position == "encoder_self" else tgt_real
        real_k = tgt_real if position == "decoder_self" else src_real
        t, s = real_q.size(1), real_k.size(1)
        visible = real_k.unsqueeze(1).expand(-1, t, -1)
        if position == "decoder_self":
            visible = visible & torch.ones(t, s, dtype=torch.bool, device=visible.device).tril()
        stats = self.stats[(position, layer)]
        if weights is not None and capabilities_of(module).weights_are_probabilities:
            stats.add_weights(weights, visible, real_q)
        if binarizes(module):
            with torch.no_grad():
                q_bits, k_bits = module.binary_codes(given["query"], given["key"])
            stats.query_side.add(q_bits, real_q)
            stats.key_side.add(k_bits, real_k)
            if weights is not None:
                stats.add_correlation(weights, visible, real_q, real_k, k_bits.transpose(0, 1).sum(-1))

    def run_batch(self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor, src_pad: int,
                  tgt_pad: int):
        self._batch = {"src_real": src_tokens.ne(src_pad), "tgt_real": prev_output_tokens.ne(tgt_pad)}
        with torch.no_grad():
            encoder_out = self.model.encoder(src_tokens, src_lengths=src_lengths)
            self.model.decoder(prev_output_tokens, encoder_out=encoder_out)

    def summary(self) -> List[Dict]:
        return [{"position": position, "layer": layer, **stats.summary()}
                for (position, layer), stats in sorted(self.stats.items(),
                                                       key=lambda kv: (POSITIONS.index(kv[0][0]), kv[0][1]))]


def diagnose(model: nn.Module, task, subset: str, max_tokens: int = 4096,
             max_sentences: Optional[int] = None) -> List[Dict]:
    """Statistics of every attention module of ``model`` over ``subset`` of ``task``."""
    from tqdm import tqdm

    from ..fairseq_tools import load_subset

    dataset = load_subset(task, subset)
    batches = task.get_batch_iterator(dataset=dataset, max_tokens=max_tokens, ignore_invalid_inputs=True,
                                      seed=1).next_epoch_itr(shuffle=False)
    diagnostics = Diagnostics(model)
    seen = 0
    try:
        for sample in tqdm(batches, desc=f"diagnose {subset}", leave=False):
            net = sample["net_input"]
            diagnostics.run_batch(net["src_tokens"], net["src_lengths"], net["prev_output_tokens"],
                                  task.source_dictionary.pad(), task.target_dictionary.pad())
            seen += sample["nsentences"]
            if max_sentences and seen >= max_sentences:
                break
    finally:
        diagnostics.close()
    return diagnostics.summary()


# ---- the report: markdown, JSON and a plot comparing checkpoints

SHORT = {"encoder_self": "enc", "decoder_self": "dec", "cross": "x"}


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(rows: List[Dict]) -> str:
    head = ("| position | layer | variant | rel. entropy | max weight | nonzero q / k | dead q / k | saturated q / k "
            "| distinct codes q / k | Hamming q / k | r(attention, key ones) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        q, k = r.get("query_codes") or {}, r.get("key_codes") or {}

        def pair(key, digits=3):
            return "-" if not q else f"{_fmt(q.get(key), digits)} / {_fmt(k.get(key), digits)}"

        lines.append(f"| {r['position']} | {r['layer']} | {r['variant']} | {_fmt(r.get('relative_entropy'))} "
                     f"| {_fmt(r.get('max_weight'))} | {pair('nonzero_ratio')} | {pair('dead_features')} "
                     f"| {pair('saturated_features')} | {pair('distinct_code_fraction')} "
                     f"| {pair('mean_hamming_fraction')} | {_fmt(r.get('attention_vs_key_ones_r'))} |")
    return "\n".join(lines) + "\n"


def plot(results: List[Tuple[str, List[Dict]]], out_png: str, title: str):
    from ..plots import pyplot, save

    panels = [("relative_entropy", None, "attention entropy / log(keys)"),
              ("nonzero_ratio", "key_codes", "nonzero ratio (key side)"),
              ("mean_hamming_fraction", "key_codes", "Hamming distance between a sentence's key codes"),
              ("attention_vs_key_ones_r", None, "r(attention received, key ones)")]
    fig, axes = pyplot().subplots(2, 2, figsize=(10, 6.5))
    for ax, (key, side, name) in zip(axes.flat, panels):
        for index, (label, rows) in enumerate(results):  # one colour per checkpoint in every panel
            xs, ys = [], []
            for i, r in enumerate(rows):
                value = (r.get(side) or {}).get(key) if side else r.get(key)
                if value is not None:
                    xs.append(i)
                    ys.append(value)
            ax.plot(xs, ys, marker="o", label=label, color=f"C{index % 10}")
        ticks = results[0][1]
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels([f"{SHORT[r['position']]}{r['layer']}" for r in ticks], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    save(fig, out_png, dpi=110)


def write_report(data: str, checkpoints: List[Tuple[str, str]], out: str, subset: str = "valid",
                 max_tokens: int = 4096, max_sentences: Optional[int] = None, command: str = "") -> str:
    """Diagnose each (label, checkpoint) over ``subset`` of ``data``; writes OUT.md, OUT.json and OUT.png and
    returns the markdown. ``command``: how the report was asked for, written into it."""
    results = []
    for label, path in checkpoints:
        model, task = load_checkpoint(path, data)
        rows = diagnose(model, task, subset, max_tokens, max_sentences)
        results.append((label, rows))
        print(f"[diagnose] {label}: {len(rows)} attention modules", file=sys.stderr)
    layouts = {tuple((r["position"], r["layer"]) for r in rows) for _, rows in results}
    if len(layouts) > 1:
        raise ValueError("the checkpoints have different layers; compare models of one shape")
    when = datetime.date.today().isoformat()
    parts = [f"# Attention diagnostics on `{subset}`\n",
             f"Command: `{command}`; {platform.node() or 'this machine'}, {when}. Decoder inputs teacher-forced, "
             "padding excluded. Columns: entropy relative to log(visible keys) (1 = uniform) and largest weight, "
             "averaged over heads and real queries; for binarized inputs (query / key side): nonzero ratio, "
             "features never on (dead) or always on (saturated) over the split, fraction of distinct codes within "
             "a sentence and mean Hamming distance between two of its tokens (fraction of the features), and the "
             "within-sentence Pearson r between the attention a key receives and its number of ones.\n"]
    for label, rows in results:
        path = dict(checkpoints)[label]
        parts.append(f"## {label}\n\nCheckpoint `{path}`\n\n" + table(rows))
    with atomic_output(out + ".md") as handle:
        handle.write("\n".join(parts))
    payload = {"command": command, "date": when, "subset": subset, "data": data,
               "max_sentences": max_sentences,
               "checkpoints": [{"label": label, "path": dict(checkpoints)[label], "modules": rows}
                               for label, rows in results]}
    with atomic_output(out + ".json") as handle:
        json.dump(payload, handle, indent=2)
    plot(results, out + ".png", f"attention diagnostics on {subset}")
    return "\n".join(parts)


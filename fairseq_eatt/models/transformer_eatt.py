"""fairseq glue: the ``transformer_eatt`` model, its architectures and the per-position attention flags.

A stock fairseq transformer whose three attention positions are built from the attention registry:
``--encoder-self-attention``, ``--decoder-self-attention`` and ``--decoder-cross-attention`` each take any
registered variant name allowed in that position, so hybrids (e.g. vanilla self-attention with E-ATT
cross-attention) need no extra code.
"""
import hashlib
import json
import logging
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fairseq.distributed import fsdp_wrap
from fairseq.logging import metrics
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
    base_architecture,
)
from fairseq.modules import transformer_layer
from fairseq.modules.quant_noise import quant_noise
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from ..attention import (
    DECODER_CROSS,
    DECODER_SELF,
    ENCODER_SELF,
    POSITION_FLAGS,
    AttentionSpecError,
    available_attentions,
    build_attention,
    check_position,
    get_attention_class,
)
from ..analysis.binarization import BinarizationStats, attention_modules, binarizing_modules, set_tracking
from ..criterions.label_smoothed_cross_entropy_with_aux import NAME as AUX_CRITERION
from ..pruning import IMPORTANCE, TokenPruner, check_prune_args
from ..quantization import WEIGHT_BITS, QuantizedLinear, check_weight_bits, parse_modules, unpack_state

logger = logging.getLogger(__name__)

DEFAULT_ATTENTION = "eatt"
POSITION_ATTRS = {position: flag[2:].replace("-", "_") for position, flag in POSITION_FLAGS.items()}


def attention_for(cfg, position: str, embed_dim: int, num_heads: int, kdim=None, vdim=None):
    """The attention module chosen for ``position`` by its flag, with its options from the flags; with
    ``--quant-noise-pq``, fairseq's quantization noise on its linear maps, as on those of fairseq's attention."""
    name = getattr(cfg, POSITION_ATTRS[position], None) or DEFAULT_ATTENTION
    module = build_attention(name, embed_dim, num_heads, position, kdim=kdim, vdim=vdim,
                             dropout=cfg.attention_dropout, args=cfg)
    noise, block = cfg.quant_noise.pq, cfg.quant_noise.pq_block_size
    if noise > 0:
        for linear in [m for m in module.modules() if isinstance(m, nn.Linear)]:
            if linear.in_features % block != 0:
                raise AttentionSpecError(
                    f"--quant-noise-pq-block-size {block} must divide the input size of every linear map of "
                    f"{POSITION_FLAGS[position]} {name} ({linear.in_features} does not)")
            quant_noise(linear, noise, block)
    bits = getattr(cfg, "weight_bits", None)
    if bits and "attn" in parse_modules(getattr(cfg, "quantize_modules", None) or "attn,ffn"):
        quantize_linear_maps(module, bits)
    return module


def quantize_linear_maps(module: nn.Module, bits: int):
    """Every nn.Linear inside ``module`` becomes a QuantizedLinear sharing its parameters (checkpoint keys stay)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QuantizedLinear.from_linear(child, bits))


def _quantized_fc(layer_fc, cfg):
    bits = getattr(cfg, "weight_bits", None)
    if bits and "ffn" in parse_modules(getattr(cfg, "quantize_modules", None) or "attn,ffn"):
        return QuantizedLinear.from_linear(layer_fc, bits)
    return layer_fc


class EattEncoderLayer(transformer_layer.TransformerEncoderLayerBase):
    def __init__(self, cfg, return_fc=False):
        super().__init__(cfg, return_fc)
        self.fc1, self.fc2 = _quantized_fc(self.fc1, cfg), _quantized_fc(self.fc2, cfg)

    def forward_with_attention(self, x: Tensor, encoder_padding_mask: Optional[Tensor]
                               ) -> Tuple[Tensor, Optional[Tensor]]:
        """The layer's forward (fairseq's encoder layer, without an attention mask) that also returns its
        self-attention's weights averaged over heads, (B, T, T): what attention-based token pruning reads."""
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x, weights = self.self_attn(query=x, key=x, value=x, key_padding_mask=encoder_padding_mask,
                                    need_weights=True)
        x = self.residual_connection(self.dropout_module(x), residual)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.fc2(self.activation_dropout_module(self.activation_fn(self.fc1(x))))
        x = self.residual_connection(self.dropout_module(x), residual)
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x, weights

    def build_self_attention(self, embed_dim, cfg):
        return attention_for(cfg, ENCODER_SELF, embed_dim, cfg.encoder.attention_heads)


class EattDecoderLayer(transformer_layer.TransformerDecoderLayerBase):
    def __init__(self, cfg, no_encoder_attn=False, add_bias_kv=False, add_zero_attn=False):
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)
        self.fc1, self.fc2 = _quantized_fc(self.fc1, cfg), _quantized_fc(self.fc2, cfg)

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        if add_bias_kv or add_zero_attn:
            raise AttentionSpecError("transformer_eatt does not support add_bias_kv / add_zero_attn")
        return attention_for(cfg, DECODER_SELF, embed_dim, cfg.decoder.attention_heads)

    def build_encoder_attention(self, embed_dim, cfg):
        return attention_for(
            cfg, DECODER_CROSS, embed_dim, cfg.decoder.attention_heads,
            kdim=cfg.encoder.embed_dim, vdim=cfg.encoder.embed_dim,
        )


# fairseq's module names (FairseqDropout.module_name) of the stock transformer's parts -> this plugin's classes
STOCK_MODULE_NAMES = {
    "TransformerEncoder": "EattTransformerEncoder",
    "TransformerEncoderBase": "EattTransformerEncoder",
    "TransformerDecoder": "EattTransformerDecoder",
    "TransformerDecoderBase": "EattTransformerDecoder",
    "TransformerEncoderLayer": "EattEncoderLayer",
    "TransformerEncoderLayerBase": "EattEncoderLayer",
    "TransformerDecoderLayer": "EattDecoderLayer",
    "TransformerDecoderLayerBase": "EattDecoderLayer",
}


def _wrap_layer(layer, cfg):
    # the same activation checkpointing / FSDP wrapping fairseq applies to its own layers
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class EattTransformerEncoder(TransformerEncoderBase):
    """fairseq's encoder, with optional token pruning after one layer (``--prune-layer``, see pruning.py)."""

    def __init__(self, cfg, dictionary, embed_tokens, return_fc=False):
        super().__init__(cfg, dictionary, embed_tokens, return_fc)
        layer = getattr(cfg, "prune_layer", None)
        self.prune_after = -1 if layer is None else int(layer)
        self.pruner: Optional[TokenPruner] = None
        if layer is not None:
            self.pruner = TokenPruner(cfg.encoder.embed_dim, getattr(cfg, "prune_keep_ratio", None),
                                      getattr(cfg, "prune_threshold", None),
                                      getattr(cfg, "prune_importance", None) or "attention")

    def build_encoder_layer(self, cfg):
        return _wrap_layer(EattEncoderLayer(cfg, return_fc=self.return_fc), cfg)

    def forward_scriptable(self, src_tokens, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False,
                           token_embeddings: Optional[Tensor] = None):
        """fairseq's encoder forward (same outputs), with the pruning step after layer ``prune_after``."""
        padding_mask = src_tokens.eq(self.padding_idx)
        x, encoder_embedding = self.forward_embedding(src_tokens, token_embeddings)
        x = (x * (1 - padding_mask.unsqueeze(-1).type_as(x))).transpose(0, 1)  # B x T x C -> T x B x C
        encoder_states: List[Tensor] = [x] if return_all_hiddens else []
        fc_results: List[Tensor] = []  # filled in eager mode only, as in fairseq
        pruner = self.pruner
        for index, layer in enumerate(self.layers):
            mask: Optional[Tensor] = padding_mask if bool(padding_mask.any()) else None
            fc_result: Optional[Tensor] = None
            if pruner is not None and index + 1 == self.prune_after:
                weights: Optional[Tensor] = None
                if pruner.uses_attention:
                    x, weights = layer.forward_with_attention(x, mask)
                else:
                    x = layer(x, encoder_padding_mask=mask)
                x, padding_mask = pruner(x, padding_mask, weights)
            else:
                out = layer(x, encoder_padding_mask=mask)
                if isinstance(out, tuple) and len(out) == 2:  # return_fc
                    x, fc_result = out
                else:
                    x = out
            if return_all_hiddens and not torch.jit.is_scripting():
                encoder_states.append(x)
                fc_results.append(fc_result)  # type: ignore[arg-type]
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return {
            "encoder_out": [x],  # T x B x C (with pruning: the kept tokens)
            "encoder_padding_mask": [padding_mask],  # B x T
            "encoder_embedding": [encoder_embedding],  # B x T x C: every source token
            "encoder_states": encoder_states,
            "fc_results": fc_results,
            "src_tokens": [],
            "src_lengths": [src_tokens.ne(self.padding_idx).sum(dim=1, dtype=torch.int32).reshape(-1, 1)],
        }


class EattTransformerDecoder(TransformerDecoderBase):
    """fairseq's decoder, depth-adaptive when ``--exit-threshold`` is below 1 (Elbayad et al. 2020): after every
    layer but the last, a token whose output distribution (the shared output layer on that layer's state) has a
    largest probability of at least the threshold exits there. Its state is copied to the layers it skips: they
    compute their self-attention keys and values from it (so that later tokens attend to it there), and their output
    for it is that state. Each token's exit depends only on its own prefix, so beam search, incremental decoding and a
    full pass take the same exits."""

    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)
        threshold = getattr(cfg, "exit_threshold", None)
        self.exit_threshold = 1.0 if threshold is None else float(threshold)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(EattDecoderLayer(cfg, no_encoder_attn), cfg)

    def exit_features(self, state: Tensor) -> Tensor:
        """(T, B, C) state of a layer -> (B, T, C) features for the shared output layer, as after the last layer."""
        if self.layer_norm is not None:
            state = self.layer_norm(state)
        state = state.transpose(0, 1)
        if self.project_out_dim is not None:
            state = self.project_out_dim(state)
        return state

    def extract_features_scriptable(self, prev_output_tokens, encoder_out: Optional[Dict[str, List[Tensor]]],
                                    incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                                    full_context_alignment: bool = False, alignment_layer: Optional[int] = None,
                                    alignment_heads: Optional[int] = None):
        """fairseq's decoder forward (same outputs), with early exits in evaluation below threshold 1; the extra
        output ``exit_layer`` holds each token's exit depth (1 = after the first layer), (B, T)."""
        if alignment_layer is None:
            alignment_layer = self.num_layers - 1
        enc: Optional[Tensor] = None
        padding_mask: Optional[Tensor] = None
        if encoder_out is not None and len(encoder_out["encoder_out"]) > 0:
            enc = encoder_out["encoder_out"][0]
        if encoder_out is not None and len(encoder_out["encoder_padding_mask"]) > 0:
            padding_mask = encoder_out["encoder_padding_mask"][0]
        positions: Optional[Tensor] = None
        if self.embed_positions is not None:
            positions = self.embed_positions(prev_output_tokens, incremental_state=incremental_state)
        if incremental_state is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
            if positions is not None:
                positions = positions[:, -1:]
        prev_output_tokens = prev_output_tokens.contiguous()
        x = self.embed_scale * self.embed_tokens(prev_output_tokens)
        if self.quant_noise is not None:
            x = self.quant_noise(x)
        if self.project_in_dim is not None:
            x = self.project_in_dim(x)
        if positions is not None:
            x += positions
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout_module(x).transpose(0, 1)  # B x T x C -> T x B x C
        self_attn_padding_mask: Optional[Tensor] = None
        if self.cross_self_attention or prev_output_tokens.eq(self.padding_idx).any():
            self_attn_padding_mask = prev_output_tokens.eq(self.padding_idx)
        exits = not self.training and self.exit_threshold < 1.0
        depth = torch.full(prev_output_tokens.shape, self.num_layers, dtype=torch.long, device=x.device)
        running = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # T x B: not exited yet
        attn: Optional[Tensor] = None
        inner_states: List[Optional[Tensor]] = [x]
        for idx, layer in enumerate(self.layers):
            self_attn_mask: Optional[Tensor] = None
            if incremental_state is None and not full_context_alignment:
                self_attn_mask = self.buffered_future_mask(x)
            if exits and not bool(running.any()):
                if incremental_state is not None:
                    # every token has exited: this skipped layer's self-attention takes one step on the copied
                    # state, for the keys and values it appends to the cache (its output is not needed;
                    # cross-attention and the feed-forward layer are skipped)
                    query = layer.self_attn_layer_norm(x) if layer.normalize_before else x
                    layer.self_attn(query=query, key=query, value=query, key_padding_mask=self_attn_padding_mask,
                                    incremental_state=incremental_state, need_weights=False)
                inner_states.append(x)
            else:
                out, layer_attn, _ = layer(x, enc, padding_mask, incremental_state, self_attn_mask=self_attn_mask,
                                           self_attn_padding_mask=self_attn_padding_mask,
                                           need_attn=bool((idx == alignment_layer)),
                                           need_head_weights=bool((idx == alignment_layer)))
                x = torch.where(running.unsqueeze(-1), out, x) if exits else out
                inner_states.append(x)
                if layer_attn is not None and idx == alignment_layer:
                    attn = layer_attn.float().to(x)
                if exits and idx < self.num_layers - 1:
                    probs = torch.softmax(self.output_layer(self.exit_features(x)), dim=-1)
                    leaving = running & (probs.max(dim=-1).values.transpose(0, 1) >= self.exit_threshold)
                    depth = torch.where(leaving.transpose(0, 1), torch.full_like(depth, idx + 1), depth)
                    running = running & ~leaving
        if attn is not None:
            if alignment_heads is not None:
                attn = attn[:alignment_heads]
            attn = attn.mean(dim=0)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)  # T x B x C -> B x T x C
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        exit_layer: List[Optional[Tensor]] = [depth]
        return x, {"attn": [attn], "inner_states": inner_states, "exit_layer": exit_layer}



def log_binarization(stats: BinarizationStats, how: str):
    """Log nonzero ratios with fairseq's metrics (weighted by element counts, so the aggregate is exact)."""
    totals = {}
    for (position, layer), (ones, total) in stats.counts().items():
        if how == "per-layer":
            metrics.log_scalar(f"binz_{position}_L{layer}", ones / total, total, round=3)
        o, t = totals.get(position, (0.0, 0.0))
        totals[position] = (o + ones, t + total)
    if how == "mean":
        for position, (ones, total) in totals.items():
            metrics.log_scalar(f"binz_{position}", ones / total, total, round=3)


CHECKPOINT_FORMAT = 1  # bump when a change makes checkpoints of earlier versions compute something else


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose plugin format or attention settings differ from the model it is loaded into."""


def _plain(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def attention_settings(args) -> dict:
    """{flag: {"variant": name, "options": constructor options}} of the three attention positions."""
    settings = {}
    for position, attr in POSITION_ATTRS.items():
        name = getattr(args, attr, None) or DEFAULT_ATTENTION
        options = get_attention_class(name).kwargs_from_args(args, position)
        settings[POSITION_FLAGS[position]] = {"variant": name,
                                              "options": {k: _plain(v) for k, v in sorted(options.items())}}
    return settings


def checkpoint_metadata(args) -> dict:
    from .. import __version__

    return {"plugin": "fairseq_eatt", "format": CHECKPOINT_FORMAT, "version": __version__,
            "attention": attention_settings(args)}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode_metadata(metadata: dict) -> torch.Tensor:
    """The metadata as an int64 tensor of the UTF-8 bytes of its JSON and that JSON's digest, so that every entry of
    a state dict is a tensor: fairseq's scripts/average_checkpoints.py sums integer tensors and floor-divides them by
    their count, which gives identical metadata back; the digest exposes an average of different metadata."""
    text = json.dumps(metadata, sort_keys=True)
    record = json.dumps({"metadata": text, "sha256": _digest(text)})
    return torch.tensor(list(record.encode("utf-8")), dtype=torch.int64)


def decode_metadata(stored) -> dict:
    """The metadata of :func:`encode_metadata`, or as stored by plugin versions that kept a dict."""
    if isinstance(stored, dict):
        return stored
    if isinstance(stored, torch.Tensor) and stored.dim() == 1 and not stored.is_floating_point():
        try:
            record = json.loads(bytes(stored.tolist()).decode("utf-8"))
            if _digest(record["metadata"]) == record["sha256"]:
                return json.loads(record["metadata"])
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            pass
    raise CheckpointMismatchError(
        f"the checkpoint's fairseq_eatt metadata is unreadable ({stored!r:.200}); an average of checkpoints with "
        f"other attention settings or plugin versions gives this: average only checkpoints of one training run")


def _options_differ(variant: str, mine: dict, theirs: dict) -> bool:
    """Options compared key by key; an option the checkpoint predates matches the value that computes what the
    checkpoint's version computed (the variant's ``added_options``)."""
    added = get_attention_class(variant).added_options
    for key in set(mine) | set(theirs):
        if key not in theirs and key in added:
            if mine[key] != _plain(added[key]):
                return True
        elif mine.get(key) != theirs.get(key):
            return True
    return False


def check_checkpoint_metadata(stored, args):
    """Refuse a checkpoint made by another plugin format or with other attention settings than ``args``."""
    from .. import __version__

    stored = decode_metadata(stored)
    if stored.get("plugin") != "fairseq_eatt":
        raise CheckpointMismatchError(f"the checkpoint's fairseq_eatt metadata is unreadable ({stored!r:.200})")
    fmt = stored.get("format")
    if fmt == 0:  # saved before the plugin recorded its settings
        logger.warning("this checkpoint predates fairseq_eatt's checkpoint metadata: its attention settings "
                       "cannot be checked against the model's")
        return
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"the checkpoint was written by fairseq_eatt {stored.get('version')} (checkpoint format {fmt}); this "
            f"is fairseq_eatt {__version__} (format {CHECKPOINT_FORMAT}), which computes its models differently: "
            f"use fairseq_eatt {stored.get('version')} for this checkpoint, or retrain")
    ours, problems = attention_settings(args), []
    for flag, theirs in stored.get("attention", {}).items():
        mine = ours.get(flag)
        if mine is None:
            problems.append(f"{flag}: unknown to this version")
        elif mine["variant"] != theirs["variant"]:
            problems.append(f"{flag}: checkpoint {theirs['variant']}, model {mine['variant']}")
        elif _options_differ(mine["variant"], mine["options"], theirs["options"]):
            diff = sorted(k for k in set(mine["options"]) | set(theirs["options"])
                          if mine["options"].get(k) != theirs["options"].get(k))
            problems.append(f"{flag} {mine['variant']} options " + ", ".join(
                f"{k}: checkpoint {theirs['options'].get(k)!r}, model {mine['options'].get(k)!r}" for k in diff))
    if problems:
        raise CheckpointMismatchError(
            "the checkpoint was trained with other attention settings than this model: " + "; ".join(problems)
            + ". Build the model with the checkpoint's settings (fairseq-generate takes them from the checkpoint "
              "unless --model-overrides changes them; fairseq-train --restore-file needs the same flags)")


def validate_attention_args(args):
    """Refuse unknown names, impossible positions and bad E-ATT options before any work is done."""
    for position, attr in POSITION_ATTRS.items():
        cls = check_position(getattr(args, attr), position)
        criterion = getattr(args, "criterion", None)
        if criterion not in (None, AUX_CRITERION) and cls.has_auxiliary_loss(args):
            raise AttentionSpecError(
                f"{POSITION_FLAGS[position]} {cls.variant_name}: its auxiliary loss needs --criterion "
                f"{AUX_CRITERION} (--criterion {criterion} would drop it)"
            )
    noise, block = getattr(args, "quant_noise_pq", 0) or 0, getattr(args, "quant_noise_pq_block_size", 8) or 8
    dims = {getattr(args, f"{side}_embed_dim", None) for side in ("encoder", "decoder")} - {None}
    if noise > 0 and any(d % block for d in dims):
        raise AttentionSpecError(f"--quant-noise-pq-block-size {block} must divide the input size of every linear "
                                 f"map, among them the model dimensions {sorted(dims)}")
    bits, modules = getattr(args, "weight_bits", None), getattr(args, "quantize_modules", None)
    try:
        if bits is not None:
            check_weight_bits(bits)
            parse_modules(modules or "attn,ffn")
        elif modules:
            raise ValueError("--quantize-modules needs --weight-bits (1, 2 or 8)")
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None
    try:
        check_prune_args(getattr(args, "prune_layer", None), getattr(args, "prune_keep_ratio", None),
                         getattr(args, "prune_threshold", None), getattr(args, "prune_importance", None),
                         getattr(args, "encoder_layers", None))
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None
    check_early_exit_args(args)
    if getattr(args, "cross_self_attention", False):
        name = getattr(args, POSITION_ATTRS[DECODER_SELF]) or DEFAULT_ATTENTION
        caps = get_attention_class(name).capabilities
        if not caps.cross_self_attention:
            raise AttentionSpecError(f"--cross-self-attention with --decoder-self-attention {name}: it "
                                     f"{caps.cross_self_why_not}; use another decoder self-attention variant")
    try:
        for position, attr in POSITION_ATTRS.items():  # every option a variant reads, e.g. E-ATT's thresholds
            get_attention_class(getattr(args, attr)).kwargs_from_args(args, position)
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None


def check_early_exit_args(args):
    threshold = getattr(args, "exit_threshold", None)
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise AttentionSpecError(f"--exit-threshold must be in [0, 1] (the largest probability at which a token "
                                 f"exits), got {threshold}")
    exits = getattr(args, "early_exit", False) or (threshold is not None and threshold < 1.0)
    criterion = getattr(args, "criterion", None)
    if getattr(args, "early_exit", False) and criterion not in (None, AUX_CRITERION):
        raise AttentionSpecError(f"--early-exit trains every decoder layer's exit with --criterion {AUX_CRITERION} "
                                 f"(--criterion {criterion} would train the last layer only)")
    if exits and getattr(args, "cross_self_attention", False):
        raise AttentionSpecError("--early-exit / --exit-threshold with --cross-self-attention: a skipped layer's "
                                 "cache would need the source's keys too; use one or the other")
    if exits and getattr(args, "adaptive_softmax_cutoff", None):
        raise AttentionSpecError("--early-exit / --exit-threshold need the full output layer for their "
                                 "confidence; --adaptive-softmax-cutoff replaces it")


@register_model("transformer_eatt")
class TransformerEattModel(TransformerModel):
    """Transformer whose attention in each position is any registered variant (default: E-ATT everywhere)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        names = available_attentions()
        where = {
            ENCODER_SELF: "encoder self-attention",
            DECODER_SELF: "decoder self-attention (must support causal masking)",
            DECODER_CROSS: "decoder cross-attention (encoder-decoder)",
        }
        for position, flag in POSITION_FLAGS.items():
            parser.add_argument(
                flag, choices=names, metavar="VARIANT",
                help=f"attention variant for {where[position]} (default: {DEFAULT_ATTENTION}); "
                     f"choices: {', '.join(names)}",
            )
        parser.add_argument(
            "--log-binarization", choices=("per-layer", "mean", "off"), metavar="HOW",
            help="during validation, log the ratio of nonzero binarized inputs of E-ATT-style attention "
                 "(the paper's Figure 3): per-layer (default), mean (one value per position) or off",
        )
        parser.add_argument("--weight-bits", type=int, choices=WEIGHT_BITS, metavar="BITS",
                            help="quantization-aware training of weights: 1 (binary, XNOR scale), 2 (ternary, TWN "
                                 "threshold) or 8 bits, one scale per output channel, straight-through gradients "
                                 "(default: float weights)")
        parser.add_argument("--quantize-modules", metavar="MODULES",
                            help="with --weight-bits: comma-separated subset of attn (every attention's linear "
                                 "maps, E-ATT's selections included), ffn (the feed-forward layers); default attn,ffn")
        parser.add_argument("--prune-layer", type=int, metavar="N",
                            help="token pruning: after encoder layer N (1 = the first), keep only the most important "
                                 "source tokens; later encoder layers and cross-attention see only those (default: "
                                 "no pruning)")
        parser.add_argument("--prune-keep-ratio", type=float, metavar="R",
                            help="with --prune-layer: keep ceil(R x length) tokens per sentence, R in (0, 1] "
                                 "(default 0.7 unless --prune-threshold is given)")
        parser.add_argument("--prune-threshold", type=float, metavar="T",
                            help="with --prune-layer: keep the tokens whose importance is at least T x the "
                                 "sentence's largest, T in [0, 1] (instead of --prune-keep-ratio)")
        parser.add_argument("--prune-importance", choices=IMPORTANCE, metavar="HOW",
                            help="with --prune-layer: attention (default: the attention a token receives in that "
                                 "layer, averaged over heads and queries) or learned (a sigmoid scorer that "
                                 "also scales the kept tokens, trained by the translation loss)")
        parser.add_argument("--early-exit", action="store_true",
                            help="depth-adaptive decoder: train every decoder layer's exit (the shared output layer "
                                 "on its state) with the mean of all layers' losses; needs --criterion "
                                 f"{AUX_CRITERION}")
        parser.add_argument("--exit-threshold", type=float, metavar="C",
                            help="at inference, a target token leaves the decoder after the first layer whose exit "
                                 "gives its largest probability >= C, C in [0, 1]; 1 (default) runs every layer. Set "
                                 "it when decoding: fairseq-generate --model-overrides \"{'exit_threshold': 0.9}\"")
        flags = set()  # each flag once, though several variants share options
        for name in names:
            get_attention_class(name).add_args(parser, flags)

    @classmethod
    def build_model(cls, args, task):
        eatt_defaults(args)
        validate_attention_args(args)
        return super().build_model(args, task)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, return_all_hiddens: bool = True,
                features_only: bool = False, alignment_layer: Optional[int] = None,
                alignment_heads: Optional[int] = None):
        """fairseq's forward (its signature, which TorchScript can compile); in eager validation it also logs
        the binarization ratios (``--log-binarization``)."""
        if not torch.jit.is_scripting() and self._logs_binarization():
            return self._forward_logging_binarization(src_tokens, src_lengths, prev_output_tokens,
                                                      return_all_hiddens, features_only, alignment_layer,
                                                      alignment_heads)
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, return_all_hiddens=return_all_hiddens)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only,
                            alignment_layer=alignment_layer, alignment_heads=alignment_heads,
                            src_lengths=src_lengths, return_all_hiddens=return_all_hiddens)

    @torch.jit.unused
    def _logs_binarization(self) -> bool:
        how = getattr(self.args, "log_binarization", None) or "per-layer"
        return not self.training and how != "off" and any(True for _ in binarizing_modules(self))

    @torch.jit.unused
    def _forward_logging_binarization(self, src_tokens, src_lengths, prev_output_tokens, return_all_hiddens: bool,
                                      features_only: bool, alignment_layer: Optional[int],
                                      alignment_heads: Optional[int]):
        set_tracking(self, True)
        try:
            encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, return_all_hiddens=return_all_hiddens)
            out = self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only,
                               alignment_layer=alignment_layer, alignment_heads=alignment_heads,
                               src_lengths=src_lengths, return_all_hiddens=return_all_hiddens)
            stats = BinarizationStats()
            pruned = self.encoder.pruner is not None
            stats.update(self, src_tokens.eq(self.encoder.padding_idx), prev_output_tokens.eq(self.decoder.padding_idx),
                         encoder_out["encoder_padding_mask"][0] if pruned else None, self.encoder.prune_after)
            log_binarization(stats, getattr(self.args, "log_binarization", None) or "per-layer")
        finally:
            set_tracking(self, False)
        return out

    # ---- checkpoints: the plugin's format and the attention settings travel with the weights ----
    def get_extra_state(self):
        return encode_metadata(checkpoint_metadata(self.args))

    def set_extra_state(self, state):
        check_checkpoint_metadata(state, self.args)  # runs before any weight is loaded into a layer

    def upgrade_state_dict_named(self, state_dict, name):
        unpack_state(state_dict)  # a packed checkpoint (fairseq-eatt-pack): its quantized weights as floats
        super().upgrade_state_dict_named(state_dict, name)
        state_dict.setdefault((name + "." if name else "") + "_extra_state",
                              encode_metadata({"plugin": "fairseq_eatt", "format": 0}))

    def make_generation_fast_(self, **kwargs):
        """``--retain-dropout-modules`` takes fairseq's names of the transformer's parts (TransformerEncoder,
        TransformerDecoderLayerBase, MultiheadAttention, ...) as well as this plugin's."""
        modules = kwargs.get("retain_dropout_modules")
        if modules is not None:
            kwargs["retain_dropout_modules"] = list(modules) + [ours for stock, ours in STOCK_MODULE_NAMES.items()
                                                                if stock in modules and ours not in modules]
        super().make_generation_fast_(**kwargs)

    def set_beam_size(self, beam_size):
        """fairseq's SequenceGenerator calls this where a model has it: the decoder's cross-attention then keeps
        the source's keys and values once per sentence, not once per hypothesis (AttentionBase._fold_beams)."""
        self.decoder.set_beam_size(beam_size)

    def max_positions(self):
        """fairseq's limits, tightened by attention variants that have a maximum length (the synthesizers), so
        that fairseq filters long training pairs and stops generation in time instead of failing mid-batch."""
        src, tgt = super().max_positions()
        for position, _, module in attention_modules(self):
            if module.capabilities.fixed_max_length:
                query, key = module.max_query_length, module.max_key_length
                if position == "cross":
                    src, tgt = min(src, key), min(tgt, query)
                elif position == "encoder_self":
                    src = min(src, key)
                else:
                    tgt = min(tgt, key)
        return src, tgt

    def max_decoder_positions(self):
        return self.max_positions()[1]

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return EattTransformerEncoder(TransformerConfig.from_namespace(args), src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return EattTransformerDecoder(cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention)


def eatt_defaults(args):
    """Defaults of the plugin's own flags (fairseq leaves unset model flags absent, see argument_default); each
    variant fills what it derives from its flags (prepare_args), before fairseq's own architecture defaults."""
    for attr in POSITION_ATTRS.values():
        if getattr(args, attr, None) is None:
            setattr(args, attr, DEFAULT_ATTENTION)
    seen = set()
    for name in available_attentions():
        for owner in get_attention_class(name).__mro__:
            if "prepare_args" in owner.__dict__ and owner not in seen:
                seen.add(owner)
                owner.prepare_args(args)


@register_model_architecture("transformer_eatt", "transformer_eatt")
def transformer_eatt(args):
    """The paper's Transformer-base: d 512, ffn 2048, 8 heads, 6+6 layers, E-ATT in every position."""
    eatt_defaults(args)
    base_architecture(args)


def _default_dims(args, dim: int, ffn: int, heads: int, layers: int):
    for side in ("encoder", "decoder"):
        for key, value in (("embed_dim", dim), ("ffn_embed_dim", ffn), ("attention_heads", heads), ("layers", layers)):
            attr = f"{side}_{key}"
            setattr(args, attr, getattr(args, attr, value))


@register_model_architecture("transformer_eatt", "transformer_eatt_small")
def transformer_eatt_small(args):
    """Sized for CPU experiments on Multi30k: d 256, ffn 1024, 4 heads, 3+3 layers, dropout 0.3."""
    _default_dims(args, dim=256, ffn=1024, heads=4, layers=3)
    args.dropout = getattr(args, "dropout", 0.3)
    transformer_eatt(args)


@register_model_architecture("transformer_eatt", "transformer_eatt_tiny")
def transformer_eatt_tiny(args):
    """For tests and smoke runs: d 64, ffn 128, 2 heads, 2+2 layers."""
    _default_dims(args, dim=64, ffn=128, heads=2, layers=2)
    transformer_eatt(args)

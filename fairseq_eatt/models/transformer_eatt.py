"""fairseq glue: the ``transformer_eatt`` model, its encoder, decoder and layers, and its architectures.

A stock fairseq transformer whose three attention positions are built from the attention registry:
``--encoder-self-attention``, ``--decoder-self-attention`` and ``--decoder-cross-attention`` each take any
registered variant name allowed in that position, so hybrids (e.g. vanilla self-attention with E-ATT
cross-attention) need no extra code. Beside it: attention_flags.py (the per-position flags), techniques.py
(pruning, quantization, early exit), early_exit.py (the decoder forward with exits), metadata.py (what a
checkpoint records and how it is checked).
"""
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fairseq.distributed import fsdp_wrap
from fairseq.logging import metrics
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerEncoderBase, TransformerModel, base_architecture
from fairseq.modules import transformer_layer
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from ..tracking import BinarizationStats, binarizing_modules, set_tracking
from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, AttentionSpecError, build_attention
from ..attention.observers import region
from ..pruning import TokenPruner
from ..quantization import unpack_state
from .attention_flags import (  # noqa: F401  (DEFAULT_ATTENTION, POSITION_ATTRS: also imported from here)
    DEFAULT_ATTENTION,
    POSITION_ATTRS,
    add_position_args,
    add_variant_args,
    attention_defaults,
    check_positions,
    check_variant_options,
)
from .early_exit import EarlyExitDecoder
from .metadata import (  # noqa: F401  (the metadata's names, also imported from here)
    CHECKPOINT_FORMAT,
    LEGACY_METADATA,
    CheckpointMismatchError,
    attention_settings,
    check_checkpoint_metadata,
    checkpoint_metadata,
    dictionary_digests,
    decode_metadata,
    encode_metadata,
)
from .techniques import (
    WordedOption,
    add_technique_args,
    check_technique_args,
    prune_after,
    quantize_attention,
    quantize_fc,
    token_pruner,
)

LOG_BINARIZATION = WordedOption(
    "log_binarization", "--log-binarization", "per-layer", choices=("per-layer", "mean", "off"), metavar="HOW",
    help="during validation, log the ratio of nonzero binarized inputs of E-ATT-style attention (the paper's "
         "Figure 3): per-layer (default), mean (one value per position) or off")


def attention_for(cfg, position: str, embed_dim: int, num_heads: int, kdim=None, vdim=None):
    """The attention module chosen for ``position`` by its flag, with its options from the flags, quantized as
    the quantization flags say."""
    name = getattr(cfg, POSITION_ATTRS[position], None) or DEFAULT_ATTENTION
    module = build_attention(name, embed_dim, num_heads, position, kdim=kdim, vdim=vdim,
                             dropout=cfg.attention_dropout, args=cfg)
    return quantize_attention(module, cfg, position, name)


class EattEncoderLayer(transformer_layer.TransformerEncoderLayerBase):
    def __init__(self, cfg, return_fc=False):
        super().__init__(cfg, return_fc)
        self.fc1, self.fc2 = quantize_fc(self.fc1, cfg), quantize_fc(self.fc2, cfg)

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
        self.fc1, self.fc2 = quantize_fc(self.fc1, cfg), quantize_fc(self.fc2, cfg)

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
        self.prune_after = prune_after(cfg)
        self.pruner: Optional[TokenPruner] = token_pruner(cfg, cfg.encoder.embed_dim)

    def build_encoder_layer(self, cfg):
        return _wrap_layer(EattEncoderLayer(cfg, return_fc=self.return_fc), cfg)

    def forward(self, src_tokens, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False,
                token_embeddings: Optional[Tensor] = None):
        if not torch.jit.is_scripting():  # observers (the energy accounting) see each forward
            return self._observed_forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        return self.forward_scriptable(src_tokens, src_lengths, return_all_hiddens, token_embeddings)

    @torch.jit.unused
    def _observed_forward(self, src_tokens, src_lengths: Optional[Tensor], return_all_hiddens: bool,
                          token_embeddings: Optional[Tensor]):
        with region(self):
            return self.forward_scriptable(src_tokens, src_lengths, return_all_hiddens, token_embeddings)

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


class EattTransformerDecoder(EarlyExitDecoder):
    """fairseq's decoder with this plugin's layers, depth-adaptive below ``--exit-threshold`` 1 (early_exit.py)."""

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(EattDecoderLayer(cfg, no_encoder_attn), cfg)


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


def validate_args(args):
    """Refuse what cannot work before any work is done, each error naming its flag: the attention variants and
    their positions, the techniques' flags, then the variants' options."""
    check_positions(args)
    check_technique_args(args)
    check_variant_options(args)


@register_model("transformer_eatt")
class TransformerEattModel(TransformerModel):
    """Transformer whose attention in each position is any registered variant (default: E-ATT everywhere)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_position_args(parser)
        LOG_BINARIZATION.add_to(parser)
        add_technique_args(parser)
        add_variant_args(parser)

    @classmethod
    def build_model(cls, args, task):
        attention_defaults(args)
        validate_args(args)
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
        how = LOG_BINARIZATION.from_args(self.args) or LOG_BINARIZATION.default
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
            log_binarization(stats, LOG_BINARIZATION.from_args(self.args) or LOG_BINARIZATION.default)
        finally:
            set_tracking(self, False)
        return out

    # ---- checkpoints: the plugin's format and the attention settings travel with the weights ----
    def get_extra_state(self):
        return encode_metadata(checkpoint_metadata(self.args, self._dictionaries()))

    def set_extra_state(self, state):
        # runs before any weight is loaded into a layer
        check_checkpoint_metadata(state, self.args, self._dictionaries())

    def _dictionaries(self) -> dict:
        return dictionary_digests(getattr(self.encoder, "dictionary", None), getattr(self.decoder, "dictionary", None))

    def upgrade_state_dict_named(self, state_dict, name):
        unpack_state(state_dict)  # a packed checkpoint (fairseq-eatt-pack): its quantized weights as floats
        super().upgrade_state_dict_named(state_dict, name)
        state_dict.setdefault((name + "." if name else "") + "_extra_state", encode_metadata(LEGACY_METADATA))

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

    def _attention_by_position(self) -> Iterator[Tuple[str, nn.Module]]:
        """(registry position, module) of every attention module."""
        for layer in self.encoder.layers:
            yield ENCODER_SELF, layer.self_attn
        for layer in self.decoder.layers:
            yield DECODER_SELF, layer.self_attn
            if layer.encoder_attn is not None:
                yield DECODER_CROSS, layer.encoder_attn

    def max_positions(self):
        """fairseq's limits, tightened by attention variants that have a maximum length (the synthesizers), so
        that fairseq filters long training pairs and stops generation in time instead of failing mid-batch."""
        src, tgt = super().max_positions()
        for position, module in self._attention_by_position():
            if module.capabilities.fixed_max_length:
                query, key = module.max_query_length, module.max_key_length
                if position == DECODER_CROSS:
                    src, tgt = min(src, key), min(tgt, query)
                elif position == ENCODER_SELF:
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


@register_model_architecture("transformer_eatt", "transformer_eatt")
def transformer_eatt(args):
    """The paper's Transformer-base: d 512, ffn 2048, 8 heads, 6+6 layers, E-ATT in every position."""
    attention_defaults(args)
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

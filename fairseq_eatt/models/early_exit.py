"""Depth-adaptive decoding (Elbayad et al. 2020): the decoder forward with early exits.

fairseq 0.12's decoder runs its layers inside one method, extract_features_scriptable, with no hook between
layers, so the forward is copied here with the exits added; tests/test_early_exit_copy.py checks that without
exits it computes exactly what fairseq's does.
"""
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from fairseq.models.transformer import TransformerDecoderBase

from ..attention.observers import region
from .techniques import exit_threshold


class EarlyExitDecoder(TransformerDecoderBase):
    """fairseq's decoder, depth-adaptive when ``--exit-threshold`` is below 1: after every layer but the last, a
    token whose output distribution (the shared output layer on that layer's state) has a largest probability of
    at least the threshold exits there. Its state is copied to the layers it skips: they compute their
    self-attention keys and values from it (so that later tokens attend to it there), and their output for it is
    that state. Each token's exit depends only on its own prefix, so beam search, incremental decoding and a full
    pass take the same exits."""

    def __init__(self, cfg, dictionary, embed_tokens, no_encoder_attn=False, output_projection=None):
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn, output_projection)
        self.exit_threshold = exit_threshold(cfg)

    def forward(self, prev_output_tokens, encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None, features_only: bool = False,
                full_context_alignment: bool = False, alignment_layer: Optional[int] = None,
                alignment_heads: Optional[int] = None, src_lengths: Optional[Any] = None,
                return_all_hiddens: bool = False):
        if not torch.jit.is_scripting():  # observers (the energy accounting) see each forward
            return self._observed_forward(prev_output_tokens, encoder_out, incremental_state, features_only,
                                          full_context_alignment, alignment_layer, alignment_heads)
        return self._forward(prev_output_tokens, encoder_out, incremental_state, features_only,
                             full_context_alignment, alignment_layer, alignment_heads)

    def _forward(self, prev_output_tokens, encoder_out: Optional[Dict[str, List[Tensor]]] = None,
                 incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
                 features_only: bool = False, full_context_alignment: bool = False,
                 alignment_layer: Optional[int] = None, alignment_heads: Optional[int] = None):
        """fairseq's decoder forward: the features, then the output layer."""
        x, extra = self.extract_features(prev_output_tokens, encoder_out=encoder_out,
                                         incremental_state=incremental_state,
                                         full_context_alignment=full_context_alignment,
                                         alignment_layer=alignment_layer, alignment_heads=alignment_heads)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    @torch.jit.unused
    def _observed_forward(self, prev_output_tokens, encoder_out: Optional[Dict[str, List[Tensor]]],
                          incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]], features_only: bool,
                          full_context_alignment: bool, alignment_layer: Optional[int],
                          alignment_heads: Optional[int]):
        with region(self):
            return self._forward(prev_output_tokens, encoder_out, incremental_state, features_only,
                                 full_context_alignment, alignment_layer, alignment_heads)

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

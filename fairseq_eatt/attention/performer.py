"""Performer (Choromanski et al., 2021), the survey's kernel attention: FAVOR+ positive random features.

softmax(q k^T) is approximated by phi(q) phi(k)^T with phi(x) = exp(W x - |x|^2 / 2) / sqrt(m), W an (m x d)
block-orthogonal Gaussian matrix (``--performer-features m``), q and k scaled by d^(-1/4). Then
out = phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1): no (T x S) matrix, memory linear in the length.

- Causal (decoder self-attention): prefix sums. The full pass works in chunks (masked products inside a chunk,
  running sums across chunks: linear memory without a (S x m x d) tensor per head); incremental
  decoding keeps the running sums S_t = sum_{s<=t} phi(k_s) v_s^T and z_t = sum_{s<=t} phi(k_s) in the cache
  (constant size per step, reordered with the beams) and gives the same result as the full pass.
- Padding keys get phi(k) = 0 and so never contribute.
- Numerics: features and sums in float32. Each query's features are divided by their own maximum (it cancels
  between numerator and denominator); keys get no data-dependent stabilizer, so incremental and full passes agree.
- The random features are a buffer drawn once at construction (saved in checkpoints, identical on every worker
  since fairseq seeds all of them alike). No attention dropout: the probabilities are never formed.
- ``need_weights`` (e.g. ``--print-alignment``) forms the (T x S) approximate weights explicitly, only then.
"""
import math
from typing import Final, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .counts import OpCounts, check_convention, projection
from .cache import entry
from .base import Cache, IncrementalState, Positions
from .options import Option, positive
from .registry import Capabilities, register_attention
from .vanilla import VanillaAttention, VanillaCost


FEATURES = Option("features", "--performer-features", 64, "performer: number of positive random features per head",
                  type=int, metavar="M", check=positive)


def orthogonal_gaussian(rows: int, dim: int) -> Tensor:
    """(rows x dim) Gaussian random features with orthogonal rows inside each block of ``dim`` rows."""
    blocks = []
    for start in range(0, rows, dim):
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        norms = torch.randn(dim, dim).norm(dim=1)  # row lengths of a Gaussian matrix
        blocks.append((q.t() * norms.unsqueeze(1))[: rows - start])
    return torch.cat(blocks, dim=0)


class PerformerCost(VanillaCost):
    def unmasked(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Non-causal form (encoder self- and cross-attention); the causal prefix sums differ. Paper: the feature
        maps' products, phi(K)^T V, phi(Q) (phi(K)^T V) and the normalizer. Complete: also the input scaling,
        the |x|^2 / 2 terms, the query stabilizer, the 1/sqrt(m) factor, the key sum and the final division."""
        check_convention(convention)
        m = int(self.module.option_values(options)["features"])
        if convention == "paper":
            feats = OpCounts(mul=(lq + lk) * d * m, add=(lq + lk) * d * m)
            kv = OpCounts(mul=lk * m * d, add=lk * m * d)
            out = OpCounts(mul=lq * m * d + lq * heads * m, add=lq * m * d + lq * heads * m)
            alignment = projection(lq, d, d) + projection(lk, d, d) + feats
            return {"alignment": alignment, "attention": alignment + projection(lk, d, d) + kv + out}
        features = self.feature_ops
        alignment = (projection(lq, d, d) + projection(lk, d, d) + OpCounts(mul=(lq + lk) * d)
                     + features(lq, d, heads, m, True) + features(lk, d, heads, m, False))
        kv = OpCounts(mul=lk * m * d, add=(lk - 1) * m * d + heads * (lk - 1) * m)
        out = OpCounts(mul=lq * m * d + lq * heads * m + lq * d, add=lq * (m - 1) * d + lq * heads * (m - 1))
        return {"alignment": alignment, "attention": alignment + projection(lk, d, d) + kv + out}

    @staticmethod
    def feature_ops(n: int, d: int, heads: int, m: int, stabilized: bool) -> OpCounts:
        """phi of n scaled inputs: the random projections, |x|^2 / 2 (and the query stabilizer), exp not counted,
        and the 1/sqrt(m) factor."""
        dk = d // heads
        logits = n * heads * m * (2 if stabilized else 1)
        return OpCounts(mul=n * d * m + n * d + n * heads + n * heads * m,
                        add=n * heads * (dk - 1) * m + n * heads * (dk - 1) + logits)

    stateful_steps = True

    def weights(self, lq, lk, d, heads, averaged=True, **options):
        """Weights asked for: the dense phi(Q) phi(K)^T, its row sums and the normalization (see attend)."""
        m = int(self.module.option_values(options)["features"])
        pairs = heads * lq * lk
        dense = OpCounts(mul=pairs * m + pairs, add=pairs * (m - 1) + heads * lq * (lk - 1))
        return dense + super().weights(lq, lk, d, heads, averaged, **options)

    def cache_entries(self, lk, d, heads, self_attention=True, **options):
        """Self-attention keeps running sums (a fixed-size state rewritten every step); cross-attention keeps the
        source's keys, values and features (unread later) and their sums."""
        m = int(self.module.option_values(options)["features"])
        sums = {"kv_state" if self_attention else "performer_kv": (m * d, True, False),
                "k_state" if self_attention else "performer_k_sum": (heads * m, True, False)}
        if self_attention:
            return sums
        return {"prev_key": (lk * d, False, True), "prev_value": (lk * d, False, True),
                "performer_phi_k": (heads * lk * m, False, True), **sums}

    def cached_key(self, lq, cached, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """Complete convention. Cross-attention caches the source's features and phi(K)^T V and the key sums: a
        step computes its query's features and the output only. Decoder self-attention keeps running sums
        instead of keys: a step adds its one key's phi(k) v^T and phi(k) to them (see forward)."""
        if convention == "paper":
            return super().cached_key(lq, cached, lk, d, heads, convention, nonzero_ratio, **options)
        m = int(self.module.option_values(options)["features"])
        if cached == lk:  # cross-attention from the cache
            keys = projection(lk, d, d) + OpCounts(mul=lk * d) + self.feature_ops(lk, d, heads, m, False)
            kv = OpCounts(mul=lk * m * d, add=(lk - 1) * m * d + heads * (lk - 1) * m)
            return {"alignment": keys, "attention": keys + projection(lk, d, d) + kv}
        core = self.unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        new = lk - cached
        alignment = (projection(lq, d, d) + projection(new, d, d) + OpCounts(mul=(lq + new) * d)
                     + self.feature_ops(lq, d, heads, m, True) + self.feature_ops(new, d, heads, m, False))
        # phi(k) v^T and phi(k), added to the state (the first step starts it: nothing to add to)
        running = OpCounts(mul=new * m * d, add=lq * (m * d + heads * m) if cached else 0)
        out = OpCounts(mul=lq * (m * d + heads * m + d), add=lq * ((m - 1) * d + heads * (m - 1)))
        step = {"alignment": alignment, "attention": alignment + projection(new, d, d) + running + out}
        return {part: core[part] - step[part] for part in core}

    def causal(self, lq, lk, d, heads, convention="paper", nonzero_ratio=None, **options):
        """The causal full pass runs in chunks of CHUNK positions (see _causal_chunked): per chunk phi(K)^T V and
        the key sums, their running sums over the chunks before, the masked (C x C) products within the chunk,
        and the final division; positions padded to whole chunks are computed too. Paper: as non-causal."""
        counts = self.unmasked(lq, lk, d, heads, convention, nonzero_ratio, **options)
        if convention == "paper":
            return counts
        m = int(self.module.option_values(options)["features"])
        chunk = min(self.module.CHUNK, lk)
        n = -(-lk // chunk)
        padded = n * chunk
        kv = OpCounts(mul=padded * m * d, add=n * (chunk - 1) * m * d)  # per chunk phi(K)^T V
        running = OpCounts(add=(2 * n - 1) * m * d + heads * (n * (chunk - 1) * m + (2 * n - 1) * m))
        within = OpCounts(mul=heads * n * chunk * chunk * m, add=heads * n * chunk * chunk * (m - 1))  # phi(Q) phi(K)^T
        num = OpCounts(mul=padded * chunk * d + padded * m * d,
                       add=padded * (chunk - 1) * d + padded * (m - 1) * d + padded * d)
        den = OpCounts(mul=heads * padded * m, add=heads * (padded * (chunk - 1) + padded * (m - 1) + padded))
        values = kv + running + within + num + den + OpCounts(mul=padded * d)  # and the division
        alignment = counts["alignment"]
        return {"alignment": alignment, "attention": alignment + projection(lk, d, d) + values}


@register_attention("performer", cost=PerformerCost)
class PerformerAttention(VanillaAttention):
    capabilities = Capabilities(causal=True, cross=True, cross_self_attention=False,
                                cross_self_why_not="decodes step by step with running sums over its own earlier "
                                                   "positions, not over keys that start with the source")
    CHUNK: Final[int] = 64  # positions per chunk of the causal full pass

    options = (FEATURES,)

    def __init__(self, embed_dim: int, num_heads: int, *, features: int = FEATURES.default, **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        self.num_features = FEATURES.validate(features)
        self.register_buffer("random_features", orthogonal_gaussian(self.num_features, self.head_dim))
        self.input_scale = self.head_dim**-0.25

    def project_query(self, query: Tensor) -> Tensor:
        return self._split_heads(self.q_proj(query) * self.input_scale)

    def project_key(self, key: Tensor) -> Tensor:
        return self._split_heads(self.k_proj(key) * self.input_scale)

    def _features(self, x: Tensor, is_query: bool) -> Tensor:
        x = x.float()
        logits = torch.matmul(x, self.random_features.float().t()) - 0.5 * (x * x).sum(-1, keepdim=True)
        if is_query:
            logits = logits - logits.amax(dim=-1, keepdim=True).detach()
        return torch.exp(logits) / math.sqrt(self.num_features)

    def _key_features(self, k: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
        phi = self._features(k, is_query=False)
        if key_padding_mask is not None:
            phi = phi.masked_fill(key_padding_mask.to(torch.bool)[:, None, :, None], 0.0)
        return phi

    @staticmethod
    def _normalize(num: Tensor, den: Tensor) -> Tensor:
        return num / den.clamp_min(1e-12).unsqueeze(-1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
               attn_mask: Optional[Tensor], need_weights: bool,
               cache: Optional[Cache] = None) -> Tuple[Tensor, Optional[Tensor]]:
        tgt_len, src_len = q.size(2), k.size(2)
        cached_phi_k = entry(cache, "performer_phi_k")
        if cached_phi_k is not None and cached_phi_k.shape[:3] == k.shape[:3]:
            phi_k = cached_phi_k  # cross-attention while decoding: the source's features, once
        else:
            phi_k = self._key_features(k, key_padding_mask)
            if cache is not None:
                cache["performer_phi_k"], cache["performer_kv"], cache["performer_k_sum"] = phi_k, None, None
        phi_q = self._features(q, True)
        vf = v.float()
        if attn_mask is not None and tgt_len == src_len:
            out = self._causal_chunked(phi_q, phi_k, vf)
        elif attn_mask is not None:  # causal, queries = the last keys: prefix sums, (B, H, S, m, d)
            kv = torch.einsum("bhsm,bhsd->bhsmd", phi_k, vf).cumsum(dim=2)[:, :, src_len - tgt_len:]
            z = phi_k.cumsum(dim=2)[:, :, src_len - tgt_len:]
            out = self._normalize(torch.einsum("bhtm,bhtmd->bhtd", phi_q, kv), (phi_q * z).sum(-1))
        else:
            kv, phi_k_sum = self._key_summary(phi_k, vf, cache)
            den = torch.einsum("bhtm,bhm->bht", phi_q, phi_k_sum)
            out = self._normalize(torch.einsum("bhtm,bhmd->bhtd", phi_q, kv), den)
        weights: Optional[Tensor] = None
        if need_weights:
            dense = torch.matmul(phi_q, phi_k.transpose(-1, -2))
            if attn_mask is not None:
                dense = dense.masked_fill(attn_mask.float() == float("-inf"), 0.0)
            weights = dense / dense.sum(-1, keepdim=True).clamp_min(1e-12)
        return out.to(v.dtype), weights

    def _key_summary(self, phi_k: Tensor, v: Tensor, cache: Optional[Cache]) -> Tuple[Tensor, Tensor]:
        """(sum_s phi(k_s) v_s^T, sum_s phi(k_s)), kept in the decoding cache of cross-attention."""
        cached_kv, cached_k_sum = entry(cache, "performer_kv"), entry(cache, "performer_k_sum")
        if cached_kv is not None and cached_k_sum is not None:
            return cached_kv, cached_k_sum
        kv, k_sum = torch.einsum("bhsm,bhsd->bhmd", phi_k, v), phi_k.sum(dim=2)
        if cache is not None:
            cache["performer_kv"], cache["performer_k_sum"] = kv, k_sum
        return kv, k_sum

    def _causal_chunked(self, phi_q: Tensor, phi_k: Tensor, v: Tensor) -> Tensor:
        """Causal linear attention in chunks of CHUNK positions: inside a chunk the masked (C x C) products, across
        chunks running sums of phi(k) v^T. Exactly the prefix-sum result, with O(S C + S m d / C) memory instead
        of a (S x m x d) tensor per head, which costs far more than the quadratic form at MT lengths."""
        bsz, heads, length, m = phi_q.shape
        chunk = min(self.CHUNK, length)
        pad = (-length) % chunk
        if pad > 0:  # padded positions have phi = 0 and v = 0: they add nothing and are dropped at the end
            phi_q, phi_k = F.pad(phi_q, (0, 0, 0, pad)), F.pad(phi_k, (0, 0, 0, pad))
            v = F.pad(v, (0, 0, 0, pad))
        n = (length + pad) // chunk
        pq, pk = phi_q.view(bsz, heads, n, chunk, m), phi_k.view(bsz, heads, n, chunk, m)
        vc = v.view(bsz, heads, n, chunk, -1)
        kv = torch.einsum("bhncm,bhncd->bhnmd", pk, vc)  # per chunk
        kv_before = kv.cumsum(dim=2) - kv  # sums over the chunks before each one
        z = pk.sum(dim=3)
        z_before = z.cumsum(dim=2) - z
        local = torch.matmul(pq, pk.transpose(-1, -2)).tril_()  # within a chunk: keys up to the query
        num = torch.matmul(local, vc) + torch.matmul(pq, kv_before)
        den = local.sum(-1) + torch.matmul(pq, z_before.unsqueeze(-1)).squeeze(-1)
        out = self._normalize(num, den).view(bsz, heads, n * chunk, -1)
        return out[:, :, :length]

    def masked_scores(self, q: Tensor, k: Tensor, pos: Optional[Positions], key_padding_mask: Optional[Tensor],
                      attn_mask: Optional[Tensor]) -> Tensor:
        raise NotImplementedError("performer never forms attention scores (before_softmax is not available)")

    def decode_step(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                    key_padding_mask: Optional[Tensor], incremental_state: IncrementalState
                    ) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """Decoder self-attention, step by step: running prefix sums instead of a key/value cache."""
        assert key is not None and value is not None
        buffer = self._get_input_buffer(incremental_state)
        q, k, v = self.project_query(query), self.project_key(key), self.project_value(value)
        phi_q, phi_k = self._features(q, True), self._key_features(k, key_padding_mask)
        kv = torch.einsum("bhsm,bhsd->bhsmd", phi_k, v.float()).cumsum(dim=2)
        z = phi_k.cumsum(dim=2)
        kv_state, k_state = buffer.get("kv_state"), buffer.get("k_state")
        if kv_state is not None and k_state is not None:
            kv = kv + kv_state.unsqueeze(2)
            z = z + k_state.unsqueeze(2)
        new_buffer: Cache = {"kv_state": kv[:, :, -1], "k_state": z[:, :, -1]}
        self._set_input_buffer(incremental_state, new_buffer)
        out = self._normalize(torch.einsum("bhtm,bhtmd->bhtd", phi_q, kv), (phi_q * z).sum(-1)).to(v.dtype)
        tgt_len, bsz = query.size(0), query.size(1)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, out.size(1) * out.size(3)))
        return out, None



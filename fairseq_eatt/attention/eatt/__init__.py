"""E-ATT: attention with energy-friendly operations (Wan et al., 2022), in one place.

- Inputs of the query and key paths are binarized, f(x) = 1[x > tau] (Eq. 4), with the Gaussian surrogate
  gradient of Eq. 5 (see :mod:`fairseq_eatt.attention.functional`).
- Q and K are *selections*: the sum of the rows of W_Q (W_K) picked by the binary input (Eqs. 6-9). Numerically
  that is ``binary(X) @ W_Q``; on hardware it needs additions only.
- Scores are negative L1 distances, -||Q_i - K_j||_1 / scale (Eq. 10), again additions only.
- V and the output projection are ordinary linear layers.

The paper's ablations (Table 5) live here too: ``eatt_select`` (binarized selection, dot-product scores) and
``eatt_l1`` (linear Q/K projections, L1 scores).

Every option is declared once, in :data:`OPTIONS`, with its value under each recipe (``--eatt-recipe``):
``paper`` follows the paper's text (post-norm blocks, as fairseq's transformer); ``paper-prenorm`` is the same
attention in pre-norm blocks; ``authors`` follows the authors' released code (github.com/NLP2CT/E-Att): pre-norm
blocks, threshold 0 on the layer-normed input, Q/K of model dim / heads in total, score scale
sqrt(per-head Q/K dim) in self-attention and sqrt(model dim / heads) in cross-attention, their initialization.
In a pre-norm block fairseq's own layer norm before the attention is exactly the authors' module-owned norm (it
feeds Q, K and V in self-attention, the query side only in cross-attention); ``--eatt-module-norm`` adds that norm
inside the module for post-norm blocks. Any option given on the command line overrides the recipe. The recipe
sets the blocks of the whole model, whatever attention each position uses, so that vanilla and E-ATT models built
with one recipe are compared in the same blocks.

Where each piece lives: the options and recipes in :mod:`.options`, the declared costs in :mod:`.cost`, the
modules in :mod:`.module`; the binarization with its surrogate gradient and the pairwise L1 distance in
:mod:`fairseq_eatt.attention.functional`, their compiled kernels behind :mod:`fairseq_eatt.attention.backends`.
"""
from ..functional import binarize, binarize_learned, pairwise_l1
from .cost import EattCost, EattL1Cost, EattSelectCost, l1_scores, norm_ops, resolved_qk_dim, selection_ops, shares_bits
from .module import EattAttention, EattL1Attention, EattSelectAttention
from .options import *  # noqa: F401,F403
from .options import __all__ as _option_names

__all__ = ["EattAttention", "EattSelectAttention", "EattL1Attention", "EattCost", "EattSelectCost", "EattL1Cost",
           "binarize", "binarize_learned", "pairwise_l1", "selection_ops", "l1_scores", "norm_ops", "shares_bits",
           "resolved_qk_dim", *_option_names]

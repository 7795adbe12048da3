"""Shared machinery of variants that learn something per position and so have a maximum length
(synthesizers, Super attention, Linformer).

The maximum length comes from ``--attention-max-length`` (alias ``--synth-max-length``) or, by default, from the
model's ``--max-source-positions`` / ``--max-target-positions`` for the side each axis belongs to. Positions are
counted over real tokens (:class:`~fairseq_eatt.attention.base.Positions`), so left and right padding give the same
result. A longer batch raises a clear error naming the flag; the model also reports the limit to fairseq
(``max_positions``), which then filters long training pairs and stops generation in time.
"""
from typing import List, Optional

from .base import AttentionBase, Positions
from .options import Option, positive
from .registry import DECODER_CROSS, DECODER_SELF, Capabilities, arg_or_default

MAX_LENGTH = Option("max_length", "--attention-max-length", None,
                    "maximum sequence length of variants that learn per-position weights (synthesizers, super, "
                    "linformer); default: --max-source-positions for encoder self-attention and the key side of "
                    "cross-attention, --max-target-positions for the decoder side", type=int, metavar="N",
                    aliases=("--synth-max-length",), constructor=False, check=positive)


class FixedLengthAttention(AttentionBase):
    capabilities = Capabilities(fixed_max_length=True)
    needs_positions = True
    options = (MAX_LENGTH,)

    def __init__(self, embed_dim: int, num_heads: int, *, max_query_length: int, max_key_length: int,
                 max_length_flag: str = "--attention-max-length", **kwargs):
        super().__init__(embed_dim, num_heads, **kwargs)
        for name, value in (("max_query_length", max_query_length), ("max_key_length", max_key_length)):
            if int(value) <= 0:
                raise ValueError(f"{max_length_flag} must be a positive length, got {value} ({name})")
        self.max_query_length = int(max_query_length)
        self.max_key_length = int(max_key_length)
        self.max_length_flag = max_length_flag
        self.limits_query, self.limits_key = "query" in self.limited, "key" in self.limited

    @classmethod
    def kwargs_from_args(cls, args, position: str) -> dict:
        return {**super().kwargs_from_args(args, position), **cls.max_lengths(args, position)}

    @staticmethod
    def max_lengths(args, position: str) -> dict:
        explicit = MAX_LENGTH.from_args(args)
        src = arg_or_default(args, "max_source_positions", 1024)
        tgt = arg_or_default(args, "max_target_positions", 1024)
        if explicit is not None:
            return dict(max_query_length=explicit, max_key_length=explicit, max_length_flag=MAX_LENGTH.flag)
        if position == DECODER_SELF:
            return dict(max_query_length=tgt, max_key_length=tgt, max_length_flag="--max-target-positions")
        if position == DECODER_CROSS:
            return dict(max_query_length=tgt, max_key_length=src,
                        max_length_flag="--max-target-positions / --max-source-positions")
        return dict(max_query_length=src, max_key_length=src, max_length_flag="--max-source-positions")

    limited = ("query", "key")  # the axes whose length the learned per-position weights fix

    def _check_lengths(self, pos: Optional[Positions]) -> Positions:
        """``pos``, after checking that its lengths fit the learned per-position weights."""
        assert pos is not None, "fixed-length attention needs positions"
        over: List[str] = []
        query_bound = pos.query_len_bound
        if self.limits_query and query_bound < 0:  # a decoding step: its positions are still on the device
            query_bound = int(pos.query.max()) + 1
        if self.limits_query and query_bound > self.max_query_length:
            over.append(f"{query_bound} query positions (at most {self.max_query_length})")
        if self.limits_key and pos.key_len_bound > self.max_key_length:
            over.append(f"{pos.key_len_bound} key positions (at most {self.max_key_length})")
        if len(over) > 0:
            raise ValueError(
                f"{self.variant_name}: a batch has {' and '.join(over)}, more than its learned per-position weights "
                f"were built for (set by {self.max_length_flag}); raise it, or filter long sentences "
                f"(--max-source-positions / --max-target-positions with --skip-invalid-size-inputs-valid-test)"
            )
        return pos

"""Which attention variant each position uses: the per-position flags, the variants' own flags, their defaults
and their checks. Every name comes from the attention registry, so a new variant needs no line here."""
from ..attention import (
    DECODER_CROSS,
    DECODER_SELF,
    ENCODER_SELF,
    POSITION_ATTRS,
    POSITION_FLAGS,
    AttentionSpecError,
    available_attentions,
    check_position,
    get_attention_class,
)
from ..criterions.label_smoothed_cross_entropy_with_aux import NAME as AUX_CRITERION

DEFAULT_ATTENTION = "eatt"
WHERE = {
    ENCODER_SELF: "encoder self-attention",
    DECODER_SELF: "decoder self-attention (must support causal masking)",
    DECODER_CROSS: "decoder cross-attention (encoder-decoder)",
}


def add_position_args(parser):
    names = available_attentions()
    for position, flag in POSITION_FLAGS.items():
        parser.add_argument(
            flag, choices=names, metavar="VARIANT",
            help=f"attention variant for {WHERE[position]} (default: {DEFAULT_ATTENTION}); "
                 f"choices: {', '.join(names)}",
        )


def add_variant_args(parser):
    flags = set()  # each flag once, though several variants share options
    for name in available_attentions():
        get_attention_class(name).add_args(parser, flags)


def attention_defaults(args):
    """Defaults of the position flags (fairseq leaves unset model flags absent, see argument_default); each
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


def check_positions(args):
    """Refuse unknown variants, variants in a position they cannot serve, and auxiliary losses no criterion adds."""
    for position, attr in POSITION_ATTRS.items():
        cls = check_position(getattr(args, attr), position)
        criterion = getattr(args, "criterion", None)
        if criterion not in (None, AUX_CRITERION) and cls.has_auxiliary_loss(args):
            raise AttentionSpecError(
                f"{POSITION_FLAGS[position]} {cls.variant_name}: its auxiliary loss needs --criterion "
                f"{AUX_CRITERION} (--criterion {criterion} would drop it)"
            )


def check_variant_options(args):
    """Refuse fairseq's --cross-self-attention where the decoder self-attention cannot do it, and bad values of
    the options each chosen variant reads (e.g. E-ATT's thresholds)."""
    if getattr(args, "cross_self_attention", False):
        name = getattr(args, POSITION_ATTRS[DECODER_SELF]) or DEFAULT_ATTENTION
        caps = get_attention_class(name).capabilities
        if not caps.cross_self_attention:
            raise AttentionSpecError(f"--cross-self-attention with --decoder-self-attention {name}: it "
                                     f"{caps.cross_self_why_not}; use another decoder self-attention variant")
    try:
        for position, attr in POSITION_ATTRS.items():
            get_attention_class(getattr(args, attr)).kwargs_from_args(args, position)
    except ValueError as err:
        raise AttentionSpecError(str(err)) from None

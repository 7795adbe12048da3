"""Each variant's options are declared once (fairseq_eatt/attention/options.py): the flags, their help and
defaults, the values read from parsed flags, the constructors' defaults and validation, and the energy formulas'
defaults all come from that declaration."""
import argparse
import contextlib
import inspect
import io

import pytest
from fairseq import options as fairseq_options

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import DECODER_CROSS, ENCODER_SELF, available_attentions, get_attention_class
from fairseq_eatt.attention.options import Option

from .helpers import PLUGIN_DIR

DECLARING = [n for n in available_attentions() if get_attention_class(n).options]


def help_text(data_dir) -> str:
    parser = fairseq_options.get_training_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        fairseq_options.parse_args_and_arch(parser, input_args=[str(data_dir), "--user-dir", PLUGIN_DIR,
                                                                "--arch", "transformer_eatt", "--help"])
    return " ".join(out.getvalue().split())


def test_variants_with_options_are_found():
    assert {"local", "strided", "block_sparse", "performer", "linformer", "adaptive_span", "eatt", "eatt_l1",
            "synth_dense"} <= set(DECLARING)


def test_every_declared_flag_is_in_the_help_once_with_its_default(dict_dir):
    text = help_text(dict_dir)
    for name in DECLARING:
        for option in get_attention_class(name).options:
            assert text.count(option.flag + " ") >= 1, (name, option.flag)
            if option.default is not None and not option.action and type(option) is Option:
                assert f"(default: {option.default})" in option.help_text()


@pytest.mark.parametrize("name", DECLARING)
def test_unset_flags_give_the_declared_defaults_and_the_constructor_agrees(name):
    cls = get_attention_class(name)
    args = argparse.Namespace(eatt_recipe="paper")
    position = ENCODER_SELF if ENCODER_SELF in cls.capabilities.allowed_positions() else DECODER_CROSS
    from_flags = cls.kwargs_from_args(args, position)
    signature = {}
    for owner in cls.__mro__:  # keyword defaults of every constructor along the way
        if "__init__" in owner.__dict__:
            for p in inspect.signature(owner.__init__).parameters.values():
                if p.default is not inspect.Parameter.empty:
                    signature.setdefault(p.name, p.default)
    for option in cls.options:
        if not option.constructor:
            continue
        assert from_flags[option.key] == option.default or option.key == "threshold", (name, option.key)
        if option.key in signature:
            assert signature[option.key] == option.default, (name, option.key)


@pytest.mark.parametrize("name", DECLARING)
def test_op_counts_default_to_the_declared_values(name):
    cls = get_attention_class(name)
    assert cls.cost.declared(), name
    defaults = {o.key: o.default for o in cls.options if o.constructor and o.default is not None}
    for convention in ("paper", "complete"):
        assert cls.cost.op_counts(12, 12, 32, 4, convention) == cls.cost.op_counts(12, 12, 32, 4, convention, **defaults)


@pytest.mark.parametrize("name,option_key,bad,message", [
    ("local", "window", -1, "--attention-window must be an integer >= 0"),
    ("strided", "stride", 0, "--attention-stride must be a positive integer"),
    ("block_sparse", "neighbors", -2, "--block-sparse-neighbors must be an integer >= 0"),
    ("performer", "features", 0, "--performer-features must be a positive integer"),
    ("adaptive_span", "init_ratio", 1.5, "--adaptive-span-init must be in [0, 1]"),
    ("adaptive_span", "penalty", float("nan"), "--adaptive-span-penalty must be >= 0"),
    ("eatt", "init", "kaiming", "--eatt-init must be one of xavier, authors"),
    ("eatt", "learn_threshold", "maybe", "--eatt-learn-threshold must be true or false"),
])
def test_constructors_validate_with_the_declared_check(name, option_key, bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_attention_class(name)(16, 2, self_attention=True, **{option_key: bad})


@pytest.mark.parametrize("name,position", [("super", ENCODER_SELF), ("linformer", ENCODER_SELF),
                                           ("linformer", DECODER_CROSS), ("synth_dense", ENCODER_SELF),
                                           ("synth_random", DECODER_CROSS)])
def test_variants_with_a_maximum_length_refuse_longer_batches_naming_the_flag(name, position):
    import torch

    from fairseq_eatt.attention import build_attention

    module = build_attention(name, 16, 2, position, args=argparse.Namespace(attention_max_length=6)).eval()
    x = torch.randn(8, 2, 16)
    with pytest.raises(ValueError, match=rf"{name}: a batch has 8 (query|key) positions \(at most 6\).*"
                                         r"--attention-max-length"):
        module(x, x, x)
    module(x[:6], x[:6], x[:6])  # within the limit


def test_the_readmes_example_variant_works_end_to_end(tmp_path):
    """The README's "Adding an attention variant" example, run as written: registered, flags in the parser,
    built by the factory, padding-proof and incremental = full pass, declared = executed operations."""
    import importlib.util
    import re
    import sys

    import torch

    from fairseq_eatt.attention import registry
    from fairseq_eatt.energy.measure import measure
    from fairseq_eatt.attention.counts import projection

    from .helpers import REPO_ROOT

    readme = open(f"{REPO_ROOT}/README.md", encoding="utf-8").read()
    section = readme.split("### Adding an attention variant", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # as a module file of its own, exactly as printed: TorchScript compiles from source
    path = tmp_path / "readme_band_example.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("readme_band_example", str(path))
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # inspect (and so TorchScript) finds the source through sys.modules
    spec.loader.exec_module(example)
    try:
        from fairseq_eatt.attention import build_attention

        module = build_attention("band", 16, 2, "decoder_self", window=1).eval()
        assert module.window == 1 and "band" in available_attentions()
        x = torch.randn(6, 1, 16)
        causal = torch.triu(torch.full((6, 6), float("-inf")), 1)
        full, weights = module(x, x, x, attn_mask=causal)
        assert float(weights.detach()[0, 5, :4].abs().sum()) == 0.0  # keys more than 1 position away get nothing
        state, steps = {}, []
        for t in range(6):
            out, _ = module(x[t:t + 1], x[t:t + 1], x[t:t + 1], incremental_state=state)
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps), full, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.jit.script(module)(x, x, x, attn_mask=causal)[0], full)  # scriptable
        encoder = build_attention("band", 16, 2, "encoder_self").eval()
        _, measured = measure(encoder, x, x, x, need_weights=False)
        declared = encoder.cost.op_counts(6, 6, 16, 2, "complete", self_attention=True)["attention"] + projection(6, 16, 16)
        assert measured.mul == declared.mul and measured.add == pytest.approx(declared.add, rel=1e-9)
        with pytest.raises(ValueError, match="--band-window must be a positive integer"):
            build_attention("band", 16, 2, "encoder_self", window=0)
    finally:
        registry._REGISTRY.pop("band", None)
        sys.modules.pop("readme_band_example", None)


def _bad_value(option: Option) -> str:
    from fairseq_eatt.attention import options as O

    return {O.positive: "0", O.non_negative: "-1", O.fraction: "1.5", O.non_negative_float: "-2",
            O.parse_bool: "maybe"}.get(option.check, "not-a-value")


CHECKED = sorted({(o.flag, _bad_value(o)) for n in DECLARING for o in get_attention_class(n).options
                  if (o.check or o.choices) and not o.action})


@pytest.mark.parametrize("flag,bad", CHECKED)
def test_every_declared_option_refuses_a_bad_value_on_the_command_line(dict_dir, flag, bad):
    from .helpers import parse_train_args

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parse_train_args(dict_dir, "--arch", "transformer_eatt_tiny", flag, bad)
    text = err.getvalue()
    assert f"argument {flag}" in text and ("must be" in text or "invalid choice" in text), text[-300:]

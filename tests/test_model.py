"""fairseq glue: flags, architectures, model building, errors and beam search with incremental state."""
import argparse
import contextlib
import io

import pytest
import torch
from fairseq import options, tasks
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import AttentionSpecError, available_attentions, register_attention
from fairseq_eatt.attention import registry as attention_registry
from fairseq_eatt.attention.eatt import EattAttention
from fairseq_eatt.attention.vanilla import VanillaAttention, VanillaCost
from fairseq_eatt.models.transformer_eatt import decode_metadata, encode_metadata

from .helpers import PLUGIN_DIR, write_dicts


def parse(data_dir, *extra):
    parser = options.get_training_parser()
    argv = [str(data_dir), "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de"] + list(extra)
    return options.parse_args_and_arch(parser, input_args=argv)


def build(data_dir, *extra):
    args = parse(data_dir, *extra)
    task = tasks.setup_task(args)
    return task, task.build_model(args), args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicts")
    write_dicts(d, vocab_size=40)
    return d


def attention_types(model):
    enc = model.encoder.layers[0].self_attn
    dec = model.decoder.layers[0]
    return type(enc), type(dec.self_attn), type(dec.encoder_attn)


def test_transformer_eatt_is_the_papers_base_with_eatt_everywhere(data_dir):
    _, model, args = build(data_dir, "--arch", "transformer_eatt")
    assert (args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.encoder_attention_heads) == (512, 2048, 8)
    assert (args.encoder_layers, args.decoder_layers) == (6, 6)
    assert attention_types(model) == (EattAttention, EattAttention, EattAttention)
    assert model.encoder.layers[0].self_attn.threshold == 1.0


def test_small_preset_and_per_position_flags(data_dir):
    _, model, args = build(
        data_dir, "--arch", "transformer_eatt_small", "--encoder-self-attention", "vanilla",
        "--decoder-self-attention", "vanilla", "--decoder-cross-attention", "eatt", "--eatt-threshold", "0.5",
    )
    assert (args.encoder_embed_dim, args.encoder_layers, args.decoder_layers) == (256, 3, 3)
    assert attention_types(model) == (VanillaAttention, VanillaAttention, EattAttention)
    assert model.decoder.layers[0].encoder_attn.threshold == 0.5
    assert model.decoder.layers[0].encoder_attn.encoder_decoder_attention


def test_public_code_options_reach_the_modules(data_dir):
    _, model, _ = build(
        data_dir, "--arch", "transformer_eatt_tiny", "--eatt-threshold", "0", "--eatt-qk-dim", "32",
        "--eatt-input-norm", "learnable", "--eatt-score-scale", "qk-head-dim", "--eatt-cross-score-scale", "head-dim",
    )
    enc = model.encoder.layers[0].self_attn
    cross = model.decoder.layers[0].encoder_attn
    assert enc.threshold == 0.0 and enc.qk_dim == 32 and enc.input_norm == "learnable"
    assert enc.score_divisor == pytest.approx(4.0)  # sqrt(32 / 2 heads)
    assert cross.score_divisor == pytest.approx(32**0.5)  # sqrt(64 / 2 heads)


def help_text():
    parser = options.get_training_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        options.parse_args_and_arch(
            parser, input_args=["x", "--user-dir", PLUGIN_DIR, "--arch", "transformer_eatt", "--help"]
        )
    return out.getvalue()


def test_help_lists_registered_variants_and_new_ones_appear():
    text = help_text()
    for flag in ("--encoder-self-attention", "--decoder-self-attention", "--decoder-cross-attention",
                 "--eatt-threshold", "--eatt-qk-dim", "--eatt-score-scale", "--eatt-input-norm"):
        assert flag in text
    assert "choices: " + ", ".join(available_attentions()) in " ".join(text.split())

    @register_attention("test_only_variant", cost=VanillaCost)
    class TestOnly(VanillaAttention):
        pass

    try:
        assert "test_only_variant" in help_text()
    finally:
        del attention_registry._REGISTRY["test_only_variant"]


def parse_error(data_dir, *extra):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parse(data_dir, "--arch", "transformer_eatt_tiny", *extra)
    return err.getvalue()


def test_unknown_variant_is_a_clear_command_line_error(data_dir):
    msg = parse_error(data_dir, "--decoder-cross-attention", "dot")
    assert "--decoder-cross-attention" in msg and "invalid choice: 'dot'" in msg and "eatt" in msg


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "one"])
def test_invalid_threshold_is_a_clear_command_line_error(data_dir, bad):
    msg = parse_error(data_dir, f"--eatt-threshold={bad}")
    assert "--eatt-threshold" in msg and "finite number" in msg


def test_programmatic_bad_values_are_refused_at_build_time(data_dir):
    task, _, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    bad = argparse.Namespace(**vars(args))
    bad.encoder_self_attention = "nope"
    with pytest.raises(AttentionSpecError, match="--encoder-self-attention"):
        task.build_model(bad)
    bad = argparse.Namespace(**vars(args))
    bad.eatt_threshold = float("nan")
    with pytest.raises(AttentionSpecError, match="--eatt-threshold"):
        task.build_model(bad)


def test_variant_refused_in_a_position_it_cannot_serve(data_dir):
    from fairseq_eatt.attention import Capabilities

    @register_attention("test_non_causal", cost=VanillaCost)
    class NonCausal(VanillaAttention):
        capabilities = Capabilities(causal=False)

    try:
        task, _, args = build(data_dir, "--arch", "transformer_eatt_tiny")
        args.decoder_self_attention = "test_non_causal"
        with pytest.raises(AttentionSpecError, match="--decoder-self-attention test_non_causal.*cannot be used"):
            task.build_model(args)
    finally:
        del attention_registry._REGISTRY["test_non_causal"]


@pytest.mark.parametrize("variants", [("eatt", "eatt", "eatt"), ("vanilla", "vanilla", "eatt"),
                                      ("eatt", "vanilla", "vanilla")])
def test_beam_search_same_with_and_without_incremental_state(data_dir, variants):
    enc, dec, cross = variants
    torch.manual_seed(0)
    task, model, _ = build(
        data_dir, "--arch", "transformer_eatt_tiny", "--encoder-self-attention", enc,
        "--decoder-self-attention", dec, "--decoder-cross-attention", cross, "--eatt-threshold", "0.0",
    )
    with torch.no_grad():  # random weights with a larger spread so that hypotheses differ between beams
        for p in model.parameters():
            p.mul_(3.0)
    model.double().eval()  # float64: float32 rounding could break near-ties between beams differently
    src_dict = task.source_dictionary
    torch.manual_seed(1)
    src_tokens = torch.randint(4, len(src_dict), (3, 7))
    src_tokens[0, :2] = src_dict.pad()  # fairseq left-pads sources
    src_tokens[:, -1] = src_dict.eos()
    sample = {"net_input": {"src_tokens": src_tokens, "src_lengths": (src_tokens != src_dict.pad()).sum(1)}}

    def search(incremental: bool):
        gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=12)
        gen.model.has_incremental = incremental  # False: the decoder recomputes the whole prefix at every step
        return gen.forward(sample)

    with torch.no_grad():
        fast, slow = search(True), search(False)
    for hyps_fast, hyps_slow in zip(fast, slow):
        assert len(hyps_fast) == len(hyps_slow) == 4
        for a, b in zip(hyps_fast, hyps_slow):
            assert a["tokens"].tolist() == b["tokens"].tolist()
            assert a["score"].item() == pytest.approx(b["score"].item(), abs=1e-4)


# ---- checkpoints carry the plugin's format and the attention settings -------------------------------------------

def test_checkpoint_with_other_attention_settings_is_refused_before_loading(data_dir):
    from fairseq_eatt.models.transformer_eatt import CheckpointMismatchError

    _, eatt, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
    state = eatt.state_dict()
    assert decode_metadata(state["_extra_state"])["attention"]["--decoder-cross-attention"]["variant"] == "eatt"
    # eatt_select has the very same parameter names: without the check this would load silently
    _, select, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-self-attention", "eatt_select")
    before = [p.clone() for p in select.parameters()]
    with pytest.raises(CheckpointMismatchError, match="--encoder-self-attention: checkpoint eatt, model eatt_select"):
        select.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(before, select.parameters()))  # nothing was loaded
    _, other_tau, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--eatt-threshold", "0.5")
    with pytest.raises(CheckpointMismatchError, match="threshold: checkpoint 1.0, model 0.5"):
        other_tau.load_state_dict(state, strict=True)
    _, same, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
    same.load_state_dict(state, strict=True)


def test_checkpoint_of_another_plugin_format_is_refused_and_old_ones_load(data_dir, caplog):
    from fairseq_eatt.models.transformer_eatt import CHECKPOINT_FORMAT, CheckpointMismatchError

    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
    state = model.state_dict()
    future = dict(state, _extra_state=encode_metadata(dict(decode_metadata(state["_extra_state"]),
                                                            format=CHECKPOINT_FORMAT + 1, version="9.9")))
    with pytest.raises(CheckpointMismatchError, match="fairseq_eatt 9.9 .*use fairseq_eatt 9.9 for this checkpoint"):
        model.load_state_dict(future, strict=True)
    old = {k: v for k, v in state.items() if k != "_extra_state"}  # saved before the metadata existed
    with caplog.at_level("WARNING"):
        model.load_state_dict(old, strict=True)
    assert "predates fairseq_eatt's checkpoint metadata" in caplog.text

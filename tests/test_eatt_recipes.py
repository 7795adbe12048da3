"""E-ATT's recipes (--eatt-recipe paper|paper-prenorm|authors) and its levers, each as a flag of its own: what each
computes.

Decoding equivalence, padding and the other properties of every option are in test_properties.py (its CONFIGS);
declared = executed operation counts in test_energy_measured.py.
"""
import argparse
import contextlib
import io
import math

import pytest
import torch
from fairseq import options, tasks

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, AttentionSpecError
from fairseq_eatt.attention.eatt import OPTIONS, EattAttention, parse_thresholds
from fairseq_eatt.attention.functional import binarize
from fairseq_eatt.models.transformer_eatt import check_checkpoint_metadata, checkpoint_metadata

from .helpers import PLUGIN_DIR, parse_train_args

E, H = 16, 4


@pytest.fixture
def data_dir(dict_dir):
    return dict_dir


def parse(data_dir, *extra):
    return parse_train_args(data_dir, "--arch", "transformer_eatt_tiny", *extra)


def build_model(data_dir, *extra):
    args = parse(data_dir, *extra)
    return tasks.setup_task(args).build_model(args), args


def modules(model):
    enc, dec = model.encoder.layers[0], model.decoder.layers[0]
    return enc.self_attn, dec.self_attn, dec.encoder_attn


# ---- recipes -----------------------------------------------------------------------------------------------------

def test_the_default_is_the_papers_attention_in_pre_norm_blocks(data_dir):
    """The E-ATT study (results/study) measured the paper's attention best in pre-norm blocks: users get it."""
    model, args = build_model(data_dir)
    assert args.eatt_recipe == "paper-prenorm"
    assert model.encoder.layers[0].normalize_before and model.decoder.layers[0].normalize_before
    assert all(m.threshold == 1.0 and m.module_norm_kind == "none" for m in modules(model))


L, D, HEADS = 22, 512, 8  # the paper's Appendix A example: 22 tokens, d = 512, 8 heads


def appendix_a(n: int, d: int, qk: int):
    """(mul, add) written out from the paper's Appendix A for n tokens, with Q/K ``qk`` wide (the paper: qk = d).
    Alignment: selection adds n*qk per side (Eq. 8), one addition per L1 term (Eq. 10), no multiplication.
    Attention adds the V projection (n d^2 of each) and the weighted sum of values (n^2 d of each)."""
    alignment_add = 2 * n * qk + n * n * qk
    return {"alignment": (0, alignment_add),
            "attention": (n * d * d + n * n * d, n * d * d + alignment_add + n * n * d)}


def complete_alignment(n: int, d: int, qk: int, heads: int, self_attention: bool):
    """(mul, add, cmp) of the complete convention: half the rows of W_Q / W_K added per token without a measured
    ratio, a subtraction and an accumulation per L1 term, one scaling per score, one comparison per binarized
    input (self-attention binarizes its one input once)."""
    add = d * qk * (0.5 * n + 0.5 * n) + 2 * n * n * qk
    return n * n * heads, add, d * (n if self_attention else 2 * n)


def test_appendix_a_written_out_gives_the_papers_totals():
    """The formulas above at qk = d are the paper's: alignment add 2ld + l^2 d, attention add ld^2 + 2ld + 2l^2 d,
    mul ld^2 + l^2 d (numbers computed by hand)."""
    expected = appendix_a(L, D, D)
    assert expected["alignment"] == (0, 270336)
    assert expected["attention"] == (6014976, 6285312)


@pytest.mark.parametrize("recipe,qk", [("paper-prenorm", D), ("paper", D), ("authors", D // HEADS)])
def test_the_energy_tables_count_the_attention_of_the_default_recipe(data_dir, recipe, qk):
    """The module counts what the paper's formulas give for its recipe's Q/K width; the energy tables
    (fairseq-eatt-experiment energy) count the paper's options, so they hold for the paper's recipes (the default
    changes the blocks only) and differ for the authors' (Q/K of d/h)."""
    from fairseq_eatt.energy.report import attention_counts

    args = parse(data_dir, "--eatt-recipe", recipe)
    EattAttention.prepare_args(args)
    for position in (ENCODER_SELF, DECODER_SELF, DECODER_CROSS):
        kwargs = EattAttention.kwargs_from_args(args, position)
        self_attention = position != DECODER_CROSS
        paper = EattAttention.cost.op_counts(L, L, D, HEADS, "paper", None, **kwargs, self_attention=self_attention)
        for part, (mul, add) in appendix_a(L, D, qk).items():
            assert (paper[part].mul, paper[part].add, paper[part].cmp) == (mul, add, 0), (recipe, position, part)
        complete = EattAttention.cost.op_counts(L, L, D, HEADS, "complete", None, **kwargs,
                                                self_attention=self_attention)["alignment"]
        assert (complete.mul, complete.add, complete.cmp) == complete_alignment(L, D, qk, HEADS, self_attention)
        table = attention_counts("eatt", L, L, D, HEADS, "paper", self_attention=self_attention)
        assert (table["alignment"].add == appendix_a(L, D, qk)["alignment"][1]) is (qk == D)


def test_paper_recipe_is_the_papers_text(data_dir):
    model, args = build_model(data_dir, "--eatt-recipe", "paper")
    enc, dec, cross = modules(model)
    assert args.eatt_recipe == "paper"
    assert not args.encoder_normalize_before and not args.decoder_normalize_before
    assert not model.encoder.layers[0].normalize_before
    for m in (enc, dec, cross):
        assert m.threshold == 1.0 and m.qk_dim == 64 and m.init == "xavier"
        assert m.score_divisor == pytest.approx(math.sqrt(64 / 2))
        assert float(m.q_select.bias.detach().abs().sum()) == 0.0  # fairseq-style zero biases


def test_authors_recipe_is_the_released_code(data_dir):
    """d = 64, h = 2: Q/K are d/h = 32 wide, pre-norm blocks, tau = 0, scale sqrt(16) in self-attention and
    sqrt(d/h) = sqrt(32) in cross-attention, selection biases uniform in +-sqrt(3h/d)."""
    model, args = build_model(data_dir, "--eatt-recipe", "authors")
    enc, dec, cross = modules(model)
    assert args.encoder_normalize_before and args.decoder_normalize_before
    assert model.encoder.layers[0].normalize_before and model.decoder.layers[0].normalize_before
    assert model.encoder.layer_norm is not None  # keys of cross-attention binarize a layer-normed encoder output
    for m in (enc, dec, cross):
        assert m.threshold == 0.0 and m.qk_dim == 32 and m.init == "authors"
        bound = math.sqrt(3 * 2 / 64)
        assert 0 < float(m.q_select.bias.detach().abs().max()) <= bound
    assert enc.score_divisor == pytest.approx(4.0) and dec.score_divisor == pytest.approx(4.0)
    assert cross.score_divisor == pytest.approx(math.sqrt(32))
    # Xavier over the fused Q/K matrix in self-attention (fan-out 2 * 32), Q or K alone in cross-attention
    assert float(enc.q_select.weight.detach().abs().max()) <= math.sqrt(6 / (64 + 64))
    assert float(cross.q_select.weight.detach().abs().max()) > math.sqrt(6 / (64 + 64))


def test_paper_prenorm_recipe_is_the_papers_attention_in_pre_norm_blocks(data_dir):
    paper, _ = build_model(data_dir, "--eatt-recipe", "paper")
    model, args = build_model(data_dir, "--eatt-recipe", "paper-prenorm")
    assert args.eatt_recipe == "paper-prenorm"
    assert args.encoder_normalize_before and args.decoder_normalize_before
    assert model.encoder.layers[0].normalize_before and model.decoder.layers[0].normalize_before
    for m, p in zip(modules(model), modules(paper)):
        assert (m.threshold, m.qk_dim, m.init, m.score_divisor) == (p.threshold, p.qk_dim, p.init, p.score_divisor)
        assert m.module_norm_kind == p.module_norm_kind == "none"
    assert checkpoint_metadata(args)["attention"] == checkpoint_metadata(
        parse(data_dir, "--eatt-recipe", "paper"))["attention"]


@pytest.mark.parametrize("recipe,pre_norm", [("paper", False), ("paper-prenorm", True), ("authors", True)])
def test_the_recipe_sets_the_blocks_of_every_model_vanilla_included(data_dir, recipe, pre_norm):
    """Vanilla and E-ATT built with one recipe are compared in the same blocks."""
    model, _ = build_model(data_dir, "--eatt-recipe", recipe, "--encoder-self-attention", "vanilla",
                           "--decoder-self-attention", "vanilla", "--decoder-cross-attention", "vanilla")
    assert model.encoder.layers[0].normalize_before is pre_norm
    assert model.decoder.layers[0].normalize_before is pre_norm


def test_flags_override_the_recipe(data_dir):
    model, args = build_model(data_dir, "--eatt-recipe", "authors", "--eatt-threshold", "0.25",
                              "--eatt-qk-dim", "model-dim", "--eatt-init", "xavier")
    for m in modules(model):
        assert m.threshold == 0.25 and m.qk_dim == 64 and m.init == "xavier"
    assert args.encoder_normalize_before  # still the recipe's pre-norm


def test_every_option_has_one_declaration_with_a_value_per_recipe(data_dir):
    parser = options.get_training_parser()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        options.parse_args_and_arch(parser, input_args=[str(data_dir), "--user-dir", PLUGIN_DIR,
                                                        "--arch", "transformer_eatt", "--help"])
    text = " ".join(out.getvalue().split())
    for option in OPTIONS:
        assert option.flag in text
        assert option.for_recipe("paper") is not None or option.key in ("qk_dim", "cross_score_scale")
    assert "--eatt-recipe" in text and "authors" in text


def test_threshold_per_position(data_dir):
    model, _ = build_model(data_dir, "--eatt-threshold", "0,0.5,-0.25")
    enc, dec, cross = modules(model)
    assert (enc.threshold, dec.threshold, cross.threshold) == (0.0, 0.5, -0.25)
    assert parse_thresholds("2") == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("flags,message", [
    (("--eatt-threshold", "1,2"), "one number or three comma-separated"),
    (("--eatt-threshold", "0,nan,1"), "finite number"),
    (("--eatt-learn-threshold", "maybe"), "true or false"),
    (("--eatt-qk-dim", "wide"), "model-dim, head-dim or a positive integer"),
    (("--eatt-recipe", "mine"), "invalid choice"),
    (("--eatt-module-norm", "batch"), "invalid choice"),
])
def test_bad_option_values_are_clear_command_line_errors(data_dir, flags, message):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parse(data_dir, *flags)
    assert flags[0] in err.getvalue() and message in err.getvalue()


def test_a_qk_dim_that_does_not_split_into_heads_is_refused(data_dir):
    with pytest.raises((AttentionSpecError, ValueError), match="--eatt-qk-dim must be .*multiple of the number of heads"):
        build_model(data_dir, "--eatt-qk-dim", "33")


# ---- checkpoints: recipes travel with them ------------------------------------------------------------------------

def test_arguments_saved_before_recipes_resolve_to_the_paper():
    """Checkpoints saved before recipes existed stored eatt_threshold and no recipe: they must keep computing
    what they were trained for whatever the default recipe becomes."""
    legacy = argparse.Namespace(eatt_threshold=1.0, eatt_qk_dim=None)
    options_ = EattAttention.kwargs_from_args(legacy, ENCODER_SELF)
    assert options_["threshold"] == 1.0 and options_["qk_dim"] is None and options_["init"] == "xavier"


def test_metadata_without_the_new_options_is_accepted_only_with_their_old_values(data_dir):
    _, args = build_model(data_dir)
    stored = checkpoint_metadata(args)
    for setting in stored["attention"].values():
        for key in ("learn_threshold", "module_norm", "learn_temperature", "init"):
            del setting["options"][key]
    check_checkpoint_metadata(stored, args)  # the old values: accepted
    args.eatt_module_norm = "learnable"
    with pytest.raises(Exception, match="module_norm"):
        check_checkpoint_metadata(stored, args)


def test_a_checkpoint_with_another_recipe_is_refused(data_dir):
    _, paper = build_model(data_dir)
    _, authors = build_model(data_dir, "--eatt-recipe", "authors")
    with pytest.raises(Exception, match="threshold"):
        check_checkpoint_metadata(checkpoint_metadata(paper), authors)


# ---- levers -------------------------------------------------------------------------------------------------------

def test_learned_threshold_forward_and_surrogate_gradient():
    x = torch.randn(5, 3, E, dtype=torch.float64, requires_grad=True)
    tau = torch.linspace(-1, 1, E, dtype=torch.float64).requires_grad_()
    bits = binarize(x, tau)
    torch.testing.assert_close(bits, (x > tau).double())
    g = torch.randn_like(bits)
    bits.backward(g)
    # the surrogate's derivative, sqrt(2/pi) exp(-2 (x - tau)^2), written out here (not imported)
    s = math.sqrt(2 / math.pi) * torch.exp(-2 * (x.detach() - tau.detach()) ** 2)
    torch.testing.assert_close(x.grad, g * s)
    torch.testing.assert_close(tau.grad, -(g * s).sum(dim=(0, 1)))


def build(position=ENCODER_SELF, **options):
    torch.manual_seed(0)
    cross = position == DECODER_CROSS
    return EattAttention(E, H, self_attention=not cross, encoder_decoder_attention=cross, **options).eval()


def test_learned_thresholds_are_parameters_that_train():
    self_attn = build(threshold=0.3, learn_threshold=True).train()
    cross = build(DECODER_CROSS, threshold=0.3, learn_threshold=True).train()
    assert self_attn.q_threshold.shape == (E,) and self_attn.k_threshold is None  # one input, one threshold
    assert cross.q_threshold.shape == (E,) and cross.k_threshold.shape == (E,)
    assert torch.all(self_attn.q_threshold == 0.3)
    x = torch.randn(6, 2, E)
    self_attn(x, x, x)[0].square().sum().backward()
    y = torch.randn(4, 2, E)
    cross(y, x, x, static_kv=True)[0].square().sum().backward()
    for tau in (self_attn.q_threshold, cross.q_threshold, cross.k_threshold):
        assert tau.grad is not None and tau.grad.abs().sum() > 0
    # moving one feature's threshold above every input switches that feature off
    with torch.no_grad():
        self_attn.q_threshold[3] = 1e6
    bits = self_attn.binarize(x, "query")
    assert bits[..., 3].sum() == 0


def test_module_norm_feeds_queries_keys_and_values_in_self_attention():
    normed = build(threshold=0.0, module_norm="learnable")
    plain = build(threshold=0.0)
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if not k.startswith("module_norm")})
    with torch.no_grad():
        normed.module_norm.weight.uniform_(0.5, 1.5)
        normed.module_norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(6, 2, E) * 3 + 1
    expected, _ = plain(*(normed.module_norm(x),) * 3)
    torch.testing.assert_close(normed(x, x, x)[0], expected)


def test_module_norm_normalizes_only_the_query_side_in_cross_attention():
    normed = build(DECODER_CROSS, threshold=0.0, module_norm="learnable")
    plain = build(DECODER_CROSS, threshold=0.0)
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if not k.startswith("module_norm")})
    src, tgt = torch.randn(7, 2, E) * 3 + 1, torch.randn(4, 2, E)
    expected, _ = plain(normed.module_norm(tgt), src, src, static_kv=True)
    torch.testing.assert_close(normed(tgt, src, src, static_kv=True)[0], expected)


def test_learned_temperature_multiplies_each_heads_scores():
    m = build(learn_temperature=True)
    x = torch.randn(5, 1, E)
    with torch.no_grad():
        m.log_temperature.copy_(torch.log(torch.tensor([1.0, 2.0, 0.5, 3.0])))
    scores, _ = m(x, x, x, before_softmax=True)
    plain = build()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "log_temperature"})
    base, _ = plain(x, x, x, before_softmax=True)
    torch.testing.assert_close(scores, base * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(1, H, 1, 1))


def test_default_threshold_of_the_module_is_the_papers():
    assert build().threshold == 1.0 and build(DECODER_SELF).threshold == 1.0

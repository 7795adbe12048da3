"""The survey's techniques on any attention variant: encoder token pruning, depth-adaptive decoding (early exit),
binary/ternary weights. Incremental decoding equals the full pass, padding changes nothing, declared operations
equal executed ones, bad values are refused with the flag."""
import math

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import AttentionSpecError, available_attentions, get_attention_class
from fairseq_eatt.energy.decoding import count_generation
from fairseq_eatt.pruning import TokenPruner
from fairseq_eatt.quantization import QuantizedLinear, quantize

from .test_deployment import same_hypotheses, sample_of, spread
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)

AUX = ("--criterion", "label_smoothed_cross_entropy_with_aux")
ENCODER_VARIANTS = [v for v in available_attentions()
                    if "encoder_self" in get_attention_class(v).capabilities.allowed_positions()]
DECODER_VARIANTS = [v for v in available_attentions()
                    if "decoder_self" in get_attention_class(v).capabilities.allowed_positions()]


def searches(model, task, sample, beam=3, max_len_b=8):
    """(incremental, full-prefix) beam search results."""
    out = []
    for incremental in (True, False):
        generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=max_len_b)
        generator.model.has_incremental = incremental  # False: the whole prefix again at every step
        with torch.no_grad():
            out.append(generator.forward(sample))
    return out


def alone_and_batched(task, model, sample):
    """Each sentence of ``sample`` decoded alone and in the batch (left-padded, as fairseq pads sources)."""
    pad = task.source_dictionary.pad()
    batched = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6).forward(sample)
    tokens = sample["net_input"]["src_tokens"]
    for row, hyps in enumerate(batched):
        own = tokens[row][tokens[row] != pad].unsqueeze(0)
        alone = {"net_input": {"src_tokens": own, "src_lengths": torch.tensor([own.size(1)])}}
        single = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6).forward(alone)
        same_hypotheses([hyps], single)


# ---- token pruning ---------------------------------------------------------------------------------------------------

def test_a_keep_ratio_keeps_the_most_attended_tokens_in_their_order():
    pruner = TokenPruner(8, keep_ratio=0.5)
    x = torch.arange(2 * 5 * 8, dtype=torch.float).view(5, 2, 8)  # T x B x C
    padding = torch.tensor([[False] * 5, [True, False, False, False, False]])  # second sentence: 4 tokens
    attention = torch.zeros(2, 5, 5)
    attention[0, :, [4, 1, 3]] = torch.tensor([0.5, 0.3, 0.2])  # received: token 4 > 1 > 3 > others
    attention[1, 1:, [2, 3]] = torch.tensor([0.6, 0.4])
    kept, mask = pruner(x, padding, attention)
    # ceil(0.5 * 5) = 3 and ceil(0.5 * 4) = 2 tokens, in their original order, right-padded
    assert mask.tolist() == [[False, False, False], [False, False, True]]
    torch.testing.assert_close(kept[:, 0], x[[1, 3, 4], 0])
    torch.testing.assert_close(kept[:2, 1], x[[2, 3], 1])
    assert kept[2, 1].abs().sum() == 0


def test_a_threshold_keeps_tokens_within_a_share_of_the_largest_importance():
    pruner = TokenPruner(4, threshold=0.5)
    x = torch.randn(4, 1, 4)
    attention = torch.zeros(1, 4, 4)
    attention[0, :, :] = torch.tensor([0.1, 0.4, 0.2, 0.3])
    kept, mask = pruner(x, torch.zeros(1, 4, dtype=torch.bool), attention)
    assert (~mask).sum() == 3  # 0.4, 0.3 and 0.2 are at least half of 0.4
    torch.testing.assert_close(kept[:, 0], x[[1, 2, 3], 0])
    keep_all = TokenPruner(4, threshold=0.0)(x, torch.zeros(1, 4, dtype=torch.bool), attention)[0]
    torch.testing.assert_close(keep_all, x)


@pytest.mark.parametrize("importance", ["attention", "learned"])
@pytest.mark.parametrize("variant", ENCODER_VARIANTS)
def test_pruning_keeps_incremental_decoding_equal_to_the_full_pass(data_dir, variant, importance):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-self-attention", variant,
                           "--prune-layer", "1", "--prune-keep-ratio", "0.6", "--prune-importance", importance, *AUX)
    spread(model)
    if importance == "learned":  # scores that differ between tokens
        torch.nn.init.normal_(model.encoder.pruner.scorer.weight, std=0.5)
    sample = sample_of(task)
    encoded = model.encoder(**sample["net_input"])
    lengths = sample["net_input"]["src_lengths"]
    kept = (~encoded["encoder_padding_mask"][0]).sum(dim=1)
    assert kept.tolist() == [math.ceil(0.6 * n) for n in lengths.tolist()]  # later layers see only those
    assert encoded["encoder_out"][0].size(0) == int(kept.max())
    fast, slow = searches(model, task, sample)
    same_hypotheses(fast, slow)


@pytest.mark.parametrize("importance", ["attention", "learned"])
def test_pruning_does_not_depend_on_padding(data_dir, importance):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--prune-layer", "1",
                           "--prune-threshold", "0.5", "--prune-importance", importance)
    spread(model)
    if importance == "learned":
        torch.nn.init.normal_(model.encoder.pruner.scorer.weight, std=0.5)
    sample = sample_of(task, bsz=3, length=8)
    sample["net_input"]["src_tokens"][1, :3] = task.source_dictionary.pad()
    alone_and_batched(task, model, sample)
    # right padding: the same kept states as left padding
    left = sample["net_input"]["src_tokens"]
    pad = task.source_dictionary.pad()
    right = torch.stack([torch.cat([r[r != pad], r[r == pad]]) for r in left])
    with torch.no_grad():
        a = model.encoder(left, sample["net_input"]["src_lengths"])
        b = model.encoder(right, sample["net_input"]["src_lengths"])
    torch.testing.assert_close(a["encoder_padding_mask"][0], b["encoder_padding_mask"][0])
    torch.testing.assert_close(a["encoder_out"][0], b["encoder_out"][0])


def test_learned_importance_is_trained_by_the_loss(data_dir):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--prune-layer", "1",
                           "--prune-importance", "learned")
    sample = sample_of(task)
    prev = torch.randint(4, len(task.target_dictionary), (3, 5))
    logits, _ = model(**sample["net_input"], prev_output_tokens=prev)
    logits.sum().backward()
    assert model.encoder.pruner.scorer.weight.grad.abs().sum() > 0


def test_a_pruned_model_scripts(data_dir):
    from .test_deployment import script_and_reload

    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--prune-layer", "1")
    spread(model)
    sample = sample_of(task)
    expected = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6).forward(sample)
    scripted = script_and_reload(SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6))
    with torch.no_grad():
        same_hypotheses(expected, scripted.forward(sample))


@pytest.mark.parametrize("variant", ["vanilla", "eatt"])
def test_pruned_decoding_declares_what_it_executes_at_the_kept_lengths(data_dir, variant):
    torch.manual_seed(0)
    counts = {}
    for prune in ([], ["--prune-layer", "1", "--prune-keep-ratio", "0.5"]):
        task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-layers", "3",
                               "--encoder-self-attention", variant, "--decoder-cross-attention", variant, *prune)
        spread(model)
        sample = sample_of(task, bsz=2, length=8)
        count = count_generation(model, task, [sample], beam=2, max_len_b=3, match_source_len=False)
        for call in count.calls:
            assert call.executed.mul == call.declared.mul, call
            assert call.executed.cmp == call.declared.cmp, call
            assert call.executed.add == pytest.approx(call.declared.add, rel=1e-9), call
        counts[bool(prune)] = count
    cross = lambda c: {call.lk for call in c.calls if call.position == "decoder_cross"}  # noqa: E731
    assert cross(counts[True]) == {4} and cross(counts[False]) == {8}  # ceil(0.5 x 8) source tokens kept
    encoder = lambda c: sorted(call.lk for call in c.calls if call.position == "encoder_self")  # noqa: E731
    assert encoder(counts[True]) == [4, 4, 8] and encoder(counts[False]) == [8, 8, 8]
    assert counts[True].attention("encoder_self").mul < counts[False].attention("encoder_self").mul


@pytest.mark.parametrize("flags, message", [
    (["--prune-layer", "1", "--prune-keep-ratio", "0"], "--prune-keep-ratio must be in (0, 1]"),
    (["--prune-layer", "1", "--prune-keep-ratio", "1.5"], "--prune-keep-ratio must be in (0, 1]"),
    (["--prune-layer", "1", "--prune-keep-ratio", "nan"], "--prune-keep-ratio must be in (0, 1]"),
    (["--prune-layer", "1", "--prune-threshold", "-0.1"], "--prune-threshold must be in [0, 1]"),
    (["--prune-layer", "1", "--prune-threshold", "1.1"], "--prune-threshold must be in [0, 1]"),
    (["--prune-layer", "2"], "--prune-layer must be between 1 and 1"),
    (["--prune-layer", "0"], "--prune-layer must be between 1 and 1"),
    (["--prune-keep-ratio", "0.5"], "needs --prune-layer"),
    (["--prune-layer", "1", "--prune-keep-ratio", "0.5", "--prune-threshold", "0.5"], "not both"),
    (["--prune-layer", "1", "--prune-importance", "random"], "invalid choice"),
    (["--exit-threshold", "1.5"], "--exit-threshold must be in [0, 1]"),
    (["--exit-threshold", "-0.5"], "--exit-threshold must be in [0, 1]"),
    (["--exit-threshold", "nan"], "--exit-threshold must be in [0, 1]"),
    (["--early-exit", "--criterion", "cross_entropy"], "--early-exit trains every decoder layer"),
    (["--exit-threshold", "0.5", "--cross-self-attention"], "--cross-self-attention"),
    (["--weight-bits", "2", "--quantize-modules", "attn,embeddings"], "--quantize-modules"),
])
def test_bad_values_are_refused_with_the_flag(data_dir, flags, message, capsys):
    with pytest.raises((SystemExit, AttentionSpecError)) as err:
        build(data_dir, "--arch", "transformer_eatt_tiny", *flags)
    assert message in str(err.value) + capsys.readouterr().err


# ---- early exit ------------------------------------------------------------------------------------------------------

def exit_model(data_dir, variant="vanilla", threshold=None, layers=3, seed=0, extra=()):
    torch.manual_seed(seed)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--decoder-layers", str(layers),
                           "--decoder-self-attention", variant, "--early-exit", *AUX, *extra)
    spread(model)
    if threshold is not None:
        model.decoder.exit_threshold = threshold
    return task, model


def mixed_threshold(model, task, sample):
    """A threshold at which some target tokens exit after the first layer and others go on."""
    prev = torch.randint(4, len(task.target_dictionary), (sample["net_input"]["src_tokens"].size(0), 6))
    with torch.no_grad():
        _, extra = model(**sample["net_input"], prev_output_tokens=prev)
        first = extra["inner_states"][1]
        confidence = torch.softmax(model.decoder.output_layer(model.decoder.exit_features(first)), -1).amax(-1)
    return float(confidence.median())


def step_depths(model, task, sample, beam, max_len_b):
    """Exit depths of every decoding step of every hypothesis in fairseq's incremental beam search."""
    seen = []
    forward = model.decoder.forward

    def watch(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.extend(out[1]["exit_layer"][0].flatten().tolist())
        return out

    model.decoder.forward = watch
    try:
        with torch.no_grad():
            SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=max_len_b).forward(sample)
    finally:
        del model.decoder.forward
    return seen


@pytest.mark.parametrize("variant", DECODER_VARIANTS)
def test_early_exit_keeps_incremental_decoding_equal_to_the_full_pass(data_dir, variant):
    task, model = exit_model(data_dir, variant)
    sample = sample_of(task)
    model.decoder.exit_threshold = mixed_threshold(model, task, sample)
    fast, slow = searches(model, task, sample, beam=3, max_len_b=10)
    same_hypotheses(fast, slow)
    depths = step_depths(model, task, sample, beam=3, max_len_b=10)
    assert 1 in depths and len(set(depths)) > 1  # tokens left at different layers


def test_a_token_exits_at_its_first_confident_layer_and_skipped_layers_see_its_copied_state(data_dir):
    task, model = exit_model(data_dir)
    sample = sample_of(task)
    threshold = mixed_threshold(model, task, sample)
    prev = torch.randint(4, len(task.target_dictionary), (3, 6))
    model.decoder.exit_threshold = threshold
    with torch.no_grad():
        features, extra = model.decoder(prev, encoder_out=model.encoder(**sample["net_input"]), features_only=True)
        depth = extra["exit_layer"][0]
        states = extra["inner_states"]
        for b in range(3):
            for t in range(6):
                d = int(depth[b, t])
                confidences = [float(torch.softmax(model.decoder.output_layer(
                    model.decoder.exit_features(states[n][t:t + 1, b:b + 1])), -1).max()) for n in (1, 2)]
                assert all(c < threshold for c in confidences[:d - 1])
                if d < 3:
                    assert confidences[d - 1] >= threshold
                    torch.testing.assert_close(states[3][t, b], states[d][t, b])  # its state is copied upward
        torch.testing.assert_close(features, model.decoder.exit_features(states[3]))


def test_when_every_token_exits_the_skipped_layers_fill_their_caches(data_dir):
    """Greedy decoding of one sentence: every step exits early at some layer; later steps that go deeper attend
    to the earlier tokens' keys in layers those tokens skipped."""
    task, model = exit_model(data_dir, layers=4, seed=3)
    sample = sample_of(task, bsz=1)
    model.decoder.exit_threshold = mixed_threshold(model, task, sample)
    fast, slow = searches(model, task, sample, beam=1, max_len_b=12)
    same_hypotheses(fast, slow)
    depth = step_depths(model, task, sample, beam=1, max_len_b=12)  # one hypothesis: one depth per step
    assert min(depth) < 4 and any(depth[i] > min(depth[:i]) for i in range(1, len(depth)))


def test_threshold_one_is_the_model_without_exits(data_dir):
    task, model = exit_model(data_dir, threshold=1.0)
    sample = sample_of(task)
    prev = torch.randint(4, len(task.target_dictionary), (3, 6))
    torch.manual_seed(0)
    _, plain, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--decoder-layers", "3",
                        "--decoder-self-attention", "vanilla")
    spread(plain)
    with torch.no_grad():
        a, extra = model(**sample["net_input"], prev_output_tokens=prev)
        b, _ = plain(**sample["net_input"], prev_output_tokens=prev)
    torch.testing.assert_close(a, b)  # early exit adds no parameter; threshold 1 runs every layer
    assert set(extra["exit_layer"][0].flatten().tolist()) == {3}


def test_training_takes_the_mean_of_every_layers_loss(data_dir):
    from fairseq_eatt.criterions.label_smoothed_cross_entropy_with_aux import (
        LabelSmoothedCrossEntropyWithAuxCriterion)

    task, model = exit_model(data_dir)
    criterion = LabelSmoothedCrossEntropyWithAuxCriterion(task, sentence_avg=False, label_smoothing=0.1)
    sample = sample_of(task)
    prev = torch.randint(4, len(task.target_dictionary), (3, 6))
    target = torch.randint(4, len(task.target_dictionary), (3, 6))
    sample.update(target=target, ntokens=18)
    sample["net_input"]["prev_output_tokens"] = prev
    model.eval()  # no dropout: the same forward pass twice
    loss, _, log = criterion(model, sample)
    _, extra = model(**sample["net_input"])
    layer_losses = [criterion.compute_loss(model, (model.decoder.output_layer(model.decoder.exit_features(s)),
                                                   extra), sample)[0] for s in extra["inner_states"][1:]]
    torch.testing.assert_close(loss, sum(layer_losses) / 3)
    assert "exit1_nll_loss" in log and "exit2_nll_loss" in log
    loss.backward()
    first_layer = model.decoder.layers[0].fc2.weight.grad
    assert first_layer is not None and first_layer.abs().sum() > 0


def test_an_early_exit_model_scripts(data_dir):
    from .test_deployment import script_and_reload

    task, model = exit_model(data_dir)
    sample = sample_of(task)
    model.decoder.exit_threshold = mixed_threshold(model, task, sample)
    expected = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6).forward(sample)
    scripted = script_and_reload(SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=6))
    with torch.no_grad():
        same_hypotheses(expected, scripted.forward(sample))


@pytest.mark.parametrize("variant", ["vanilla", "eatt", "performer"])
def test_early_exit_decoding_declares_what_it_executes_and_saves_layers(data_dir, variant):
    counts = {}
    for exits in (False, True):
        task, model = exit_model(data_dir, variant)
        sample = sample_of(task, bsz=2)
        if exits:
            model.decoder.exit_threshold = mixed_threshold(model, task, sample)
        count = count_generation(model, task, [sample], beam=2, max_len_b=5)
        for call in count.calls:
            assert call.executed.mul == call.declared.mul, call
            assert call.executed.cmp == call.declared.cmp, call
            assert call.executed.add == pytest.approx(call.declared.add, rel=1e-9), call
        counts[exits] = count
    cross = lambda c: sum(1 for call in c.calls if call.position == "decoder_cross")  # noqa: E731
    assert cross(counts[True]) < cross(counts[False])  # layers skipped by every hypothesis of a step


# ---- binary and ternary weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("variant", ["vanilla", "eatt", "efficient"])
def test_quantized_decoding_declares_additions_and_one_scale_per_output(data_dir, variant, bits):
    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--weight-bits", str(bits),
                           "--encoder-self-attention", variant, "--decoder-self-attention", variant,
                           "--decoder-cross-attention", variant)
    spread(model)
    count = count_generation(model, task, [sample_of(task, bsz=2)], beam=2, max_len_b=4)
    for call in count.calls:
        assert call.executed.mul == call.declared.mul, call
        assert call.executed.add == pytest.approx(call.declared.add, rel=1e-9), call
    torch.manual_seed(0)
    _, plain, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-self-attention", variant,
                        "--decoder-self-attention", variant, "--decoder-cross-attention", variant)
    spread(plain)
    float_count = count_generation(plain, task, [sample_of(task, bsz=2)], beam=2, max_len_b=4)
    # the feed-forward layers (2 x 64 x 128 per token and layer) lose their multiplications but one per output
    assert count.other_executed.mul < 0.5 * float_count.other_executed.mul


def test_eatt_with_ternary_weights_keeps_few_multiplications():
    """E-ATT selects Q and K (no multiplications); ternary V and output projections leave one scale per output."""
    from fairseq_eatt.attention.eatt import EattAttention
    from fairseq_eatt.energy.measure import measure

    torch.manual_seed(0)
    module = EattAttention(16, 2, self_attention=True, threshold=0.0).eval()
    x = torch.randn(5, 2, 16)
    _, dense = measure(lambda: module(x, x, x, need_weights=False))
    for name in ("q_select", "k_select", "v_proj", "out_proj"):
        setattr(module, name, QuantizedLinear.from_linear(getattr(module, name), 2))
    module.eval()
    _, ternary = measure(lambda: module(x, x, x, need_weights=False))
    tokens = 5 * 2
    assert ternary.mul == dense.mul - 2 * tokens * 16 * 16 + 2 * tokens * 16
    assert ternary.add < dense.add  # zero weights are skipped


def test_decoding_uses_the_quantized_weights_and_computes_them_once():
    layer = QuantizedLinear(8, 4, bits=2)
    layer.eval()
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, quantize(layer.weight, 2), layer.bias))
    first = layer.deployed_weight()
    assert layer.deployed_weight() is first  # kept while the weights stay
    with torch.no_grad():
        layer.weight.mul_(2.0)
    assert layer.deployed_weight() is not first  # recomputed after a change
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, quantize(layer.weight, 2), layer.bias))


# ---- deployment ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 2])
def test_a_quantized_model_exports_to_onnx_and_translates_like_fairseq(data_dir, tmp_path, bits):
    from .test_deployment import export_tiny, load_runtime

    task, model, out = export_tiny(data_dir, tmp_path, "--weight-bits", str(bits))
    runtime = load_runtime(out).Translator(str(out), threads=1)
    sample = sample_of(task, bsz=2, length=8)
    pad = task.source_dictionary.pad()
    sources = [[int(t) for t in row if t != pad] for row in sample["net_input"]["src_tokens"]]
    with torch.no_grad():
        expected = SequenceGenerator([model], task.target_dictionary, beam_size=2, max_len_b=8).forward(sample)
    got = runtime.translate_ids(sources, beam=2, max_len_b=8)
    eos = task.target_dictionary.eos()
    for fairseq_hyps, onnx_hyps in zip(expected, got):
        assert [h["tokens"][h["tokens"] != eos].tolist() for h in fairseq_hyps] == [t for t, _ in onnx_hyps]


@pytest.mark.parametrize("flags, message", [(["--prune-layer", "1"], "token pruning"),
                                            (["--exit-threshold", "0.5"], "depth-adaptive decoder")])
def test_onnx_export_refuses_what_a_traced_graph_cannot_follow(data_dir, tmp_path, flags, message):
    from fairseq_eatt.deploy.onnx_export import ExportError

    from .test_deployment import export_tiny

    with pytest.raises(ExportError, match=message):
        export_tiny(data_dir, tmp_path, *flags)
    assert not (tmp_path / "export").exists()


# ---- the techniques report --------------------------------------------------------------------------------------------

def fake_point(config, overrides, dev, test, depth=None, kept=None):
    stats = {"seconds": 10.0, "sentences": 1000, "kept_ratio": kept, "mean_exit_depth": depth}
    from fairseq_eatt.experiments.techniques import label_of

    return {"config": config, "overrides": overrides, "label": label_of(overrides),
            "dev": {"bleu": dev, **stats}, "test": {"bleu": test, **stats}}


def test_each_technique_row_takes_a_setting_chosen_on_dev():
    from fairseq_eatt.experiments.techniques import chosen

    points = [fake_point("eatt+exit", {"exit_threshold": 1.0}, 20.0, 21.0, depth=3.0),
              fake_point("eatt+exit", {"exit_threshold": 0.9}, 19.5, 10.0, depth=2.0),  # test BLEU is not looked at
              fake_point("eatt+exit", {"exit_threshold": 0.6}, 18.0, 30.0, depth=1.5),  # more than 1 BLEU lost on dev
              fake_point("eatt+prune", {"prune_keep_ratio": 0.5}, 25.0, 25.0, kept=0.5),
              fake_point("eatt+prune", {"prune_keep_ratio": 0.7}, 20.0, 20.0, kept=0.7),
              fake_point("eatt", {}, 22.0, 23.0), fake_point("eatt", {"prune_layer": 1, "prune_keep_ratio": 0.5},
                                                           24.0, 24.0)]
    assert chosen("eatt+exit", points)["overrides"] == {"exit_threshold": 0.9}
    assert chosen("eatt+prune", points)["overrides"] == {"prune_keep_ratio": 0.7}  # its training ratio
    assert chosen("eatt", points)["overrides"] == {}
    assert chosen("vanilla+exit", points) is None


def test_the_report_renders_rows_curves_and_findings(tmp_path):
    from fairseq_eatt import reports
    from fairseq_eatt.experiments.techniques import plot

    energy = lambda arith, dram, mul: {"params": 1000, "stored_bytes": 4000.0, "mul_per_sentence": mul,  # noqa: E731
                                       "attention_mul_per_sentence": mul / 4, "declared_equals_executed": True,
                                       "energy_uj_per_sentence": {"arithmetic": arith, "dram": dram, "sram": arith}}
    points = [fake_point("vanilla", {}, 25.0, 26.0), fake_point("eatt+ternary", {}, 22.0, 23.5),
              fake_point("eatt", {}, 24.0, 25.0),
              fake_point("eatt", {"prune_layer": 1, "prune_keep_ratio": 0.5}, 23.0, 24.0, kept=0.52)]
    rows = [{"config": "vanilla", "run": "v", "point": points[0], "what": "no technique",
             "energy": energy(100.0, 1000.0, 400.0)},
            {"config": "eatt", "run": "e", "point": points[2], "what": "no technique",
             "energy": energy(80.0, 900.0, 300.0)},
            {"config": "eatt+ternary", "run": "t", "point": points[1], "what": "ternary",
             "energy": energy(40.0, 300.0, 100.0)}]
    record = {"kind": "techniques", "points": points, "rows": rows, "missing": ["vanilla+exit"],
              "energy_sentences": 5, "beam": 4, "energy_table": "horowitz-45nm-fp32", "setting": {"max_update": 650},
              "command": "fairseq-eatt-techniques (test)", "date": "2026-12-01", "machine": {}, "git_commit": "x"}
    record["figures"] = plot(record, str(tmp_path / "techniques"))
    text = reports.render(record)
    # one seed, no kept hypotheses: the difference is marked untested, never stated as a finding
    assert "| `t` | ternary (as trained) | 1,000 | 0.0 | 22.00 | 23.50 | -1.50 (untested) | 40 | 300 | 100 | 25 |" in text
    assert "(one seed, untested: not a finding), within the 2-BLEU target" in text
    assert "Not run yet: vanilla+exit" in text
    assert "25 attention multiplications per sentence (25.0% of vanilla's)" in text
    assert (tmp_path / "techniques_prune.png").exists() and "techniques_prune.png" in text


def test_the_report_command_needs_trained_runs(tmp_path, capsys):
    from fairseq_eatt.cli import techniques as cli

    with pytest.raises(SystemExit):
        cli.main(["--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--configs", "eatt+nothing"])
    assert "unknown configuration eatt+nothing" in capsys.readouterr().err


@pytest.mark.parametrize("flags, named", [(["--weight-bits", "2"], "--weight-bits 2"),
                                          (["--prune-layer", "1"], "--prune-layer 1"),
                                          (["--exit-threshold", "0.5"], "--exit-threshold 0.5")])
def test_the_formula_count_of_a_checkpoint_refuses_what_it_cannot_follow(data_dir, flags, named):
    from fairseq_eatt.energy.checkpoint import dataset_energy
    from fairseq_eatt.energy.tables import BUILTIN

    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", *flags)
    with pytest.raises(ValueError, match=f"{named}.*--decode"):
        dataset_energy(model, task, "test", BUILTIN["horowitz-45nm-fp32"], "complete", {})


def test_binarization_statistics_of_a_pruned_eatt_model_count_the_kept_tokens(data_dir):
    """fairseq-train logs E-ATT's nonzero ratios in validation: after the pruning layer they are taken over the kept
    tokens (a pruned model's validation failed on the source padding before)."""
    from fairseq_eatt.analysis.binarization import BinarizationStats, set_tracking

    torch.manual_seed(0)
    task, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-layers", "3", "--prune-layer", "1",
                           "--prune-keep-ratio", "0.5", "--eatt-threshold", "0.0")
    model.eval()
    sample = sample_of(task, bsz=3, length=8)
    prev = torch.randint(4, len(task.target_dictionary), (3, 5))
    with torch.no_grad():
        model(**sample["net_input"], prev_output_tokens=prev)  # validation's forward logs the ratios
        set_tracking(model, True)
        encoder_out = model.encoder(**sample["net_input"])
        model.decoder(prev, encoder_out=encoder_out)
    stats = BinarizationStats()
    kept = encoder_out["encoder_padding_mask"][0]
    stats.update(model, sample["net_input"]["src_tokens"].eq(task.source_dictionary.pad()),
                 prev.eq(task.target_dictionary.pad()), kept, 1)
    totals = {key: total for key, (_, total) in stats.counts().items()}
    real, kept_real = int(sample["net_input"]["src_lengths"].sum()), int((~kept).sum())
    assert totals[("encoder_self", 1)] == real * 64 and totals[("encoder_self", 2)] == kept_real * 64
    assert totals[("cross_key", 1)] == kept_real * 64 and kept_real < real
    set_tracking(model, False)


# ---- end to end: fairseq-train (validation included) and fairseq-generate ----------------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("flags, overrides", [
    (["--prune-layer", "1", "--prune-keep-ratio", "0.7"], "{'prune_keep_ratio': 0.5}"),
    (["--prune-layer", "1", "--prune-importance", "learned"], None),
    (["--early-exit"], "{'exit_threshold': 0.5}"),
    (["--weight-bits", "2"], None),
    (["--weight-bits", "1", "--quantize-modules", "attn"], None),
], ids=["prune", "prune-learned", "exit", "ternary", "binary-attn"])
def test_each_technique_trains_validates_and_generates_with_fairseq(demo_run, tmp_path, flags, overrides):
    from .helpers import PLUGIN_DIR, fairseq
    from .test_reliability import losses, train_flags

    argv = train_flags(demo_run["data_bin"], tmp_path, ("eatt",) * 3, *flags, "--max-update", "4",
                       "--log-binarization", "mean")
    if "--early-exit" in flags:
        argv[argv.index("--criterion") + 1] = "label_smoothed_cross_entropy_with_aux"
    log = fairseq("train", *argv)
    assert "valid on 'valid' subset" in log and "binz_" in log  # validation ran, with E-ATT's statistics
    assert len(losses(log)) == 4
    if "--early-exit" in flags:
        assert "exit1_nll_loss" in log
    out = fairseq("generate", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, "--path", tmp_path / "checkpoint_last.pt",
                  "--beam", "2", "--batch-size", "8", "--required-batch-size-multiple", "1", "--max-len-b", "10",
                  *(["--model-overrides", overrides] if overrides else []))
    assert "BLEU4" in out or "Generate test" in out
    assert sum(1 for line in out.splitlines() if line.startswith("H-")) > 0


def test_the_techniques_recipe_trains_each_technique_on_vanilla_and_eatt():
    from fairseq_eatt.experiments import recipes as R
    from fairseq_eatt.experiments.runner import AUX_CRITERION, criterion_for, train_flags
    from fairseq_eatt.experiments.settings import setting

    runs = R.runs_for("techniques", "small", ["multi30k-en-de"], [1])
    names = {r.name for r in runs}
    for technique in ("ternary", "binary", "prune", "exit"):
        assert {f"vanilla-vanilla-vanilla+{technique}.seed1", f"eatt-eatt-eatt+{technique}.seed1"} <= names
    assert {"vanilla-vanilla-vanilla.seed1", "eatt-eatt-eatt.seed1"} <= names  # the bases
    exit_run = next(r for r in runs if r.tag == "eatt+exit")
    assert criterion_for(exit_run) == AUX_CRITERION  # every exit's loss
    flags = train_flags(next(r for r in runs if r.tag == "vanilla+prune"), setting("multi30k-en-de", "small"), [])
    assert flags[flags.index("--prune-layer") + 1] == "1" and flags[flags.index("--prune-keep-ratio") + 1] == "0.7"
    with pytest.raises(ValueError, match="unknown configuration"):
        R.study_configs("eatt+prenorm", "techniques")  # a study lever is not a technique

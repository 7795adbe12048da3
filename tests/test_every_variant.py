"""Every registered variant, in every position where it is allowed: it trains (finite, falling loss on a tiny
slice of real data) and its beam search is the same with and without incremental state."""
import pytest
import torch
from fairseq import options, tasks
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401
from fairseq_eatt.attention import POSITION_FLAGS, AttentionSpecError, available_attentions, get_attention_class

from .helpers import PLUGIN_DIR, write_dicts

CASES = [
    (name, position)
    for name in available_attentions()
    for position in get_attention_class(name).capabilities.allowed_positions()
]


def model_args(data_dir, name, position, *extra):
    """A tiny transformer_eatt with ``name`` in ``position`` and vanilla attention elsewhere."""
    flags = []
    for pos, flag in POSITION_FLAGS.items():
        flags += [flag, name if pos == position else "vanilla"]
    parser = options.get_training_parser()
    argv = [str(data_dir), "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t", "de",
            "--arch", "transformer_eatt_tiny", "--attention-max-length", "64", "--eatt-threshold", "0.5",
            "--dropout", "0.0", "--criterion", "label_smoothed_cross_entropy_with_aux", *flags, *extra]
    return options.parse_args_and_arch(parser, input_args=argv)


@pytest.fixture(scope="module")
def train_batches(demo_run):
    args = model_args(demo_run["data_bin"], "vanilla", "encoder_self", "--max-tokens", "600")
    task = tasks.setup_task(args)
    task.load_dataset("train")
    itr = task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=600, seed=1,
                                  max_positions=(64, 64), ignore_invalid_inputs=True).next_epoch_itr(shuffle=False)
    return [next(itr) for _ in range(2)]


@pytest.mark.parametrize("name,position", CASES)
def test_trains_with_finite_falling_loss(demo_run, train_batches, name, position):
    torch.manual_seed(0)
    args = model_args(demo_run["data_bin"], name, position, "--label-smoothing", "0.1")
    task = tasks.setup_task(args)
    model = task.build_model(args)
    criterion = task.build_criterion(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(12):
        sample = train_batches[step % 2]
        loss, sample_size, _ = criterion(model, sample)
        loss = loss / sample_size
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.5, losses


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dicts")
    write_dicts(d, vocab_size=40)
    return d


PRE_NORM = ("--encoder-normalize-before", "--decoder-normalize-before")
POST_NORM = ("--eatt-recipe", "paper")  # fairseq has no flag for post-norm; the paper's recipe implies it


@pytest.mark.parametrize("blocks", ["post-norm", "pre-norm"])
@pytest.mark.parametrize("name,position", CASES)
def test_beam_search_same_with_and_without_incremental_state(dict_dir, name, position, blocks):
    """In fairseq's post-norm blocks and in its pre-norm blocks (--encoder/--decoder-normalize-before)."""
    args = model_args(dict_dir, name, position, *(PRE_NORM if blocks == "pre-norm" else POST_NORM))
    assert model_normalize_before(args) == (blocks == "pre-norm")
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    model = task.build_model(args)
    with torch.no_grad():  # a larger weight spread so that the beams differ
        for p in model.parameters():
            p.mul_(3.0)
    model.double().eval()  # float64: float32 rounding could break near-ties between beams differently
    pad, eos = task.source_dictionary.pad(), task.source_dictionary.eos()
    torch.manual_seed(1)
    src = torch.randint(4, len(task.source_dictionary), (3, 7))
    src[0, :2] = pad  # fairseq left-pads sources
    src[:, -1] = eos
    sample = {"net_input": {"src_tokens": src, "src_lengths": (src != pad).sum(1)}}

    def search(incremental):
        gen = SequenceGenerator([model], task.target_dictionary, beam_size=4, max_len_b=10)
        gen.model.has_incremental = incremental  # False: the whole prefix is recomputed at every step
        with torch.no_grad():
            return gen.forward(sample)

    for fast, slow in zip(search(True), search(False)):
        # the same hypotheses with the same scores; hypotheses whose scores tie within float error may swap ranks
        assert sorted(h["tokens"].tolist() for h in fast) == sorted(h["tokens"].tolist() for h in slow)
        scores_fast = {tuple(h["tokens"].tolist()): h["score"].item() for h in fast}
        for h in slow:
            assert h["score"].item() == pytest.approx(scores_fast[tuple(h["tokens"].tolist())], abs=1e-4)


def model_normalize_before(args) -> bool:
    return bool(args.encoder_normalize_before and args.decoder_normalize_before)


@pytest.mark.parametrize("name,position", CASES)
def test_pre_norm_blocks_train_with_finite_gradients(train_batches, demo_run, name, position):
    torch.manual_seed(0)
    args = model_args(demo_run["data_bin"], name, position, "--label-smoothing", "0.1", *PRE_NORM)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    assert model.encoder.layers[0].normalize_before and model.decoder.layers[0].normalize_before
    criterion = task.build_criterion(args)
    model.train()
    loss, sample_size, _ = criterion(model, train_batches[0])
    (loss / sample_size).backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(int(g is not None and g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


def test_synthesizer_with_invalid_max_length_is_refused_at_build(dict_dir):
    args = model_args(dict_dir, "synth_random", "decoder_cross")
    args.attention_max_length = 0
    task = tasks.setup_task(args)
    with pytest.raises((AttentionSpecError, ValueError), match="--attention-max-length must be a positive length"):
        task.build_model(args)


def test_model_max_positions_respect_a_synthesizer_length(dict_dir):
    args = model_args(dict_dir, "synth_dense", "decoder_cross")
    args.attention_max_length = 20
    model = tasks.setup_task(args).build_model(args)
    # fairseq filters longer training pairs and stops beam search at this length instead of failing mid-batch
    assert model.max_positions() == (20, 20)
    assert model.max_decoder_positions() == 20
    vanilla_args = model_args(dict_dir, "vanilla", "decoder_cross")
    assert tasks.setup_task(vanilla_args).build_model(vanilla_args).max_positions() == (1024, 1024)


@pytest.mark.parametrize("position, limits", [("encoder_self", (20, 1024)), ("decoder_self", (1024, 20)),
                                              ("decoder_cross", (20, 20))])
def test_a_synthesizer_limits_the_side_its_position_sees(dict_dir, position, limits):
    args = model_args(dict_dir, "synth_dense", position)
    args.attention_max_length = 20
    assert tasks.setup_task(args).build_model(args).max_positions() == limits

"""fairseq's transformer flags with every variant: each is supported (checked here: training step, beam search with
and without incremental state) or refused when the model is built, with the reason."""
import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

import fairseq_eatt  # noqa: F401  (registers the plugin)
from fairseq_eatt.attention import AttentionSpecError, available_attentions, get_attention_class

from .test_deployment import mix_flags
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)

VARIANTS = available_attentions()
CAUSAL = [v for v in VARIANTS if get_attention_class(v).capabilities.causal]

# fairseq's flags that change the blocks around attention; every variant supports all of them together
BLOCK_FLAGS = ["--layernorm-embedding", "--no-scale-embedding", "--encoder-normalize-before",
               "--decoder-normalize-before", "--encoder-layerdrop", "0.5", "--decoder-layerdrop", "0.5"]


def model_with(data_dir, *flags):
    torch.manual_seed(0)
    return build(data_dir, "--arch", "transformer_eatt_tiny", "--criterion",
                 "label_smoothed_cross_entropy_with_aux", "--dropout", "0", "--attention-dropout", "0", *flags)


def sample_of(task):
    src_dict = task.source_dictionary
    torch.manual_seed(1)
    src = torch.randint(4, len(src_dict), (3, 7))
    src[0, :2] = src_dict.pad()
    src[:, -1] = src_dict.eos()
    return {"net_input": {"src_tokens": src, "src_lengths": (src != src_dict.pad()).sum(1)}}


def trains_and_decodes_incrementally(task, model):
    """A training step's loss is finite with gradients everywhere, a validation forward (which logs binarization
    ratios) runs, and beam search with incremental state equals recomputing every prefix."""
    sample = sample_of(task)
    net = sample["net_input"]
    prev = net["src_tokens"].roll(1, dims=1)
    model.train()
    logits = model(**net, prev_output_tokens=prev)[0]
    logits.float().logsumexp(-1).mean().backward()
    assert torch.isfinite(logits).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        model(**net, prev_output_tokens=prev)
        for p in model.parameters():  # a larger spread, so that hypotheses differ; float64 keeps near-ties apart
            p.mul_(3.0)
        model.double()

        def search(incremental: bool):
            generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=10)
            generator.model.has_incremental = incremental
            return generator.forward(sample)

        fast, slow = search(True), search(False)
    for a, b in zip(fast, slow):
        assert [h["tokens"].tolist() for h in a] == [h["tokens"].tolist() for h in b]


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_flags_with_every_variant(data_dir, variant):
    task, model, _ = model_with(data_dir, *mix_flags(variant), *BLOCK_FLAGS)
    assert model.encoder.layernorm_embedding is not None and model.decoder.embed_scale == 1.0
    assert model.encoder.layers[0].normalize_before and model.decoder.layers[0].normalize_before
    trains_and_decodes_incrementally(task, model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_cross_attention_with_every_variant(data_dir, variant):
    caps = get_attention_class(variant).capabilities
    flags = ["--encoder-self-attention", variant, "--decoder-self-attention", variant if caps.causal else "vanilla"]
    task, model, _ = model_with(data_dir, *flags, "--no-cross-attention")
    assert all(layer.encoder_attn is None for layer in model.decoder.layers)
    trains_and_decodes_incrementally(task, model)


@pytest.mark.parametrize("variant", CAUSAL)
def test_cross_self_attention_is_supported_or_refused_with_its_reason(data_dir, variant):
    caps = get_attention_class(variant).capabilities
    flags = ["--decoder-self-attention", variant, "--cross-self-attention"]
    if not caps.cross_self_attention:
        with pytest.raises(AttentionSpecError, match=f"--cross-self-attention with --decoder-self-attention "
                                                     f"{variant}: it {caps.cross_self_why_not}"):
            model_with(data_dir, *flags)
        return
    task, model, _ = model_with(data_dir, *flags)
    assert model.decoder.layers[0].cross_self_attention
    trains_and_decodes_incrementally(task, model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_activation_checkpointing_gives_the_same_gradients(data_dir, variant):
    grads = []
    for extra in ([], ["--checkpoint-activations"]):
        task, model, _ = model_with(data_dir, *mix_flags(variant), *extra)
        net = sample_of(task)["net_input"]
        model.train()
        model(**net, prev_output_tokens=net["src_tokens"].roll(1, dims=1))[0].float().logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)

"""Binary, ternary and 8-bit weights: quantizers, straight-through gradients, packed storage, declared operations."""
import pytest
import torch

from fairseq_eatt.quantization import (QuantizedLinear, check_weight_bits, matvec_op_counts, pack, parse_modules,
                                       quantize, straight_through, unpack)

from .test_model import data_dir  # noqa: F401  (the dictionaries fixture)


@pytest.mark.parametrize("bits, levels", [(1, 2), (2, 3)])
def test_binary_and_ternary_rows_take_two_or_three_values(bits, levels):
    torch.manual_seed(0)
    w = torch.randn(6, 32)
    q = quantize(w, bits)
    for row in q:
        assert len(torch.unique(row)) <= levels
        assert torch.allclose(row.abs()[row != 0], row.abs().max().expand(int((row != 0).sum())))
    assert torch.equal(torch.sign(q[q != 0]), torch.sign(w[q != 0]))  # signs kept
    if bits == 1:
        assert torch.allclose(q.abs()[:, 0], w.abs().mean(dim=1))  # XNOR's scale: mean |w| of the row


def test_ternary_zeroes_small_weights_by_the_row_threshold():
    w = torch.tensor([[0.05, -0.9, 1.1, -0.02, 0.3, -0.4]])
    q = quantize(w, 2)
    delta = 0.7 * w.abs().mean()
    assert torch.equal(q != 0, w.abs() > delta)
    assert q[0, 1] == -q[0, 2] == -(w.abs()[w.abs() > delta].mean())


def test_eight_bits_is_close():
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    assert (quantize(w, 8) - w).abs().max() <= w.abs().max() / 127 / 2 + 1e-6


def test_gradients_reach_the_float_weights_through_the_straight_through_estimator():
    torch.manual_seed(0)
    layer = QuantizedLinear(8, 4, bits=2)
    x = torch.randn(3, 8)
    layer(x).pow(2).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    w = torch.randn(4, 8, requires_grad=True)
    straight_through(w, 1).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # the identity's gradient
    # the forward pass uses the quantized weights
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, quantize(layer.weight, 2), layer.bias))


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_packed_weights_unpack_to_the_quantized_weights(bits):
    torch.manual_seed(1)
    w = torch.randn(5, 13)  # odd sizes: padding inside the last byte
    packed = pack(w, bits)
    torch.testing.assert_close(unpack(packed, bits), quantize(w, bits), rtol=1e-6, atol=1e-6)
    expected_bytes = {1: -(-65 // 8), 2: -(-65 // 4), 8: 65}[bits]
    assert packed["codes"].numel() == expected_bytes


def test_binary_and_ternary_products_declare_no_multiplication_but_the_scales():
    binary = matvec_op_counts(10, 64, 32, 1)
    assert binary.mul == 10 * 32 and binary.add == 10 * 32 * 64
    ternary = matvec_op_counts(10, 64, 32, 2, nonzero=0.5)
    assert ternary.mul == 10 * 32 and ternary.add == 10 * 32 * 32
    assert matvec_op_counts(10, 64, 32, 8).mul == 10 * 64 * 32


def test_bad_values_are_refused_with_the_flag():
    with pytest.raises(ValueError, match="--weight-bits must be one of 1, 2, 8"):
        check_weight_bits(4)
    with pytest.raises(ValueError, match="--quantize-modules"):
        parse_modules("attn,embeddings")
    with pytest.raises(ValueError, match="--quantize-modules"):
        parse_modules("")
    assert parse_modules("ffn,attn,ffn") == ("ffn", "attn")


def test_weight_bits_quantize_the_chosen_modules_of_the_model(data_dir):
    from .test_model import build

    torch.manual_seed(0)
    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--weight-bits", "2", "--quantize-modules", "attn")
    layer = model.encoder.layers[0]
    assert all(isinstance(m, QuantizedLinear) for m in layer.self_attn.modules() if isinstance(m, torch.nn.Linear))
    assert not isinstance(layer.fc1, QuantizedLinear)
    _, model, _ = build(data_dir, "--arch", "transformer_eatt_tiny", "--weight-bits", "1")
    dec = model.decoder.layers[0]
    assert isinstance(dec.fc1, QuantizedLinear) and isinstance(dec.encoder_attn.out_proj, QuantizedLinear)
    keys = set(model.state_dict())
    _, plain, _ = build(data_dir, "--arch", "transformer_eatt_tiny")
    assert keys == set(plain.state_dict())  # checkpoints keep the float weights under the same names


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "3"], "invalid choice"),
    (["--weight-bits", "2", "--quantize-modules", "attn,emb"], "--quantize-modules"),
    (["--quantize-modules", "attn"], "--quantize-modules needs --weight-bits"),
])
def test_bad_quantization_flags_are_refused(data_dir, flags, message, capsys):
    from .test_model import build

    with pytest.raises((SystemExit, ValueError)) as err:
        build(data_dir, "--arch", "transformer_eatt_tiny", *flags)
    assert message in str(err.value) + capsys.readouterr().err


@pytest.mark.parametrize("bits", [1, 2, 8])
def test_a_quantized_map_scripts(bits):
    torch.manual_seed(0)
    layer = QuantizedLinear(8, 4, bits=bits).eval()
    x = torch.randn(2, 8)
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))


def test_a_packed_checkpoint_is_smaller_and_decodes_with_the_quantized_weights(data_dir, tmp_path):
    from fairseq import checkpoint_utils
    from fairseq.sequence_generator import SequenceGenerator

    from fairseq_eatt.cli import pack as pack_cli

    from .test_deployment import sample_of, same_hypotheses, write_checkpoint
    from .test_model import build

    torch.manual_seed(0)
    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny", "--weight-bits", "2")
    write_checkpoint(tmp_path / "float.pt", model, args)
    pack_cli.main([str(tmp_path / "float.pt"), str(tmp_path / "packed.pt")])
    assert (tmp_path / "packed.pt").stat().st_size < 0.7 * (tmp_path / "float.pt").stat().st_size
    stored = torch.load(tmp_path / "packed.pt", weights_only=False)["model"]
    assert all(isinstance(v, torch.Tensor) for v in stored.values())  # averaging tools still see tensors
    assert not any(k.endswith("fc1.weight") for k in stored)
    (loaded,), _ = checkpoint_utils.load_model_ensemble([str(tmp_path / "packed.pt")], task=task)
    sample = sample_of(task)
    with torch.no_grad():
        expected = SequenceGenerator([model.eval()], task.target_dictionary, beam_size=2, max_len_b=6).forward(sample)
        got = SequenceGenerator([loaded.eval()], task.target_dictionary, beam_size=2, max_len_b=6).forward(sample)
    same_hypotheses(expected, got, varied=True)


def test_packing_a_float_checkpoint_is_refused(data_dir, tmp_path, capsys):
    from fairseq_eatt.cli import pack as pack_cli

    from .test_deployment import write_checkpoint
    from .test_model import build

    _, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    write_checkpoint(tmp_path / "float.pt", model, args)
    with pytest.raises(SystemExit):
        pack_cli.main([str(tmp_path / "float.pt"), str(tmp_path / "packed.pt")])
    assert "no quantized weights" in capsys.readouterr().err and not (tmp_path / "packed.pt").exists()

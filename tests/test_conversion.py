"""fairseq-eatt-convert (fairseq_eatt/models/conversion.py): an E-ATT model from a trained vanilla checkpoint."""
import os
import subprocess
import sys

import pytest
import torch

from fairseq_eatt.models.conversion import ConversionError, convert_checkpoint

from .helpers import REPO_ROOT, parse_train_args

VANILLA = ["--encoder-self-attention", "vanilla", "--decoder-self-attention", "vanilla",
           "--decoder-cross-attention", "vanilla"]


def save_model(dict_dir, path, *flags, updates=7):
    """A fairseq checkpoint (the fields fairseq-train writes) of a freshly built model with random weights."""
    from fairseq import tasks

    args = parse_train_args(dict_dir, "--share-all-embeddings", *flags)
    task = tasks.setup_task(args)
    torch.manual_seed(3)
    model = task.build_model(args)
    with torch.no_grad():  # weights unlike any initialization, so a copy is told from a fresh parameter
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    state = {"args": args, "model": model.state_dict(), "criterion": {},
             "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                                    "lr_scheduler_state": {"best": 4.2}, "num_updates": updates}],
             "extra_state": {"train_iterator": {"epoch": 3, "iterations_in_epoch": 0}}, "task_state": {}}
    torch.save(state, path)
    return model


def load(path, dict_dir):
    from fairseq import checkpoint_utils

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(dict_dir)})
    return models[0]


def test_shared_weights_are_copied_and_selections_start_from_wq_wk(dict_dir, tmp_path):
    src = tmp_path / "vanilla.pt"
    vanilla = save_model(dict_dir, src, "--arch", "transformer_eatt_tiny", "--encoder-normalize-before",
                         "--decoder-normalize-before", *VANILLA)
    report = convert_checkpoint(str(src), str(tmp_path / "eatt.pt"))
    eatt = load(tmp_path / "eatt.pt", dict_dir)
    before, after = vanilla.state_dict(), eatt.state_dict()
    kinds = {type(m).__name__ for m in eatt.modules()}
    assert "EattAttention" in kinds and "VanillaAttention" not in kinds
    assert eatt.args.encoder_normalize_before and eatt.args.eatt_recipe == "paper-prenorm"  # the source's blocks
    selections = 0
    for key, value in after.items():
        if key.endswith("_extra_state"):
            continue
        origin = key.replace(".q_select.", ".q_proj.").replace(".k_select.", ".k_proj.")
        selections += origin != key
        assert torch.equal(value, before[origin]), key
    # 2 encoder + 2 decoder layers: self (2 maps x weight, bias) in 4 layers, cross in 2
    assert selections == 6 * 4 and len(report.started_from) == 24 and not report.fresh and not report.dropped
    assert "encoder.embed_tokens.weight" in report.copied and "decoder.layers.1.fc2.weight" in report.copied
    state = torch.load(tmp_path / "eatt.pt", weights_only=False)
    assert state["conversion"]["source_updates"] == 7 and state["optimizer_history"][-1]["num_updates"] == 0
    assert "last_optimizer_state" not in state
    tokens = torch.tensor([[5, 6, 7, 2]])
    with torch.no_grad():  # the same embeddings and feed-forward layers, another attention: other outputs
        out_v = vanilla.eval()(tokens, torch.tensor([4]), tokens)[0]
        out_e = eatt.eval()(tokens, torch.tensor([4]), tokens)[0]
    assert out_v.shape == out_e.shape and not torch.allclose(out_v, out_e)


def test_stock_fairseq_transformer_converts_in_its_post_norm_blocks(dict_dir, tmp_path):
    src = tmp_path / "stock.pt"
    save_model(dict_dir, src, "--arch", "transformer", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
               "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-layers", "1",
               "--decoder-layers", "1", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2")
    convert_checkpoint(str(src), str(tmp_path / "eatt.pt"),
                       {"encoder_self": "eatt", "decoder_self": "vanilla", "decoder_cross": "eatt"})
    eatt = load(tmp_path / "eatt.pt", dict_dir)
    assert eatt.args.arch == "transformer_eatt" and eatt.args.eatt_recipe == "paper"
    assert not eatt.args.encoder_normalize_before
    assert type(eatt.decoder.layers[0].self_attn).__name__ == "VanillaAttention"
    assert type(eatt.decoder.layers[0].encoder_attn).__name__ == "EattAttention"


def test_a_variant_without_some_projections_reports_what_it_drops(dict_dir, tmp_path):
    src = tmp_path / "vanilla.pt"
    save_model(dict_dir, src, "--arch", "transformer_eatt_tiny", *VANILLA)
    report = convert_checkpoint(str(src), str(tmp_path / "eff.pt"), {p: "efficient" for p in
                                                                    ("encoder_self", "decoder_self", "decoder_cross")})
    # efficient attention has no W_K and no W_V: K = V = X
    assert report.dropped and all(".k_proj." in k or ".v_proj." in k for k in report.dropped)
    assert not report.started_from


def test_bad_sources_are_refused_and_nothing_is_written(dict_dir, tmp_path):
    eatt_src = tmp_path / "eatt-trained.pt"
    save_model(dict_dir, eatt_src, "--arch", "transformer_eatt_tiny")
    out = tmp_path / "out.pt"
    with pytest.raises(ConversionError, match="not vanilla everywhere .*--encoder-self-attention eatt"):
        convert_checkpoint(str(eatt_src), str(out))
    with pytest.raises(ConversionError, match="no such checkpoint file"):
        convert_checkpoint(str(tmp_path / "missing.pt"), str(out))
    with pytest.raises(ConversionError, match="the same file as --from"):
        convert_checkpoint(str(eatt_src), str(eatt_src))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(eatt_src.read_bytes()[:300])  # a truncated download
    with pytest.raises(ConversionError, match="not a readable fairseq checkpoint"):
        convert_checkpoint(str(broken), str(out))
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_cli_names_the_flag_on_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fairseq_eatt.cli.convert", "--from", str(tmp_path / "none.pt"),
                           "--to", str(tmp_path / "x.pt")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 1 and "fairseq-eatt-convert: --from" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "x.pt")

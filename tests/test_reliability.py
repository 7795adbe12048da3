"""Reliability through fairseq's own trainer: bit-exact resume, DistributedDataParallel on CPUs (gloo), bf16 and
fp16 training, for E-ATT and every registered variant (grouped into hybrids, three variants per model)."""
import argparse
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from fairseq_eatt.attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF, available_attentions
from fairseq_eatt.attention import get_attention_class
from fairseq_eatt.experiments.runner import AUX_CRITERION

from .helpers import PLUGIN_DIR, REPO_ROOT

pytestmark = pytest.mark.e2e  # fairseq-train runs through its command line: make test-e2e / CI


def variant_groups():
    """Hybrids (encoder self, decoder self, cross) that together place every variant at least once, each in a
    position it supports."""
    todo = list(available_attentions())
    groups = []
    while todo:
        group = {}
        for position in (DECODER_SELF, DECODER_CROSS, ENCODER_SELF):  # the scarcer positions first
            pick = next((v for v in todo if position in get_attention_class(v).capabilities.allowed_positions()),
                        None)
            group[position] = pick or "vanilla"
            if pick:
                todo.remove(pick)
        groups.append((group[ENCODER_SELF], group[DECODER_SELF], group[DECODER_CROSS]))
    return groups


GROUPS = variant_groups()
GROUP_IDS = ["-".join(g) for g in GROUPS]


def test_the_groups_cover_every_variant():
    covered = {v for g in GROUPS for v in g}
    assert covered == set(available_attentions())


def train_flags(data_bin, save_dir, variants=("eatt", "eatt", "eatt"), *extra):
    enc, dec, cross = variants
    aux = any(get_attention_class(v).has_auxiliary_loss(argparse.Namespace()) for v in variants)
    return [str(data_bin), "--user-dir", PLUGIN_DIR, "--task", "translation", "--arch", "transformer_eatt_tiny",
            "--encoder-self-attention", enc, "--decoder-self-attention", dec, "--decoder-cross-attention", cross,
            "--criterion", AUX_CRITERION if aux else "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--lr", "0.002", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
            "--max-tokens", "512", "--required-batch-size-multiple", "1", "--seed", "3", "--log-interval", "1",
            "--log-format", "simple", "--num-workers", "0", "--save-dir", str(save_dir), "--no-epoch-checkpoints",
            "--cpu", *map(str, extra)]


def run(cmd, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def train(*flags):
    return run([sys.executable, "-m", "fairseq_cli.train", *flags])


def losses(log):
    """{update: (loss, gnorm)} of fairseq's per-update log lines."""
    out = {}
    for line in log.splitlines():
        m = re.search(r"train_inner .* loss=([-\d.]+),.*num_updates=(\d+),.*gnorm=([-\w.]+)", line)
        if m:
            out[int(m.group(2))] = (float(m.group(1)), m.group(3))
    return out


def params(checkpoint):
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))
    return {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}


# ---- resume ------------------------------------------------------------------------------------------------------

def test_resume_from_checkpoint_last_is_bit_exact(demo_run, tmp_path):
    """8 updates in one go against 4 + 4 with a stop and a restart in the middle of an epoch (dropout on, so the
    random state must be restored too): the same losses and bit-identical parameters."""
    data = demo_run["data_bin"]
    common = ["--dropout", "0.1", "--save-interval-updates", "4", "--validate-interval-updates", "4"]
    whole = train(*train_flags(data, tmp_path / "whole", ("eatt",) * 3, *common, "--max-update", "8"))
    first = train(*train_flags(data, tmp_path / "split", ("eatt",) * 3, *common, "--max-update", "4"))
    second = train(*train_flags(data, tmp_path / "split", ("eatt",) * 3, *common, "--max-update", "8"))
    assert "Loaded checkpoint" in second and "(epoch 1 @ 4 updates)" in second
    assert len(losses(whole)) == 8 and losses(first) == {u: v for u, v in losses(whole).items() if u <= 4}
    assert losses(second) == {u: v for u, v in losses(whole).items() if u > 4}
    a, b = params(tmp_path / "whole" / "checkpoint_last.pt"), params(tmp_path / "split" / "checkpoint_last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- distributed -------------------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_against_update_freq(data_bin, tmp_path, variants):
    """Two updates with DistributedDataParallel over 2 CPU workers (torchrun, gloo) and with one process and
    --update-freq 2: worker i gets batch i of each pair, the single process both, in the same order."""
    common = ["--dropout", "0", "--max-update", "2", "--disable-validation"]  # dropout masks differ per worker
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(free_port()), "-m", "fairseq_cli.train"]
    ddp = run(torchrun + train_flags(data_bin, tmp_path / "ddp", variants, *common, "--distributed-world-size", "2",
                                     "--distributed-backend", "gloo", "--ddp-backend", "pytorch_ddp"), env=env)
    single = run([sys.executable, "-m", "fairseq_cli.train",
                  *train_flags(data_bin, tmp_path / "single", variants, *common, "--update-freq", "2")], env=env)
    assert "distributed init (rank 1)" in ddp
    ddp_losses, single_losses = losses(ddp), losses(single)
    assert sorted(ddp_losses) == sorted(single_losses) == [1, 2]
    for update in (1, 2):  # logged with 3 decimals
        assert ddp_losses[update][0] == pytest.approx(single_losses[update][0], abs=2e-3)
    a, b = params(tmp_path / "ddp" / "checkpoint_last.pt"), params(tmp_path / "single" / "checkpoint_last.pt")
    for k in a:
        # float32 sums of the same gradients in another order; Adam's first steps move each weight by about lr
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5, msg=lambda m: f"{k}: {m}")


def test_distributed_training_matches_update_freq_for_eatt(demo_run, tmp_path):
    ddp_against_update_freq(demo_run["data_bin"], tmp_path, ("eatt", "eatt", "eatt"))


@pytest.mark.slow
@pytest.mark.parametrize("variants", GROUPS, ids=GROUP_IDS)
def test_distributed_training_matches_update_freq_for_every_variant(demo_run, tmp_path, variants):
    ddp_against_update_freq(demo_run["data_bin"], tmp_path, variants)


# ---- mixed precision ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variants", GROUPS, ids=GROUP_IDS)
def test_bf16_training_stays_finite_for_hundreds_of_updates(demo_run, tmp_path, variants):
    log = train(*train_flags(demo_run["data_bin"], tmp_path, variants, "--bf16", "--max-update", "200",
                             "--dropout", "0.1", "--disable-validation", "--log-interval", "25"))
    # fairseq's Trainer casts model and batches to bfloat16 for cfg.common.bf16 (on the CPU, not a TPU)
    assert "'bf16': True" in log and "'tpu': False" in log
    values = []
    for line in log.splitlines():
        m = re.search(r"train_inner .* loss=([-\w.]+),.*num_updates=(\d+)", line)
        if m:
            values.append((int(m.group(2)), float(m.group(1))))
    assert values and values[-1][0] == 200, log[-2000:]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in values), values
    assert values[-1][1] < values[0][1]  # it learns, too
    weights = params(tmp_path / "checkpoint_last.pt")
    assert all(torch.isfinite(w.float()).all() for w in weights.values())


def test_fp16_training_runs_on_cpu(demo_run, tmp_path):
    """fairseq's --fp16 path (half-precision model, fp32 master weights, dynamic loss scaling) trains E-ATT on
    the CPU. fairseq 0.12 builds its flat fp32 master copy on a GPU only, so the per-parameter copies
    (--fp16-no-flatten-grads) stand in."""
    log = train(*train_flags(demo_run["data_bin"], tmp_path, ("eatt",) * 3, "--fp16", "--fp16-no-flatten-grads",
                             "--max-update", "12", "--disable-validation", "--dropout", "0.1"))
    assert re.search(r"loss_scale=[\d.]+", log), log[-2000:]
    values = list(losses(log).values())
    assert len(values) == 12 and all(torch.isfinite(torch.tensor(v[0])) for v in values)
    assert values[-1][0] < values[0][0] - 0.5, values  # it learns: half precision did not stall the updates
    weights = params(tmp_path / "checkpoint_last.pt")
    assert all(torch.isfinite(w.float()).all() for w in weights.values())


def test_fp16_loss_scaling_detects_overflow_and_recovers(demo_run):
    """fairseq's dynamic loss scaler on the half-precision E-ATT model: a scale of 2^30 overflows the fp16
    gradients (surrogate included); the overflow is detected (OverflowError, scale lowered), not stepped into
    the weights. (fairseq-train's own overflow handler calls .cuda(), so this path is tested in-process.)"""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim.fp16_optimizer import FP16Optimizer

    from fairseq_eatt.perf.worker import batches

    argv = train_flags(demo_run["data_bin"], "unused", ("eatt",) * 3, "--fp16", "--fp16-no-flatten-grads",
                       "--fp16-init-scale", str(2**30), "--dropout", "0")
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model).half()
    criterion = task.build_criterion(cfg.criterion)
    optimizer = FP16Optimizer.build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    sample = batches(task, model, "train", max_tokens=512, count=1)[0]
    before = [p.detach().clone() for p in model.parameters()]

    def backward():
        optimizer.zero_grad()
        loss, _, _ = criterion(model, sample)
        optimizer.backward(loss)
        return loss

    assert torch.isfinite(backward())
    with pytest.raises(OverflowError):
        optimizer.clip_grad_norm(1.0)
    assert optimizer.scaler.loss_scale < 2**30
    while True:  # fairseq-train's loop: lower the scale until the gradients fit, then step
        backward()
        try:
            grad_norm = optimizer.clip_grad_norm(1.0)
            break
        except OverflowError:
            continue
    assert torch.isfinite(grad_norm) and grad_norm > 0
    optimizer.step()
    after = list(model.parameters())
    assert all(torch.isfinite(p.float()).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))

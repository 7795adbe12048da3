"""Loading a checkpoint cannot run code: fairseq's checkpoints load, a crafted one is refused and nothing runs."""
import pickle
import re
import sys

import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_eatt  # noqa: F401  (wraps fairseq's loading)
from fairseq_eatt.compat import TRUST_VARIABLE, CheckpointError, load_state

from .test_deployment import write_checkpoint
from .test_model import build, data_dir  # noqa: F401  (data_dir: the dictionaries fixture)
from .test_reliability import GROUP_IDS, GROUPS, run, train_flags

RAN = []


def record_run(marker):
    """What the crafted file asks the unpickler to call: it must never be called unless trusted."""
    RAN.append(marker)
    return marker


class Crafted:
    def __reduce__(self):
        return (record_run, ("the crafted file ran code",))


@pytest.fixture(autouse=True)
def untrusted(monkeypatch):
    monkeypatch.delenv(TRUST_VARIABLE, raising=False)
    RAN.clear()


@pytest.mark.parametrize("variant", ["eatt", "vanilla", "performer", "synth_dense", "super"])
def test_a_checkpoint_as_fairseq_writes_it_loads_with_its_optimizer_state(data_dir, tmp_path, variant):
    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny", "--encoder-self-attention", variant,
                              "--decoder-cross-attention", variant)
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, model, args)
    state = torch.load(path, weights_only=False)
    optimizer = torch.optim.Adam(model.parameters())
    model(*[torch.ones(2, 3, dtype=torch.long)] * 1, torch.tensor([3, 3]), torch.ones(2, 3, dtype=torch.long))[0] \
        .sum().backward()
    optimizer.step()
    state["last_optimizer_state"] = optimizer.state_dict()
    torch.save(state, path)
    loaded = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert loaded["args"].encoder_self_attention == variant and "state" in loaded["last_optimizer_state"]
    (ensemble,), _ = checkpoint_utils.load_model_ensemble([str(path)], task=task)
    assert type(ensemble.encoder.layers[0].self_attn) is type(model.encoder.layers[0].self_attn)


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    path = tmp_path / "crafted.pt"
    torch.save({"model": {}, "args": None, "payload": Crafted()}, path)
    for load in (lambda: checkpoint_utils.load_checkpoint_to_cpu(str(path)), lambda: load_state(str(path))):
        with pytest.raises(CheckpointError) as refused:
            load()
        message = str(refused.value)
        assert str(path) in message and "record_run" in message and f"{TRUST_VARIABLE}=1" in message
    assert RAN == []


def test_a_trusted_file_loads_with_the_full_unpickler(tmp_path, monkeypatch):
    path = tmp_path / "crafted.pt"
    torch.save({"payload": Crafted()}, path)
    monkeypatch.setenv(TRUST_VARIABLE, "1")
    assert load_state(str(path))["payload"] == "the crafted file ran code" and RAN == ["the crafted file ran code"]
    monkeypatch.setenv(TRUST_VARIABLE, "yes")
    with pytest.raises(ValueError, match=f"{TRUST_VARIABLE}='yes': valid values are 1"):
        load_state(str(path))


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-checkpoint"])
def test_an_unreadable_checkpoint_is_an_error_naming_it(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "not-a-checkpoint": pickle.dumps("a pickle, not a torch file")[:5]}[damage])
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_a_checkpoint_saved_from_a_loaded_one_before_the_change_still_loads(data_dir, tmp_path):
    """Packed and converted checkpoints used to store fairseq's omegaconf config as loaded: still accepted."""
    from omegaconf import OmegaConf

    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    path = tmp_path / "old.pt"
    cfg = OmegaConf.create({"model": {"arch": "transformer_eatt_tiny", "dropout": 0.1}, "task": {"_name": "x"}})
    torch.save({"args": args, "cfg": cfg, "model": model.state_dict()}, path)
    loaded = load_state(str(path))
    assert OmegaConf.to_container(loaded["cfg"]) == OmegaConf.to_container(cfg) and RAN == []


# ---- a checkpoint with the wrong data directory, or a damaged one, through the plugin's tools ----

def _trained_pair(data_dir, tmp_path):
    task, model, args = build(data_dir, "--arch", "transformer_eatt_tiny")
    path = tmp_path / "checkpoint.pt"
    write_checkpoint(path, model, args)
    return str(path)


def _data(tmp_path, name, symbols):
    directory = tmp_path / name
    directory.mkdir()
    for lang in ("en", "de"):
        (directory / f"dict.{lang}.txt").write_text("".join(f"{s} {1000 - i}\n" for i, s in enumerate(symbols)))
    return str(directory)


def test_the_data_directory_must_hold_the_checkpoints_dictionaries(data_dir, tmp_path):
    from fairseq_eatt.fairseq_tools import load_checkpoint

    path = _trained_pair(data_dir, tmp_path)
    model, _ = load_checkpoint(path, str(data_dir))  # its own dictionaries: loads
    same_size = _data(tmp_path, "shuffled", [f"w{i}" for i in reversed(range(40))])
    with pytest.raises(SystemExit, match=r"with data .*shuffled: the data directory's dictionaries are not the "
                                         r"checkpoint's: .*dict.de.txt: 44 symbols \(other symbols or order\), the "
                                         r"checkpoint's 44"):
        load_checkpoint(path, same_size)
    larger = _data(tmp_path, "larger", [f"w{i}" for i in range(48)])
    with pytest.raises(SystemExit, match=r"with data .*larger: .*dict.de.txt: 52 symbols, the checkpoint's 44"):
        load_checkpoint(path, larger)
    empty = tmp_path / "no-dicts"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"data directory .*no-dicts: .*dict\.en\.txt \(it needs the dictionaries"):
        load_checkpoint(path, str(empty))


def test_a_damaged_checkpoint_is_an_error_naming_it_through_the_tools(data_dir, tmp_path):
    from fairseq_eatt.fairseq_tools import load_checkpoint

    path = _trained_pair(data_dir, tmp_path)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 3])
    with pytest.raises(SystemExit, match=f"--path {path}: not a readable checkpoint"):
        load_checkpoint(path, str(data_dir))


def test_numpy_values_of_fairseqs_logged_meters_load(tmp_path):
    """fairseq-train keeps some logged meters as numpy values in extra_state (seen with adaptive span)."""
    import numpy as np

    path = tmp_path / "checkpoint.pt"
    meters = {"val": np.array(3, dtype=np.int64), "sum": np.array([1.5, 2.0]), "scalar": np.float64(0.25),
              "mask": np.array([True, False])}
    torch.save({"model": {}, "extra_state": {"metrics": {"valid": [(0, "span", "AverageMeter", meters)]}}}, path)
    loaded = load_state(str(path))["extra_state"]["metrics"]["valid"][0][3]
    assert loaded["val"] == 3 and loaded["sum"].tolist() == [1.5, 2.0] and loaded["scalar"] == 0.25
    assert loaded["mask"].tolist() == [True, False] and RAN == []


@pytest.mark.e2e
@pytest.mark.parametrize("variants", GROUPS, ids=GROUP_IDS)
def test_fairseq_train_resumes_from_its_own_checkpoint_of_every_variant(demo_run, tmp_path, variants):
    """fairseq-train writes a checkpoint (model, optimizer state, meters) of hybrids that hold every variant; it
    loads with the allow-list alone: in this process and when fairseq-train itself resumes from it."""
    import os

    env = {k: v for k, v in os.environ.items() if k != TRUST_VARIABLE}
    flags = train_flags(demo_run["data_bin"], tmp_path, variants, "--disable-validation")
    run([sys.executable, "-m", "fairseq_cli.train", *flags, "--max-update", "2"], env=env)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "checkpoint_last.pt"))
    assert state["last_optimizer_state"]["state"], "no optimizer state in the checkpoint"
    assert state["optimizer_history"][-1]["num_updates"] == 2
    log = run([sys.executable, "-m", "fairseq_cli.train", *flags, "--max-update", "3"], env=env)
    assert re.search(r"[Ll]oaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 2 updates\)", log), log[-2000:]
    assert checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "checkpoint_last.pt"))[
        "optimizer_history"][-1]["num_updates"] == 3


@pytest.mark.parametrize("problem", ["crafted", "truncated", "missing", "other-dictionaries", "no-dictionaries",
                                     "no-split"])
def test_fairseq_eatt_generate_answers_a_bad_checkpoint_or_data_directory_in_one_line(data_dir, tmp_path,
                                                                                     monkeypatch, problem):
    """The plugin's fairseq-generate: an error naming the file and what would be valid, not a traceback."""
    from fairseq_eatt.cli import generate

    from .helpers import PLUGIN_DIR

    path, data = _trained_pair(data_dir, tmp_path), str(data_dir)
    expected = {"crafted": "refused: the file holds tests.test_safe_loading.record_run",
                "truncated": "not a readable checkpoint", "missing": "--path {path}: no such checkpoint file",
                "other-dictionaries": "shuffled: the data directory's dictionaries are not the checkpoint's: "
                                      "dict.en.txt: 44 symbols (other symbols or order)",
                "no-dictionaries": "dict.en.txt: no such file or directory (DATA must be fairseq-preprocess's output",
                "no-split": "Dataset not found: test"}[problem]
    if problem == "crafted":
        torch.save({"model": {}, "args": None, "payload": Crafted()}, path)
    elif problem == "truncated":
        with open(path, "rb") as handle:
            head = handle.read(2000)
        with open(path, "wb") as handle:
            handle.write(head)
    elif problem == "missing":
        path = str(tmp_path / "nowhere.pt")
        expected = expected.format(path=path)
    elif problem == "other-dictionaries":
        data = _data(tmp_path, "shuffled", [f"w{i}" for i in reversed(range(40))])
    elif problem == "no-dictionaries":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    monkeypatch.setattr(sys, "argv", ["fairseq-eatt-generate"])
    with pytest.raises(SystemExit) as stop:
        generate.main([data, "--path", path, "--user-dir", PLUGIN_DIR, "--task", "translation", "-s", "en", "-t",
                       "de", "--gen-subset", "test", "--cpu"])
    message = str(stop.value.code)
    assert message.startswith("fairseq-eatt-generate: ") and expected in message, message
    if problem in ("crafted", "truncated", "missing"):
        assert path in message
    assert not RAN

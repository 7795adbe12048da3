"""End to end on a slice of the shipped Multi30k: sacremoses -> subword-nmt -> fairseq-preprocess -> fairseq-train
-> fairseq-generate / fairseq-interactive -> sacreBLEU, through the real command-line tools."""
import json
import os
import re

import pytest

from .helpers import PLUGIN_DIR, TEST_SENTENCES, fairseq

TINY_DIMS = ["--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2",
             "--encoder-layers", "2", "--decoder-embed-dim", "64", "--decoder-ffn-embed-dim", "128",
             "--decoder-attention-heads", "2", "--decoder-layers", "2"]
CONFIGS = {
    "eatt": ["--arch", "transformer_eatt_tiny"],
    "stock_transformer": ["--arch", "transformer"] + TINY_DIMS,
    "hybrid_vanilla_self_eatt_cross": ["--arch", "transformer_eatt_tiny", "--encoder-self-attention", "vanilla",
                                       "--decoder-self-attention", "vanilla", "--decoder-cross-attention", "eatt"],
}


def test_demo_pipeline_prints_bleu_and_writes_outputs(demo_run):
    out = demo_run["stdout"]
    assert re.search(r"sacreBLEU on test_2016_flickr \(en->de, detokenized vs raw references\): [0-9.]+", out)
    assert "signature: nrefs:1" in out
    result_files = list((demo_run["workdir"] / "generate").glob("*/result.json"))
    assert len(result_files) == 1
    result = json.loads(result_files[0].read_text())
    assert 0.0 <= result["bleu"] <= 100.0
    hyps = open(result["hypotheses"], encoding="utf-8").read().splitlines()
    assert len(hyps) == TEST_SENTENCES
    # the shipped data went through every stage
    for stage in ("tok", "bpe300"):  # raw text that is not compressed is read in place
        assert (demo_run["workdir"] / stage / "train.en").exists()
    assert not list(demo_run["workdir"].glob("**/*.partial"))
    # the demo trains the default recipe, named as experiment runs are: a folder of another recipe is never resumed
    (run_dir,) = (demo_run["workdir"] / "checkpoints").iterdir()
    assert run_dir.name == "transformer_eatt_tiny.eatt-eatt-eatt@paper-prenorm.seed1"


def test_demo_run_names_carry_the_recipe_other_than_the_papers():
    from fairseq_eatt.cli.demo import recipe_suffix

    assert recipe_suffix("") == "@paper-prenorm"
    assert recipe_suffix("--eatt-recipe paper --dropout 0.1") == ""
    assert recipe_suffix("--eatt-recipe=authors") == "@authors"


def train_losses(log):
    return [float(m) for m in re.findall(r"\| train_inner \|.* loss=([0-9.]+|nan|inf)", log)]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def trained(request, demo_run, tmp_path_factory):
    name = request.param
    save_dir = tmp_path_factory.mktemp("ckpt-" + name)
    log = fairseq(
        "train", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, *CONFIGS[name], "--share-all-embeddings",
        "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "eatt", "--warmup-updates", "1",
        "--plateau-updates", "100", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--max-tokens", "2048", "--max-update", "10", "--seed", "3", "--save-dir", save_dir,
        "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "1", "--num-workers", "0",
        "--dropout", "0.0", "--batch-size", "400", "--required-batch-size-multiple", "1",
    )
    return name, save_dir, log


@pytest.mark.e2e
def test_training_loss_is_finite_and_falls(trained):
    name, _, log = trained
    losses = train_losses(log)
    assert len(losses) == 10, log[-2000:]
    assert all(l == l and l < 1e4 for l in losses)
    assert losses[-1] < losses[0] - 0.5, (name, losses)


@pytest.mark.e2e
def test_generate_beam_search_sacrebleu_and_alignments(trained, demo_run):
    _, save_dir, _ = trained
    out = fairseq(
        "generate", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, "--path", save_dir / "checkpoint_last.pt",
        "--gen-subset", "test", "--source-lang", "en", "--target-lang", "de", "--beam", "4", "--batch-size", "8",
        "--max-len-b", "30",
        "--post-process", "subword_nmt", "--tokenizer", "moses", "--scoring", "sacrebleu", "--print-alignment",
    )
    assert len(re.findall(r"^H-\d+\t", out, re.M)) == TEST_SENTENCES
    assert len(re.findall(r"^D-\d+\t", out, re.M)) == TEST_SENTENCES
    alignments = re.findall(r"^A-\d+\t(.*)$", out, re.M)
    assert len(alignments) == TEST_SENTENCES
    assert all(re.fullmatch(r"(\d+-\d+ ?)*", a.strip()) for a in alignments)
    assert re.search(r"Generate test with beam=4: BLEU = [0-9.]+", out)


@pytest.mark.e2e
def test_interactive_translates(trained, demo_run):
    _, save_dir, _ = trained
    out = fairseq(
        "interactive", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, "--path", save_dir / "checkpoint_last.pt",
        "--source-lang", "en", "--target-lang", "de", "--beam", "2", "--max-len-b", "20",
        "--tokenizer", "moses", "--bpe", "subword_nmt", "--bpe-codes", demo_run["codes"],
        stdin="A man is riding a bike.\nTwo dogs play in the snow.\n",
    )
    assert len(re.findall(r"^D-\d+\t", out, re.M)) == 2


@pytest.mark.e2e
@pytest.mark.parametrize("trained", ["eatt"], indirect=True)  # resume is checked once, on E-ATT
def test_training_resumes_from_checkpoint_last(trained, demo_run):
    name, save_dir, _ = trained
    log = fairseq(
        "train", demo_run["data_bin"], "--user-dir", PLUGIN_DIR, *CONFIGS[name], "--share-all-embeddings",
        "--optimizer", "adam", "--lr", "0.003", "--lr-scheduler", "eatt", "--warmup-updates", "1",
        "--plateau-updates", "100", "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "2048",
        "--max-update", "12", "--seed", "3", "--save-dir", save_dir, "--no-epoch-checkpoints",
        "--log-format", "simple", "--log-interval", "1", "--num-workers", "0",
    )
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 10 updates\)", log), log[-3000:]
    assert "num_updates=12" in log or "num_updates 12" in log


@pytest.mark.e2e
def test_from_pretrained_loads_without_any_setting(trained, demo_run):
    from fairseq.models.transformer import TransformerModel

    import fairseq_eatt  # noqa: F401

    _, save_dir, _ = trained
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    hub = TransformerModel.from_pretrained(
        str(save_dir), "checkpoint_last.pt", str(demo_run["data_bin"]), bpe="subword_nmt",
        bpe_codes=str(demo_run["codes"]), tokenizer="moses", source_lang="en", target_lang="de",
    )
    hub.eval()
    out = hub.translate("A little girl is climbing.", beam=2, max_len_b=20)
    assert isinstance(out, str)
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ  # the workaround is scoped to fairseq's loader


def test_the_demo_refuses_a_bad_raw_dir_before_doing_anything(tmp_path, capsys):
    from fairseq_eatt.cli import demo

    work = tmp_path / "work"
    with pytest.raises(SystemExit) as stop:
        demo.main(["--raw-dir", str(tmp_path / "nowhere"), "--workdir", str(work)])
    assert stop.value.code == 2 and "--raw-dir" in capsys.readouterr().err and not work.exists()
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("train.en", "train.de.gz", "val.en", "val.de", "test_2016_flickr.en"):
        (raw / name).write_text("x\n")
    with pytest.raises(SystemExit):
        demo.main(["--raw-dir", str(raw), "--workdir", str(work)])
    assert "missing test_2016_flickr.de (or .gz)" in capsys.readouterr().err and not work.exists()


@pytest.mark.parametrize("problem", ["line-counts", "empty", "same-language"])
def test_the_demo_refuses_a_corpus_that_cannot_train_before_doing_anything(tmp_path, capsys, problem):
    from fairseq_eatt.cli import demo

    raw, work = tmp_path / "raw", tmp_path / "work"
    raw.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        (raw / f"{split}.en").write_text("a b\nc d\n")
        (raw / f"{split}.de").write_text("e f\ng h\n")
    if problem == "line-counts":
        (raw / "val.de").write_text("e f\n")
    elif problem == "empty":
        (raw / "train.en").write_text("")
    argv = ["--raw-dir", str(raw), "--workdir", str(work)] + (["--tgt", "en"] if problem == "same-language" else [])
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    message = capsys.readouterr().err
    assert stop.value.code == 2 and not work.exists()
    assert {"line-counts": "val.en has 2 lines, val.de 1: a parallel corpus needs one target line per source line",
            "empty": "train.en is empty", "same-language": "--src and --tgt are both 'en'"}[problem] in message

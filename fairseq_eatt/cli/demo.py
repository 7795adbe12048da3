"""The main job: train E-ATT on Multi30k En-De through the real pipeline and score it with sacreBLEU.

    raw text --sacremoses--> tokens --subword-nmt--> joint BPE --fairseq-preprocess--> binarized data
    --fairseq-train--> checkpoint --fairseq-generate (beam search)--> detokenized output --sacreBLEU--> BLEU

Every step is resumable: finished outputs are reused, an interrupted training run continues from
``checkpoint_last.pt``. Options train longer (``--max-update``), use other attention variants, or another corpus
(``--raw-dir`` with ``{split}.{lang}[.gz]`` files).
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Optional

from ..data.text import apply_bpe_file, decompress, learn_bpe, read_lines, tokenize_file

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_MULTI30K = os.path.join(REPO_ROOT, "data_prep", "multi30k")
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="fairseq-eatt-demo",
        description="Train, decode and score an E-ATT model end to end (default: Multi30k En-De, ~15 min on 2 CPU "
        "cores).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--raw-dir", default=SHIPPED_MULTI30K,
                   help="folder with raw parallel text {split}.{lang} or {split}.{lang}.gz (a SHA256SUMS file there "
                        "is verified)")
    p.add_argument("--src", default="en", help="source language suffix")
    p.add_argument("--tgt", default="de", help="target language suffix")
    p.add_argument("--train-split", default="train")
    p.add_argument("--valid-split", default="val")
    p.add_argument("--test-split", default="test_2016_flickr")
    p.add_argument("--workdir", default=os.path.join("work", "demo"), help="where every output goes")
    p.add_argument("--bpe-merges", type=int, default=8000, help="joint BPE merge operations (subword-nmt)")
    p.add_argument("--arch", default="transformer_eatt_small", help="a transformer_eatt architecture")
    p.add_argument("--encoder-self-attention", default="eatt", help="attention variant of the encoder")
    p.add_argument("--decoder-self-attention", default="eatt", help="attention variant of decoder self-attention")
    p.add_argument("--decoder-cross-attention", default="eatt", help="attention variant of cross-attention")
    p.add_argument("--max-update", type=int, default=650,
                   help="training updates (the default takes about 10 minutes on 2 CPU cores; raise it to train "
                        "longer)")
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per batch")
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak learning rate of the E-ATT schedule")
    p.add_argument("--warmup-updates", type=int, default=250, help="warm-up of the lr schedule")
    p.add_argument("--plateau-updates", type=int, default=650, help="end of the lr plateau")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--train-args", default="", help="extra fairseq-train arguments, as one quoted string")
    p.add_argument("--run-name", default=None, help="checkpoint folder name (default: from arch and variants)")
    args = p.parse_args(argv)
    for flag in ("max_update", "max_tokens", "bpe_merges", "beam"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return args


def log(msg: str):
    print(f"[demo] {msg}", flush=True)


def run(cmd: List[str], shown: Optional[str] = None, stdout=None):
    log("$ " + (shown or " ".join(shlex.quote(c) for c in cmd)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(cmd, stdout=stdout, env=env)
    if result.returncode != 0:
        raise SystemExit(f"[demo] command failed with exit code {result.returncode}: {cmd[2] if len(cmd) > 2 else cmd}")


def fairseq_cmd(tool: str, args: List[str]) -> List[str]:
    """Run a fairseq console script through this interpreter (same environment), shown as ``fairseq-<tool>``."""
    return [sys.executable, "-m", f"fairseq_cli.{tool}"] + args


def find_raw(raw_dir: str, split: str, lang: str) -> str:
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        path = os.path.join(raw_dir, name)
        if os.path.exists(path):
            return path
    raise SystemExit(f"[demo] --raw-dir {raw_dir}: missing {split}.{lang} (or {split}.{lang}.gz); check --raw-dir, "
                     f"--src/--tgt and the --*-split names")


def read_checksums(raw_dir: str) -> Dict[str, str]:
    path = os.path.join(raw_dir, "SHA256SUMS")
    if not os.path.exists(path):
        return {}
    sums = {}
    for line in read_lines(path):
        if line:
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def prepare_data(args) -> str:
    splits = [args.train_split, args.valid_split, args.test_split]
    langs = [args.src, args.tgt]
    sums = read_checksums(args.raw_dir)
    raw, tok, bpe = (os.path.join(args.workdir, d) for d in ("raw", "tok", f"bpe{args.bpe_merges}"))
    for split in splits:
        for lang in langs:
            name = f"{split}.{lang}"
            src = find_raw(args.raw_dir, split, lang)
            raw_path = os.path.join(raw, name)
            if not os.path.exists(raw_path):
                if src.endswith(".gz"):
                    decompress(src, raw_path, sums.get(name))
                else:
                    raw_path = src
            tok_path = os.path.join(tok, name)
            if not os.path.exists(tok_path):
                tokenize_file(raw_path, tok_path, lang, desc=f"sacremoses {name}")
    codes = os.path.join(bpe, "codes")
    if not os.path.exists(codes):
        log(f"learning {args.bpe_merges} joint BPE merges with subword-nmt")
        learn_bpe([os.path.join(tok, f"{args.train_split}.{lang}") for lang in langs], codes, args.bpe_merges)
    for split in splits:
        for lang in langs:
            out = os.path.join(bpe, f"{split}.{lang}")
            if not os.path.exists(out):
                apply_bpe_file(codes, os.path.join(tok, f"{split}.{lang}"), out, desc=f"subword-nmt {split}.{lang}")
    data_bin = os.path.join(args.workdir, f"data-bin-bpe{args.bpe_merges}")
    if not os.path.exists(os.path.join(data_bin, "dict." + args.src + ".txt")):
        tmp = data_bin + ".partial"
        if os.path.exists(tmp):
            import shutil

            shutil.rmtree(tmp)
        pre = [
            "--source-lang", args.src, "--target-lang", args.tgt,
            "--trainpref", os.path.join(bpe, args.train_split), "--validpref", os.path.join(bpe, args.valid_split),
            "--testpref", os.path.join(bpe, args.test_split), "--destdir", tmp, "--joined-dictionary",
            "--workers", str(min(2, os.cpu_count() or 1)),
        ]
        run(fairseq_cmd("preprocess", pre), "fairseq-preprocess " + " ".join(pre))
        os.replace(tmp, data_bin)
    return data_bin


def train(args, data_bin: str, save_dir: str):
    cmd = [
        data_bin, "--user-dir", PLUGIN_DIR, "--arch", args.arch, "--task", "translation",
        "--encoder-self-attention", args.encoder_self_attention,
        "--decoder-self-attention", args.decoder_self_attention,
        "--decoder-cross-attention", args.decoder_cross_attention,
        "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "1.0",
        "--lr", str(args.lr), "--lr-scheduler", "eatt", "--warmup-updates", str(args.warmup_updates),
        "--plateau-updates", str(args.plateau_updates),
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--weight-decay", "0.0001",
        "--max-tokens", str(args.max_tokens), "--max-update", str(args.max_update), "--seed", str(args.seed),
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--keep-last-epochs", "1",
        "--log-format", "simple", "--log-interval", "50", "--num-workers", "0",
    ] + shlex.split(args.train_args)
    run(fairseq_cmd("train", cmd), "fairseq-train " + " ".join(shlex.quote(c) for c in cmd))


def generate(args, data_bin: str, checkpoint: str, out_path: str) -> str:
    cmd = [
        data_bin, "--user-dir", PLUGIN_DIR, "--path", checkpoint, "--gen-subset", "test",
        "--source-lang", args.src, "--target-lang", args.tgt,
        "--beam", str(args.beam), "--lenpen", str(args.lenpen), "--batch-size", "128",
        "--required-batch-size-multiple", "1",  # fairseq 0.12 drops the last n % 8 sentences otherwise
        "--post-process", "subword_nmt", "--tokenizer", "moses", "--scoring", "sacrebleu",
    ]
    tmp = out_path + ".partial"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as handle:
        run(fairseq_cmd("generate", cmd), "fairseq-generate " + " ".join(shlex.quote(c) for c in cmd)
            + f" > {out_path}", stdout=handle)
    os.replace(tmp, out_path)
    return out_path


def score(args, gen_out: str, hyp_path: str) -> dict:
    import sacrebleu

    hyps: Dict[int, str] = {}
    fairseq_bleu = None
    with open(gen_out, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("D-"):
                idx, _, text = line.rstrip("\n").split("\t", 2)
                hyps[int(idx[2:])] = text
            elif "BLEU" in line and line.startswith("Generate"):
                fairseq_bleu = line.strip()
    refs = list(read_lines(find_raw(args.raw_dir, args.test_split, args.tgt)))
    if len(hyps) != len(refs):
        raise SystemExit(f"[demo] {gen_out}: {len(hyps)} hypotheses for {len(refs)} references")
    ordered = [hyps[i] for i in range(len(refs))]
    with open(hyp_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(ordered) + "\n")
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(ordered, [refs])
    signature = str(metric.get_signature())
    return {"bleu": round(bleu.score, 2), "bleu_str": str(bleu), "signature": signature,
            "fairseq_generate_line": fairseq_bleu}


def recipe_suffix(train_args: str) -> str:
    """``@R`` for E-ATT recipe R other than the paper's, as experiment runs are named: a checkpoint folder of one
    recipe is never resumed by a model of another (their blocks differ)."""
    from ..attention.eatt import DEFAULT_RECIPE

    words = shlex.split(train_args)
    recipe = DEFAULT_RECIPE
    for i, word in enumerate(words):
        if word == "--eatt-recipe" and i + 1 < len(words):
            recipe = words[i + 1]
        elif word.startswith("--eatt-recipe="):
            recipe = word.split("=", 1)[1]
    return "" if recipe == "paper" else f"@{recipe}"


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    os.makedirs(args.workdir, exist_ok=True)
    log(f"workdir {os.path.abspath(args.workdir)}; data from {args.raw_dir}")
    data_bin = prepare_data(args)
    t_data = time.time()
    run_name = args.run_name or re.sub(
        r"[^A-Za-z0-9_.@-]", "_",
        f"{args.arch}.{args.encoder_self_attention}-{args.decoder_self_attention}-{args.decoder_cross_attention}"
        f"{recipe_suffix(args.train_args)}.seed{args.seed}",
    )
    save_dir = os.path.join(args.workdir, "checkpoints", run_name)
    train(args, data_bin, save_dir)
    t_train = time.time()
    checkpoint = os.path.join(save_dir, "checkpoint_best.pt")
    gen_out = generate(args, data_bin, checkpoint, os.path.join(args.workdir, "generate", run_name, "test.out"))
    hyp_path = os.path.join(args.workdir, "generate", run_name, "test.detok." + args.tgt)
    result = score(args, gen_out, hyp_path)
    end = time.time()
    result.update(
        run=run_name, checkpoint=checkpoint, generate_output=gen_out, hypotheses=hyp_path,
        test_split=args.test_split, seconds_total=round(end - start, 1), seconds_data=round(t_data - start, 1),
        seconds_train=round(t_train - t_data, 1), seconds_generate_and_score=round(end - t_train, 1),
    )
    with open(os.path.join(args.workdir, "generate", run_name, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    log("=" * 70)
    log(f"sacreBLEU on {args.test_split} ({args.src}->{args.tgt}, detokenized vs raw references): {result['bleu']}")
    log(f"  {result['bleu_str']}")
    log(f"  signature: {result['signature']}")
    if result["fairseq_generate_line"]:
        log(f"  fairseq-generate's own score: {result['fairseq_generate_line']}")
    log(f"checkpoint:  {checkpoint}")
    log(f"output:      {gen_out}  (fairseq-generate, with H-/D- lines)")
    log(f"hypotheses:  {hyp_path}")
    log(f"time: {result['seconds_total']} s total ({result['seconds_data']} s data, {result['seconds_train']} s "
        f"train, {result['seconds_generate_and_score']} s generate+score)")


if __name__ == "__main__":
    main()

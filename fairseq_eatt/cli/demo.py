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
import sys
import time
from typing import Dict, List, Optional

from ..attention import DECODER_CROSS, DECODER_SELF, ENCODER_SELF
from ..fairseq_tools import (
    ToolFailed,
    fairseq_command,
    generate_scores,
    generate_to,
    model_flags,
    optimization_flags,
    read_generate_output,
    run_tool,
)
from ..data.prepare import SHIPPED_MULTI30K, bpe_and_binarize
from ..experiments.recipes import recipe_label
from ..provenance import PLUGIN_DIR, provenance
from ..data.text import atomic_output, decompress, read_lines, tokenize_file



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
    p.add_argument("--results", default=None, metavar="DIR",
                   help="also write the result (BLEU, signature, command, machine, date, commit) as DIR/RUN.json, "
                        "e.g. results/demo to commit it")
    args = p.parse_args(argv)
    for flag in ("max_update", "max_tokens", "bpe_merges", "beam"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not os.path.isdir(args.raw_dir):
        p.error(f"--raw-dir {args.raw_dir}: no such folder (it must hold SPLIT.LANG or SPLIT.LANG.gz files)")
    missing = [f"{split}.{lang}" for split in (args.train_split, args.valid_split, args.test_split)
               for lang in (args.src, args.tgt) if raw_file(args.raw_dir, split, lang) is None]
    if missing:
        p.error(f"--raw-dir {args.raw_dir}: missing {', '.join(missing)} (or .gz); check --raw-dir, --src/--tgt and "
                f"--train-split/--valid-split/--test-split")
    if args.src == args.tgt:
        p.error(f"--src and --tgt are both {args.src!r}: give the source and the target language suffixes")
    for split in dict.fromkeys((args.train_split, args.valid_split, args.test_split)):
        counts = {lang: sum(1 for _ in read_lines(raw_file(args.raw_dir, split, lang)))
                  for lang in (args.src, args.tgt)}
        if 0 in counts.values():
            empty = next(lang for lang, n in counts.items() if n == 0)
            p.error(f"--raw-dir {args.raw_dir}: {split}.{empty} is empty (one sentence per line)")
        if counts[args.src] != counts[args.tgt]:
            p.error(f"--raw-dir {args.raw_dir}: {split}.{args.src} has {counts[args.src]} lines, {split}.{args.tgt} "
                    f"{counts[args.tgt]}: a parallel corpus needs one target line per source line")
    return args


def log(msg: str):
    print(f"[demo] {msg}", flush=True)


def run(cmd: List[str], stdout_path: Optional[str] = None):
    try:
        run_tool(cmd, stdout_path=stdout_path, prefix="[demo] ")
    except ToolFailed as err:
        raise SystemExit(f"[demo] {err}") from None


def raw_file(raw_dir: str, split: str, lang: str) -> Optional[str]:
    """``SPLIT.LANG`` or ``SPLIT.LANG.gz`` in ``raw_dir``, None if neither exists."""
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        path = os.path.join(raw_dir, name)
        if os.path.exists(path):
            return path
    return None


def find_raw(raw_dir: str, split: str, lang: str) -> str:
    path = raw_file(raw_dir, split, lang)
    if path is not None:
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
    stems = {"train": args.train_split, "valid": args.valid_split, "test": args.test_split}
    data_bin = bpe_and_binarize(tok, bpe, os.path.join(args.workdir, f"data-bin-bpe{args.bpe_merges}"), args.src,
                                args.tgt, stems, args.bpe_merges, joint=True, workers=min(2, os.cpu_count() or 1))
    return data_bin


def train(args, data_bin: str, save_dir: str):
    attention = {ENCODER_SELF: args.encoder_self_attention, DECODER_SELF: args.decoder_self_attention,
                 DECODER_CROSS: args.decoder_cross_attention}
    cmd = ([data_bin] + model_flags(args.arch, attention)
           + optimization_flags(lr=args.lr, warmup_updates=args.warmup_updates, plateau_updates=args.plateau_updates,
                                max_tokens=args.max_tokens, max_update=args.max_update, seed=args.seed)
           + ["--save-dir", save_dir, "--no-epoch-checkpoints", "--keep-last-epochs", "1"]
           + shlex.split(args.train_args))
    run(fairseq_command("train", cmd))


def generate(args, data_bin: str, checkpoint: str, out_path: str) -> str:
    cmd = [
        data_bin, "--user-dir", PLUGIN_DIR, "--path", checkpoint, "--gen-subset", "test",
        "--source-lang", args.src, "--target-lang", args.tgt,
        "--beam", str(args.beam), "--lenpen", str(args.lenpen), "--batch-size", "128",
        "--required-batch-size-multiple", "1",  # fairseq 0.12 drops the last n % 8 sentences otherwise
        "--post-process", "subword_nmt", "--tokenizer", "moses", "--scoring", "sacrebleu",
    ]
    try:
        return generate_to(out_path, fairseq_command("generate", cmd), prefix="[demo] ")
    except ToolFailed as err:
        raise SystemExit(f"[demo] {err}") from None


def score(args, gen_out: str, hyp_path: str) -> dict:
    import sacrebleu

    lines = list(read_lines(gen_out))
    hyps = read_generate_output(lines)
    fairseq_bleu = generate_scores("\n".join(lines))["line"]
    refs = list(read_lines(find_raw(args.raw_dir, args.test_split, args.tgt)))
    if len(hyps) != len(refs):
        raise SystemExit(f"[demo] {gen_out}: {len(hyps)} hypotheses for {len(refs)} references")
    ordered = [hyps[i] for i in range(len(refs))]
    with atomic_output(hyp_path) as handle:
        handle.write("\n".join(ordered) + "\n")
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(ordered, [refs])
    signature = str(metric.get_signature())
    return {"bleu": round(bleu.score, 2), "bleu_str": str(bleu), "signature": signature,
            "fairseq_generate_line": fairseq_bleu}


def trained_recipe(checkpoint: str) -> str:
    """The E-ATT recipe the checkpoint was trained with, read from its saved arguments as the model reads them."""
    from types import SimpleNamespace

    from ..attention.eatt import recipe_of
    from ..compat import load_state

    state = load_state(checkpoint)
    cfg = state.get("cfg") or {}
    model = cfg.get("model") if isinstance(cfg, dict) else getattr(cfg, "model", None)
    if isinstance(model, dict):
        model = SimpleNamespace(**model)
    return recipe_of(model if model is not None else state.get("args"))


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
    return recipe_label(recipe)


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
        eatt_recipe=trained_recipe(checkpoint),
        **provenance(shlex.join(["fairseq-eatt-demo"] + list(sys.argv[1:] if argv is None else argv))),
    )
    outputs = [os.path.join(args.workdir, "generate", run_name, "result.json")]
    if args.results:
        outputs.append(os.path.join(args.results, run_name + ".json"))
    for path in outputs:
        with atomic_output(path) as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
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

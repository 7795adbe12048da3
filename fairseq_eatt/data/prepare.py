"""Prepare a corpus of the E-ATT paper: fetch, verify, tokenize, BPE, binarize, and print the Table 3 statistics.

    python -m fairseq_eatt.data.prepare iwslt15-en-vi --out data/iwslt15 [--local-dir DIR] [--bpe-merges 32000]

- fetch: each file from ``--local-dir`` when it is there (same file name), otherwise downloaded (resuming a
  partial download where the server allows it, restarting it otherwise); archives are downloaded once and the
  needed member extracted. Pinned checksums are verified; a mismatch stops with an error and leaves nothing.
- tokenize: sacremoses (a release that is already tokenized, IWSLT'15, is left as is); Chinese is segmented with
  jieba first.
- BPE with subword-nmt (32k merges by default): joint for En-Vi and En-De, one model per language for Zh-En.
- fairseq-preprocess: a joined dictionary for joint BPE (the paper shares embeddings there), separate otherwise.

Every stage writes its outputs atomically and is skipped when they exist, so an interrupted run resumes.
"""
import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
from typing import Dict, List

from tqdm import tqdm

from ..fairseq_tools import ToolFailed, fairseq_command, run_tool
from ..provenance import REPO_ROOT
from .corpora import CORPORA, Corpus, RemoteFile
from .text import apply_bpe_file, atomic_output, count_lines, learn_bpe, tokenize_file

SHIPPED_MULTI30K = os.path.join(REPO_ROOT, "data_prep", "multi30k")


def md5_of(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str):
    """Download ``url`` to ``dest`` via ``dest.partial``, resuming when the server honours Range requests."""
    partial = dest + ".partial"
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = done and getattr(response, "status", None) == 206
        mode = "ab" if resumed else "wb"
        total = response.headers.get("Content-Length")
        with open(partial, mode) as out, tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                                              desc=f"download {os.path.basename(dest)}") as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
    os.replace(partial, dest)


def fetch(spec: RemoteFile, raw_dir: str, local_dir: str, downloads: str, verify: bool) -> str:
    dest = os.path.join(raw_dir, spec.name)
    if os.path.exists(dest):
        return dest
    local = os.path.join(local_dir, spec.name) if local_dir else None
    if local and not os.path.exists(local) and os.path.exists(local + ".gz"):
        local = local + ".gz"
    cached = None
    if local and os.path.exists(local):
        source = local
    elif spec.url is None:
        raise SystemExit(f"{spec.name}: no public download (registration or a manual step is needed); put it in "
                         f"--local-dir ({local_dir or 'not given'}) under that name")
    else:  # downloads are kept (and resumed) under downloads/ until verified
        cached = source = os.path.join(downloads, os.path.basename(spec.url))
        if not os.path.exists(cached):
            os.makedirs(downloads, exist_ok=True)
            try:
                download(spec.url, cached)
            except OSError as err:  # urllib's URLError / HTTPError, timeouts: offline or the file moved
                where = f"--local-dir {local_dir} has no {spec.name} (or .gz)" if local_dir else "no --local-dir given"
                raise SystemExit(f"{spec.name}: download of {spec.url} failed ({err}); {where}: put the file "
                                 f"there under that name, or retry where {spec.url} can be reached (a partial "
                                 f"download resumes)") from None
    with atomic_output(dest, "wb") as out:
        if spec.member and source == cached:
            with tarfile.open(source) as tar:
                member = tar.extractfile(spec.member)
                if member is None:
                    raise SystemExit(f"{source}: no member {spec.member}")
                shutil.copyfileobj(member, out)
        else:
            with (gzip.open(source, "rb") if source.endswith(".gz") else open(source, "rb")) as inp:
                shutil.copyfileobj(inp, out)
        out.flush()
        if verify and spec.md5:
            actual = md5_of(out.name)
            if actual != spec.md5:
                if cached and not spec.member:
                    os.unlink(cached)  # a corrupt download is fetched again next time
                raise SystemExit(f"{spec.name}: checksum mismatch (md5 {actual}, expected {spec.md5}) in {source}; "
                                 f"the file is corrupt or a different version; nothing was written")
        elif verify:
            print(f"[prepare] note: no pinned checksum for {spec.name}; not verified", file=sys.stderr)
    return dest


def segment_zh(src: str, dst: str):
    import jieba

    jieba.setLogLevel(60)
    total = count_lines(src)
    with atomic_output(dst) as out, open(src, encoding="utf-8") as inp:
        for line in tqdm(inp, total=total, desc=f"jieba {os.path.basename(src)}", unit=" lines", mininterval=1.0):
            out.write(" ".join(w for w in jieba.cut(line.strip()) if w.strip()) + "\n")


def concatenate(paths: List[str], dst: str):
    with atomic_output(dst, "wb") as out:
        for path in paths:
            with open(path, "rb") as inp:
                shutil.copyfileobj(inp, out)


def bpe_codes_path(bpe: str, langs) -> str:
    """The subword-nmt codes learned on ``langs`` (both languages for joint BPE)."""
    return os.path.join(bpe, "codes." + "-".join(langs))


def bpe_and_binarize(tok: str, bpe: str, data_bin: str, src: str, tgt: str, stems: Dict[str, str], merges: int,
                     joint: bool, workers: int = 1) -> str:
    """Learn BPE on the tokenized training text in ``tok`` (jointly or per language), apply it to every split and
    binarize with fairseq-preprocess (a joined dictionary with joint BPE). ``stems``: the file stem of fairseq's
    train, valid and test splits (``tok/<stem>.<lang>``). Each step is skipped when its output exists."""
    langs = (src, tgt)
    for group in ([langs] if joint else [(lang,) for lang in langs]):
        codes = bpe_codes_path(bpe, group)
        if not os.path.exists(codes):
            print(f"[prepare] learning {merges} BPE merges on {'+'.join(group)}", flush=True)
            learn_bpe([os.path.join(tok, f"{stems['train']}.{lang}") for lang in group], codes, merges)
        for lang in group:
            for stem in dict.fromkeys(stems.values()):
                out = os.path.join(bpe, f"{stem}.{lang}")
                if not os.path.exists(out):
                    apply_bpe_file(codes, os.path.join(tok, f"{stem}.{lang}"), out, desc=f"subword-nmt {stem}.{lang}")
    if not os.path.exists(os.path.join(data_bin, f"dict.{tgt}.txt")):
        partial = data_bin + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        args = ["--source-lang", src, "--target-lang", tgt, "--trainpref", os.path.join(bpe, stems["train"]),
                "--validpref", os.path.join(bpe, stems["valid"]), "--testpref", os.path.join(bpe, stems["test"]),
                "--destdir", partial, "--workers", str(workers)] + (["--joined-dictionary"] if joint else [])
        try:
            run_tool(fairseq_command("preprocess", args), prefix="[prepare] ")
        except ToolFailed as err:
            shutil.rmtree(partial, ignore_errors=True)
            raise SystemExit(f"[prepare] {err}") from None
        os.replace(partial, data_bin)
    return data_bin


def prepare(corpus: Corpus, out_dir: str, local_dir: str = None, merges: int = None, verify: bool = True,
            workers: int = 1) -> Dict:
    merges = merges or corpus.bpe_merges
    raw, tok, bpe = (os.path.join(out_dir, d) for d in ("raw", "tok", f"bpe{merges}"))
    downloads = os.path.join(out_dir, "downloads")
    for spec in corpus.files:
        fetch(spec, raw, local_dir, downloads, verify)
    langs = (corpus.src, corpus.tgt)
    for split, stems in corpus.splits.items():
        for lang in langs:
            joined = os.path.join(raw, f"{split}.{lang}.joined")
            if not os.path.exists(joined):
                concatenate([os.path.join(raw, f"{stem}.{lang}") for stem in stems], joined)
            target = os.path.join(tok, f"{split}.{lang}")
            if os.path.exists(target):
                continue
            if lang == "zh" and corpus.segment_zh:
                segment_zh(joined, target)
            elif corpus.tokenized:
                concatenate([joined], target)
            else:
                tokenize_file(joined, target, lang, desc=f"sacremoses {split}.{lang}")
    data_bin = bpe_and_binarize(tok, bpe, os.path.join(out_dir, f"data-bin-bpe{merges}"), corpus.src, corpus.tgt,
                                {"train": "train", "valid": "valid", "test": "test"}, merges, corpus.joint_bpe,
                                workers)
    stats = {split: count_lines(os.path.join(tok, f"{split}.{corpus.src}")) for split in corpus.splits}
    return {"corpus": corpus.name, "data_bin": data_bin, "examples": stats, "paper": corpus.paper_counts}


def table3(result: Dict) -> str:
    lines = ["| split | examples (built) | paper's Table 3 |", "|---|---|---|"]
    for split, n in result["examples"].items():
        lines.append(f"| {split} | {n:,} | {result['paper'].get(split, '-')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fairseq_eatt.data.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", choices=sorted(CORPORA))
    p.add_argument("--out", required=True, help="output directory (raw, tok, bpe, data-bin)")
    p.add_argument("--local-dir", help="directory holding the corpus files (same names, optionally .gz); used "
                   "instead of downloads (multi30k-en-de defaults to the copy shipped in data_prep/multi30k)")
    p.add_argument("--bpe-merges", type=int, default=None, help="BPE merge operations (default: the paper's 32000)")
    p.add_argument("--skip-checksum", action="store_true",
                   help="do not verify pinned checksums (e.g. for a subset of a file); a warning is printed")
    p.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    args = p.parse_args(argv)
    if args.bpe_merges is not None and args.bpe_merges <= 0:
        p.error(f"--bpe-merges must be positive, got {args.bpe_merges}")
    if args.local_dir is None and args.corpus == "multi30k-en-de":
        args.local_dir = SHIPPED_MULTI30K
    if args.local_dir and not os.path.isdir(args.local_dir):
        p.error(f"--local-dir {args.local_dir}: no such directory")
    if args.skip_checksum:
        print("[prepare] warning: --skip-checksum: pinned checksums are not verified", file=sys.stderr)
    result = prepare(CORPORA[args.corpus], args.out, args.local_dir, args.bpe_merges, not args.skip_checksum,
                     args.workers)
    text = f"Table 3 statistics of {args.corpus} as built in {args.out}\n\n" + table3(result)
    with atomic_output(os.path.join(args.out, "table3.md")) as handle:
        handle.write(text)
    print(text, end="")
    print(f"binarized data: {result['data_bin']}")


if __name__ == "__main__":
    main()

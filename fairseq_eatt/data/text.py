"""Text preparation steps shared by the demo and the data-preparation commands.

Every step writes its output atomically (a temporary file renamed into place when complete), so an interrupted
run never leaves a half-written file that a later run would take as finished.
"""
import contextlib
import gzip
import hashlib
import os
import tempfile
from collections import Counter
from typing import Iterable, Iterator, List, Optional, Sequence

from tqdm import tqdm


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w"):
    """Open a temporary file next to ``path``; move it to ``path`` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_text(path: str):
    """Open a UTF-8 text file, gzip-compressed or not."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def count_lines(path: str) -> int:
    with open_text(path) as handle:
        return sum(1 for _ in handle)


def read_lines(path: str) -> Iterator[str]:
    """Lines without surrounding whitespace (raw corpora carry stray tabs and trailing spaces)."""
    with open_text(path) as handle:
        for line in handle:
            yield line.strip()


def decompress(src: str, dst: str, expected_sha256: Optional[str] = None):
    """Gunzip ``src`` to ``dst`` atomically; on a checksum mismatch nothing is written."""
    digest = hashlib.sha256()
    with atomic_output(dst, "wb") as out, gzip.open(src, "rb") as inp:
        for block in iter(lambda: inp.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise ValueError(f"{src}: checksum mismatch (sha256 of the content {digest.hexdigest()}, expected "
                             f"{expected_sha256}); the file is corrupt, fetch it again")


def _moses(lang: str):
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return lambda line: tokenizer.tokenize(normalizer.normalize(line), escape=False, return_str=True)


def tokenize_lines(lines: Iterable[str], lang: str) -> List[str]:
    """Moses punctuation normalization and tokenization (sacremoses), without HTML escaping."""
    tokenize = _moses(lang)
    return [tokenize(line.strip()) for line in lines]


def tokenize_file(src: str, dst: str, lang: str, desc: Optional[str] = None):
    """:func:`tokenize_lines` over a file, one sentence per line, with a progress bar."""
    tokenize = _moses(lang)
    total = count_lines(src)
    with atomic_output(dst) as out:
        for line in tqdm(read_lines(src), total=total, desc=desc or f"tokenize {os.path.basename(src)}",
                         unit=" lines", mininterval=1.0):
            out.write(tokenize(line) + "\n")


def learn_bpe(files: Sequence[str], codes_path: str, merges: int, min_frequency: int = 2):
    """Learn BPE merges with subword-nmt over the words of ``files`` (joint BPE when several files are given)."""
    from subword_nmt.learn_bpe import learn_bpe as subword_learn_bpe

    vocab: Counter = Counter()
    for path in files:
        for line in read_lines(path):
            vocab.update(line.split())
    dictionary = [f"{word} {count}" for word, count in vocab.items()]
    with atomic_output(codes_path) as out:
        subword_learn_bpe(dictionary, out, merges, min_frequency=min_frequency, verbose=False, is_dict=True,
                          num_workers=1)


def apply_bpe_file(codes_path: str, src: str, dst: str, desc: Optional[str] = None):
    from subword_nmt.apply_bpe import BPE

    with open(codes_path, encoding="utf-8") as codes:
        bpe = BPE(codes)
    total = count_lines(src)
    with atomic_output(dst) as out:
        for line in tqdm(read_lines(src), total=total, desc=desc or f"apply BPE {os.path.basename(src)}",
                         unit=" lines", mininterval=1.0):
            out.write(bpe.process_line(line) + "\n")

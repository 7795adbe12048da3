"""Data preparation, offline: local files in place of downloads, checksums, resumable downloads, Table 3 stats.

The real IWSLT'15 dev/test sets and first 1,000 training pairs in ../shared/data stand in for the full corpus."""
import gzip
import hashlib
import io
import os
import shutil
import tarfile

import pytest

from fairseq_eatt.data import prepare as prep
from fairseq_eatt.data.corpora import CORPORA, RemoteFile

from .helpers import REPO_ROOT

SHARED = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
IWSLT = os.path.join(SHARED, "iwslt15-en-vi")
needs_shared = pytest.mark.skipif(not os.path.isdir(IWSLT), reason="../shared/data is not beside the repository")


def iwslt_local(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for lang in ("en", "vi"):
        shutil.copy(os.path.join(IWSLT, f"train.first1000.{lang}"), local / f"train.{lang}")
        for split in ("tst2012", "tst2013"):
            shutil.copy(os.path.join(IWSLT, f"{split}.{lang}"), local / f"{split}.{lang}")
    return local


@needs_shared
def test_iwslt_offline_from_a_local_directory(tmp_path, capsys):
    out = tmp_path / "out"
    prep.main(["iwslt15-en-vi", "--out", str(out), "--local-dir", str(iwslt_local(tmp_path)), "--bpe-merges", "300",
               "--skip-checksum"])
    text = capsys.readouterr().out
    assert "| train | 1,000 |" in text and "| valid | 1,553 |" in text and "| test | 1,268 |" in text
    data_bin = out / "data-bin-bpe300"
    assert (data_bin / "dict.en.txt").read_text() == (data_bin / "dict.vi.txt").read_text()  # joined dictionary
    assert (data_bin / "test.en-vi.vi.bin").exists()
    # the release is already tokenized: left as is (no second tokenization of &apos; escapes)
    assert (out / "tok" / "test.en").read_text() == open(os.path.join(IWSLT, "tst2013.en")).read()
    assert not list(out.glob("**/.tmp-*")) and not list(out.glob("**/*.partial"))


@needs_shared
def test_checksum_mismatch_stops_and_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"train.en: checksum mismatch .*nothing was written"):
        prep.main(["iwslt15-en-vi", "--out", str(out), "--local-dir", str(iwslt_local(tmp_path))])
    assert not (out / "raw" / "train.en").exists()
    assert not list(out.glob("**/.tmp-*"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_restarts_an_interrupted_partial_and_verifies(tmp_path):
    payload = b"one line\nanother line\n" * 100
    remote = tmp_path / "remote.txt"
    remote.write_bytes(payload)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "remote.txt.partial").write_bytes(b"garbage from an interrupted run")
    spec = RemoteFile("corpus.en", remote.as_uri(), md5(payload))
    path = prep.fetch(spec, str(tmp_path / "raw"), None, str(downloads), verify=True)
    assert open(path, "rb").read() == payload  # file:// cannot resume: the partial download was restarted
    bad = RemoteFile("other.en", remote.as_uri(), md5(b"something else"))
    with pytest.raises(SystemExit, match="checksum mismatch"):
        prep.fetch(bad, str(tmp_path / "raw2"), None, str(tmp_path / "dl2"), verify=True)
    assert not (tmp_path / "raw2" / "other.en").exists()
    assert not (tmp_path / "dl2" / "remote.txt").exists()  # the corrupt download is fetched again next time


def test_archive_members_and_gzip(tmp_path):
    member = b"ein Satz\n"
    archive = tmp_path / "corpus.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("training/corpus.de")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    spec = RemoteFile("corpus.de", archive.as_uri(), md5(member), member="training/corpus.de")
    assert open(prep.fetch(spec, str(tmp_path / "raw"), None, str(tmp_path / "dl"), True), "rb").read() == member
    local = tmp_path / "local"
    local.mkdir()
    with gzip.open(local / "x.en.gz", "wb") as handle:
        handle.write(b"a b\n")
    got = prep.fetch(RemoteFile("x.en", None, md5(b"a b\n")), str(tmp_path / "raw"), str(local), "", True)
    assert open(got, "rb").read() == b"a b\n"


def test_missing_manual_file_names_the_option(tmp_path):
    spec = CORPORA["wmt17-zh-en"].files[2]  # the UN corpus needs registration
    with pytest.raises(SystemExit, match="--local-dir"):
        prep.fetch(spec, str(tmp_path / "raw"), None, str(tmp_path / "dl"), True)


@needs_shared
def test_chinese_is_segmented_with_jieba(tmp_path):
    src = tmp_path / "zh.txt"
    with open(os.path.join(SHARED, "wmt17-zh-en-test", "newstest2017.zh"), encoding="utf-8") as handle:
        src.write_text("".join(next(handle) for _ in range(5)), encoding="utf-8")
    prep.segment_zh(str(src), str(tmp_path / "zh.seg"))
    lines = (tmp_path / "zh.seg").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and all(" " in line for line in lines)


@pytest.mark.e2e
def test_multi30k_from_the_shipped_copy_with_checksums(tmp_path, capsys):
    prep.main(["multi30k-en-de", "--out", str(tmp_path), "--bpe-merges", "500"])
    text = capsys.readouterr().out
    assert "| train | 29,000 |" in text and "| valid | 1,014 |" in text and "| test | 1,000 |" in text
    assert (tmp_path / "data-bin-bpe500" / "dict.de.txt").exists()


@pytest.mark.parametrize("script,corpus", [("prepare-iwslt15-en-vi.sh", "iwslt15-en-vi"),
                                           ("prepare-wmt14-en-de.sh", "wmt14-en-de"),
                                           ("prepare-wmt17-zh-en.sh", "wmt17-zh-en"),
                                           ("prepare-multi30k.sh", "multi30k-en-de")])
def test_data_prep_has_one_script_per_corpus(script, corpus, tmp_path):
    """Each script runs fairseq_eatt.data.prepare on its corpus, into OUT (default data/CORPUS), options passed."""
    import subprocess

    from fairseq_eatt.data.corpora import CORPORA

    path = os.path.join(REPO_ROOT, "data_prep", script)
    assert corpus in CORPORA and os.access(path, os.X_OK)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text("#!/bin/sh\necho \"$@\"\n")
    (shim / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", PYTHON=str(shim / "python"))
    script_text = open(path).read().replace('source "$(dirname "$0")/common.sh"',
                                            f'source {REPO_ROOT}/data_prep/common.sh; PY={shim}/python')
    runs = [subprocess.run(["bash", "-c", script_text, "x", *args], capture_output=True, text=True, env=env,
                           check=True).stdout.strip() for args in ([], ["out/dir", "--bpe-merges", "500"])]
    assert runs[0] == f"-m fairseq_eatt.data.prepare {corpus} --out data/{corpus}"
    assert runs[1] == f"-m fairseq_eatt.data.prepare {corpus} --out out/dir --bpe-merges 500"


def test_a_file_neither_local_nor_reachable_names_the_url_and_the_local_dir(tmp_path):
    """Offline (or a moved file): the error names the file, its URL and --local-dir, and leaves nothing."""
    local = tmp_path / "local"
    local.mkdir()
    spec = RemoteFile("corpus.en", (tmp_path / "nowhere" / "corpus.en").as_uri(), md5(b"x"))
    with pytest.raises(SystemExit, match=r"corpus\.en: download of file:.*failed .*--local-dir .*local has no "
                                         r"corpus\.en"):
        prep.fetch(spec, str(tmp_path / "raw"), str(local), str(tmp_path / "dl"), True)
    assert not (tmp_path / "raw" / "corpus.en").exists() and not list((tmp_path / "dl").glob("*"))

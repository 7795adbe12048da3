"""The corpora of the E-ATT paper, as data: where each file comes from, its checksum, and how it is prepared.

Checksums are pinned where a trustworthy copy was available (each corpus's SOURCE.md says where from): the IWSLT'15
En-Vi training set (md5 published with the release mirrors), its dev/test sets and the WMT test sets. The WMT
training archives could not be obtained here; their checksums are not pinned, and the preparation says so when
it uses them. A local directory (``--local-dir``) replaces downloading file by file, under the same names.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class RemoteFile:
    name: str  # local file name
    url: Optional[str]  # None: must be supplied with --local-dir
    md5: Optional[str] = None  # None: checksum not pinned
    member: Optional[str] = None  # path inside an archive at ``url``
    gzipped: bool = False  # ``url`` (and a local ``name.gz``) hold the file gzip-compressed


@dataclass(frozen=True)
class Corpus:
    name: str
    src: str
    tgt: str
    splits: Dict[str, Tuple[str, ...]]  # split -> file stems (several stems are concatenated)
    files: Tuple[RemoteFile, ...]
    tokenized: bool  # the release is already Moses-tokenized: leave it as is
    joint_bpe: bool  # one BPE model for both languages (and a joined dictionary)
    bpe_merges: int = 32000
    segment_zh: bool = False
    paper_counts: Dict[str, str] = field(default_factory=dict)  # the paper's Table 3 row


STANFORD = "https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/"
MULTI30K = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
STATMT = "https://www.statmt.org/wmt14/"

CORPORA: Dict[str, Corpus] = {
    "multi30k-en-de": Corpus(  # shipped in data_prep/multi30k (gzip); the official repository otherwise
        name="multi30k-en-de", src="en", tgt="de",
        splits={"train": ("train",), "valid": ("val",), "test": ("test_2016_flickr",)},
        files=tuple(
            RemoteFile(f"{stem}.{lang}", f"{MULTI30K}{stem}.{lang}.gz", md5, gzipped=True)
            for stem, lang, md5 in (
                ("train", "en", "053a34ece7c904dbc8c7361799afbe4c"),
                ("train", "de", "d3b4bc1671cfb805267f97f16884beba"),
                ("val", "en", "2234730e7925354b766681b029b347ec"), ("val", "de", "9f139b15d9d11936dea7af2904e57d8c"),
                ("test_2016_flickr", "en", "2022a6c31e2418047a0511333d55ed42"),
                ("test_2016_flickr", "de", "cde61d7401b116652ee84099c7858ca3"),
            )
        ),
        tokenized=False, joint_bpe=True, bpe_merges=10000,
        paper_counts={"train": "(not in the paper)", "valid": "-", "test": "-"},
    ),
    "iwslt15-en-vi": Corpus(
        name="iwslt15-en-vi", src="en", tgt="vi",
        splits={"train": ("train",), "valid": ("tst2012",), "test": ("tst2013",)},
        files=(
            RemoteFile("train.en", STANFORD + "train.en", "5b6300f46160ab5a7a995546d2eeb9e6"),
            RemoteFile("train.vi", STANFORD + "train.vi", "858e884484885af5775068140ae85dab"),
            RemoteFile("tst2012.en", STANFORD + "tst2012.en", "c14a0955ed8b8d6929fdabf4606e3875"),
            RemoteFile("tst2012.vi", STANFORD + "tst2012.vi", "dddf990faa149e980b11a36fca4a8898"),
            RemoteFile("tst2013.en", STANFORD + "tst2013.en", "c41c43cb6d3b122c093ee89608ba62bd"),
            RemoteFile("tst2013.vi", STANFORD + "tst2013.vi", "a3185b00264620297901b647a4cacf38"),
        ),
        tokenized=True, joint_bpe=True,
        paper_counts={"train": "13.3K (sic; the release has 133,317)", "valid": "1,553", "test": "1,268"},
    ),
    "wmt14-en-de": Corpus(
        name="wmt14-en-de", src="en", tgt="de",
        splits={"train": ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v9.de-en"),
                "valid": ("newstest2013",), "test": ("newstest2014",)},
        files=(
            RemoteFile("europarl-v7.de-en.en", STATMT + "training-parallel-europarl-v7.tgz",
                       member="training/europarl-v7.de-en.en"),
            RemoteFile("europarl-v7.de-en.de", STATMT + "training-parallel-europarl-v7.tgz",
                       member="training/europarl-v7.de-en.de"),
            RemoteFile("commoncrawl.de-en.en", STATMT + "training-parallel-commoncrawl.tgz",
                       member="commoncrawl.de-en.en"),
            RemoteFile("commoncrawl.de-en.de", STATMT + "training-parallel-commoncrawl.tgz",
                       member="commoncrawl.de-en.de"),
            RemoteFile("news-commentary-v9.de-en.en", STATMT + "training-parallel-nc-v9.tgz",
                       member="training/news-commentary-v9.de-en.en"),
            RemoteFile("news-commentary-v9.de-en.de", STATMT + "training-parallel-nc-v9.tgz",
                       member="training/news-commentary-v9.de-en.de"),
            RemoteFile("newstest2013.en", None, "23be23d7b9bd5ad1f2ebd076484332c9"),
            RemoteFile("newstest2013.de", None, "872891e01855b43f2a87155e0c1d2076"),
            RemoteFile("newstest2014.en", None, "dabf51a9c02b2235632f3cee75c72d49"),
            RemoteFile("newstest2014.de", None, "f6c3818b477e4a25cad68b61cc883c17"),
        ),
        tokenized=False, joint_bpe=True,
        paper_counts={"train": "4.50M", "valid": "3,000", "test": "3,003"},
    ),
    "wmt17-zh-en": Corpus(
        name="wmt17-zh-en", src="zh", tgt="en",
        splits={"train": ("news-commentary-v12.zh-en", "UNv1.0.en-zh", "casia2015"),
                "valid": ("newsdev2017",), "test": ("newstest2017",)},
        files=(
            RemoteFile("news-commentary-v12.zh-en.zh", "https://data.statmt.org/wmt17/translation-task/"
                       "training-parallel-nc-v12.tgz", member="training/news-commentary-v12.zh-en.zh"),
            RemoteFile("news-commentary-v12.zh-en.en", "https://data.statmt.org/wmt17/translation-task/"
                       "training-parallel-nc-v12.tgz", member="training/news-commentary-v12.zh-en.en"),
            RemoteFile("UNv1.0.en-zh.zh", None),  # UN corpus: registration required, supply with --local-dir
            RemoteFile("UNv1.0.en-zh.en", None),
            RemoteFile("casia2015.zh", None),  # CWMT parts: supply with --local-dir
            RemoteFile("casia2015.en", None),
            RemoteFile("newsdev2017.zh", None),
            RemoteFile("newsdev2017.en", None),
            RemoteFile("newstest2017.zh", None, "d49fe7bf454b63eac23c9fba222cd95b"),
            RemoteFile("newstest2017.en", None, "0f1fae99a2f567576f887f69c8a24b71"),
        ),
        tokenized=False, joint_bpe=False, segment_zh=True,
        paper_counts={"train": "20.6M", "valid": "2,002", "test": "2,001"},
    ),
}

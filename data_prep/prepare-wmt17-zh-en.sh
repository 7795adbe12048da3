#!/usr/bin/env bash
# WMT'17 Chinese-English (newsdev2017 dev, newstest2017 test; jieba segmentation for Chinese; one BPE model
# per language),
# ready for fairseq-train: data/wmt17-zh-en/data-bin (or OUT/data-bin).
#   bash data_prep/prepare-wmt17-zh-en.sh [OUT] [--local-dir DIR] [--bpe-merges N] [--skip-checksum] [--workers N]
# Downloads what --local-dir does not hold, verifies the pinned checksums, and resumes where it stopped.
source "$(dirname "$0")/common.sh"
prepare_corpus wmt17-zh-en "$@"

#!/usr/bin/env bash
# WMT'14 English-German (newstest2013 dev, newstest2014 test; 32k joint BPE merges),
# ready for fairseq-train: data/wmt14-en-de/data-bin (or OUT/data-bin).
#   bash data_prep/prepare-wmt14-en-de.sh [OUT] [--local-dir DIR] [--bpe-merges N] [--skip-checksum] [--workers N]
# Downloads what --local-dir does not hold, verifies the pinned checksums, and resumes where it stopped.
source "$(dirname "$0")/common.sh"
prepare_corpus wmt14-en-de "$@"

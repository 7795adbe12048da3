#!/usr/bin/env bash
# IWSLT'15 English-Vietnamese (Stanford's release, tokenized; 32k joint BPE merges),
# ready for fairseq-train: data/iwslt15-en-vi/data-bin (or OUT/data-bin).
#   bash data_prep/prepare-iwslt15-en-vi.sh [OUT] [--local-dir DIR] [--bpe-merges N] [--skip-checksum] [--workers N]
# Downloads what --local-dir does not hold, verifies the pinned checksums, and resumes where it stopped.
source "$(dirname "$0")/common.sh"
prepare_corpus iwslt15-en-vi "$@"

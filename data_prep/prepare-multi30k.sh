#!/usr/bin/env bash
# Multi30k English-German (shipped in data_prep/multi30k: no download),
# ready for fairseq-train: data/multi30k-en-de/data-bin (or OUT/data-bin).
#   bash data_prep/prepare-multi30k.sh [OUT] [--local-dir DIR] [--bpe-merges N] [--skip-checksum] [--workers N]
# Downloads what --local-dir does not hold, verifies the pinned checksums, and resumes where it stopped.
source "$(dirname "$0")/common.sh"
prepare_corpus multi30k-en-de "$@"

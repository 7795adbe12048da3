#!/usr/bin/env bash
# Every registered attention variant in every position it supports: quality, parameters, energy.
#   bash examples/variants.sh          paper scale: IWSLT'15 En-Vi (GPU)
#   bash examples/variants.sh small    Multi30k En-De on a 2-core CPU
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe variants "$@"

#!/usr/bin/env bash
# Table 6 of the E-ATT paper: {vanilla, Dense, RandInit, E-ATT} as self- x cross-attention (16 runs).
#   bash examples/table6.sh            paper scale: IWSLT'15 En-Vi (GPU)
#   bash examples/table6.sh small      Multi30k En-De on a 2-core CPU (about 2 hours with --jobs 2)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe table6 "$@"

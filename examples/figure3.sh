#!/usr/bin/env bash
# Figure 3 of the E-ATT paper: ratio of nonzero binarized values per layer and position.
#   bash examples/figure3.sh [small]   (uses the E-ATT runs of Table 4, every seed)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe figure3 "$@"

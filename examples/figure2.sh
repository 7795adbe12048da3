#!/usr/bin/env bash
# Figure 2 of the E-ATT paper: cross-attention heat maps of the vanilla and E-ATT models.
#   bash examples/figure2.sh [small] [--sentence N]
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe figure2 "$@"

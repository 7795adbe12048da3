#!/usr/bin/env bash
# Tables 1, 2 and 7 of the E-ATT paper (energy), for every variant and hybrid, from the declared
# operation counts; no training, the scale does not matter. Writes results/energy.md.
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe energy "$@"

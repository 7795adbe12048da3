#!/usr/bin/env bash
# The survey's techniques (issue 19) on vanilla and E-ATT: binary/ternary weights, encoder token pruning, early exit.
#   bash examples/techniques.sh small --jobs 2     Multi30k En-De on a 2-core CPU:
#     1. vanilla and E-ATT alone and with each technique (fairseq-eatt-experiment techniques, 650 updates),
#     2. their curves (BLEU vs kept ratio, vs mean exit depth) and comparison rows with decoding energy
#        (fairseq-eatt-techniques -> results/techniques.md, techniques_prune.png, techniques_exit.png).
#   bash examples/techniques.sh paper ...          step 1 at the paper's scale (GPU); step 2 reads small-scale runs
# Options after the scale go to fairseq-eatt-experiment (--jobs, --configs, --only, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe techniques "$@"
jobs=1 previous=""
for arg in "$@"; do
  if [[ "$previous" == --jobs ]]; then jobs="$arg"; fi
  previous="$arg"
done
if [[ "${1:-paper}" == small && " $* " != *" --dry-run "* ]]; then
  "$PY" -m fairseq_eatt.cli.techniques --jobs "$jobs" --out results/techniques
fi

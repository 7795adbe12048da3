#!/usr/bin/env bash
# Table 5 of the E-ATT paper: ablations (discrete selection only, L1 distance only), dev BLEU.
#   bash examples/table5.sh            paper scale: IWSLT'15 En-Vi (GPU)
#   bash examples/table5.sh small      Multi30k En-De on a 2-core CPU (shares the vanilla/E-ATT runs of Table 4)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe table5 "$@"

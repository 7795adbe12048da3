#!/usr/bin/env bash
# Table 4 of the E-ATT paper: vanilla attention vs E-ATT, test BLEU mean and std over seeds.
#   bash examples/table4.sh            paper scale: IWSLT'15 En-Vi, WMT'14 En-De, WMT'17 Zh-En, 5 seeds (GPUs)
#   bash examples/table4.sh small      Multi30k En-De, 3 seeds, 2-core CPU (about 50 minutes with --jobs 2)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe table4 "$@"

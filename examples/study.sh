#!/usr/bin/env bash
# The E-ATT study (issue 15): which configuration closes E-ATT's gap to vanilla attention, by measurement.
#   bash examples/study.sh small --jobs 2     Multi30k En-De on a 2-core CPU:
#     1. every lever alone and combined at the demo budget (650 updates; fairseq-eatt-experiment study),
#     2. vanilla, the paper's E-ATT and eatt+authors at 4,000 updates with dev BLEU every 500 (study-long;
#        choose others with --configs, e.g. --configs vanilla+prenorm,eatt+authors),
#     3. fairseq-eatt-diagnose on every study run whose checkpoint is on this machine (study-diagnose).
#   bash examples/study.sh paper ...          the same at the paper's scale (GPU; curves every 5,000 updates)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --configs, --only, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe study "$@"
run_recipe study-long "$@"
run_recipe study-diagnose "$@"

#!/usr/bin/env bash
# Figure 1 of the E-ATT paper: sequence-level distillation into vanilla and E-ATT students whose
# dimension is halved step by step; BLEU against energy.
#   bash examples/figure1.sh           paper scale: En-Vi, students d = 512, 256, 128, 64 (GPU)
#   bash examples/figure1.sh small     Multi30k, students d = 256, 128, 64 with 3+3 layers (2-core CPU)
# Options after the scale go to fairseq-eatt-experiment (--jobs, --seeds, --train-args, --local-dir, --dry-run...).
source "$(dirname "$0")/common.sh"
run_recipe figure1 "$@"

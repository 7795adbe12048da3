#!/usr/bin/env bash
# E-ATT's verdict with intervals at the longer budget, and the two roads from a vanilla model (issue 29).
#   bash examples/verdict.sh small --jobs 2      Multi30k En-De on a 2-core CPU, in this order (each step resumable;
#                                                a finished run is skipped):
#     1. the default's Table 4 rows at 4,000 updates: vanilla and E-ATT in pre-norm blocks, seeds 1-3, dev BLEU
#        every 500 updates (the vanilla runs are the teachers of steps 2-3);
#     2. conversion: E-ATT built from each vanilla seed (fairseq-eatt-convert), fine-tuned 2,000 updates, BLEU after
#        0, 250, 500, 1,000, 2,000 (study-convert);
#     3. distillation: E-ATT and vanilla trained on the translations of the training set by the vanilla teacher
#        of seed 2 (kept gzipped in results/study/long/<task>/distilled/: students train without the teacher);
#     4. the levers at 4,000 updates in pre-norm blocks (the authors' recipe, tau 0, a learned temperature,
#        cross-attention tau 0), seed 1.
#   Then: three seeds for the best two levers by dev BLEU (results/study/verdict.md), e.g.
#     bash examples/verdict.sh small --jobs 2 --seeds 2,3 --configs eatt+prenorm+tau0,eatt+authors --levers-only
#   bash examples/verdict.sh paper ...           the same at the paper's scale (GPU)
# Every step ends with fairseq-eatt-aggregate --eatt-recipe paper, which writes results/study/verdict.md (every
# comparison with its 95% interval) and results/study/convert.md.
source "$(dirname "$0")/common.sh"
if [[ " $* " == *" --levers-only "* ]]; then
  args=(); for a in "$@"; do [[ "$a" != --levers-only ]] && args+=("$a"); done
  run_recipe study-long "${args[@]}"
  exit 0
fi
scale="paper"; if [[ $# -gt 0 && ( "$1" == paper || "$1" == small ) ]]; then scale="$1"; shift; fi
run_recipe study-long "$scale" --seeds 1,2,3 --configs vanilla+prenorm,eatt+prenorm "$@"
run_recipe study-convert "$scale" --seeds 1,2,3 "$@"
run_recipe study-long "$scale" --seeds 2 --configs eatt+prenorm+kd,vanilla+prenorm+kd "$@"
run_recipe study-long "$scale" --seeds 1 \
  --configs eatt+authors,eatt+prenorm+tau0,eatt+prenorm+temperature,eatt+prenorm+cross-tau0 "$@"

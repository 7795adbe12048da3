#!/usr/bin/env bash
# E-ATT deployed on a CPU against CTranslate2 running a vanilla transformer of the same shape, trained the same way:
#   1. the demo's E-ATT checkpoint (make demo: transformer_eatt_small, 650 updates), trained here if absent;
#   2. a stock fairseq transformer (--arch transformer) of the demo's shape (d 256, ffn 1024, 4 heads, 3+3 layers,
#      pre-norm, shared embeddings, dropout 0.3) with the demo's optimization, on the demo's data;
#   3. fairseq-eatt-deploy-bench: every deployed way of E-ATT and CTranslate2 float32 / int8 of the vanilla model,
#      batch 1 and batch 32, beam 4, one thread, the first LIMIT test sentences -> results/deploy_anchor.{md,json}.
# Needs the [deploy] extra (pip install "fairseq-eatt[deploy]": ctranslate2, no torch).
#   bash examples/deploy.sh [LIMIT]   (default 300)
source "$(dirname "$0")/common.sh"
LIMIT="${1:-300}"
cd "$REPO"
DEMO=work/demo
DATA="$DEMO/data-bin-bpe8000"
EATT="$DEMO/checkpoints/transformer_eatt_small.eatt-eatt-eatt@paper-prenorm.seed1/checkpoint_best.pt"
VANILLA_DIR="$DEMO/checkpoints/stock-transformer-small.seed1"
if [[ ! -f "$EATT" ]]; then "$PY" -m fairseq_eatt.cli.demo; fi
if [[ ! -f "$VANILLA_DIR/checkpoint_best.pt" ]]; then
  "$PY" -m fairseq_cli.train "$DATA" --user-dir fairseq_eatt --task translation --arch transformer \
    --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
    --encoder-attention-heads 4 --decoder-attention-heads 4 --encoder-layers 3 --decoder-layers 3 \
    --encoder-normalize-before --decoder-normalize-before --share-all-embeddings --dropout 0.3 \
    --optimizer adam --adam-betas "(0.9, 0.98)" --clip-norm 1.0 --weight-decay 0.0001 --lr 0.0015 \
    --lr-scheduler eatt --warmup-updates 250 --plateau-updates 650 --criterion label_smoothed_cross_entropy \
    --label-smoothing 0.1 --max-tokens 2048 --max-update 650 --seed 1 --log-format simple --log-interval 50 \
    --num-workers 0 --no-epoch-checkpoints --save-dir "$VANILLA_DIR"
fi
"$PY" -m fairseq_eatt.cli.deploy_bench "$DATA" --path "$EATT" --source "$DEMO/bpe8000/test_2016_flickr.en" \
  --reference "$DEMO/raw/test_2016_flickr.de" --beam 4 --limit "$LIMIT" --batch-sizes 1,32 \
  --anchor "$VANILLA_DIR/checkpoint_best.pt" --out results/deploy_anchor \
  --note "the demo's E-ATT checkpoint against a stock transformer of its shape through CTranslate2 (650 updates each)"

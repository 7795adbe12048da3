#!/bin/bash
# Issue 18 device run 2: vanilla training energy (E-ATT's came from run 1) and vanilla vs E-ATT decoding energy at
# equal work (hypotheses forced to the source length), NVML counter, idle baseline subtracted.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG="$OUT/run2.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu18/code PYTHONUNBUFFERED=1
cd .gpu18
train() {  # variant updates extra...
  python3 -m fairseq_cli.train data --user-dir code/fairseq_eatt --arch transformer_eatt --encoder-self-attention $1 \
    --decoder-self-attention $1 --decoder-cross-attention $1 --share-all-embeddings --optimizer adam \
    --adam-betas '(0.9,0.98)' --lr 0.0007 --lr-scheduler inverse_sqrt --warmup-updates 400 \
    --criterion label_smoothed_cross_entropy_with_aux --label-smoothing 0.1 --max-tokens 8192 --max-update $2 \
    --save-dir ckpt_$1 --no-epoch-checkpoints --disable-validation --log-format simple --log-interval 100 --seed 1 \
    --num-workers 0
}
python3 -m fairseq_eatt.cli.energy --idle-seconds 3 --out "$OUT/train_vanilla" --measure -- bash -c "$(declare -f train); train vanilla 400" >> "$LOG" 2>&1
tail -2 "$LOG"
train eatt 1 >> "$LOG" 2>&1
for v in vanilla eatt; do
  python3 -m fairseq_eatt.cli.energy --idle-seconds 3 --out "$OUT/decode_$v" --measure -- \
    python3 -m fairseq_cli.generate data --user-dir code/fairseq_eatt --path ckpt_$v/checkpoint_last.pt \
    --gen-subset test --beam 4 --batch-size 128 --match-source-len --num-shards 4 --shard-id 0 >> "$LOG" 2>&1
  grep -E "Translated|J measured" "$LOG" | tail -2
done

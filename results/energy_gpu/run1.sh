#!/bin/bash
# Issue 18 device run: NVML-measured joules of vanilla vs E-ATT training and beam-search decoding on one GPU.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl > "$OUT/pip.log" 2>&1 || { tail "$OUT/pip.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/.gpu18/code PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import fairseq, torch, pynvml; print('fairseq', fairseq.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
cd .gpu18
for v in vanilla eatt; do
  common="--user-dir code/fairseq_eatt --encoder-self-attention $v --decoder-self-attention $v --decoder-cross-attention $v"
  python3 -m fairseq_eatt.cli.energy --idle-seconds 5 --out "$OUT/train_$v" --measure -- \
    python3 -m fairseq_cli.train data --arch transformer_eatt $common --share-all-embeddings \
    --optimizer adam --adam-betas '(0.9,0.98)' --lr 0.0007 --lr-scheduler inverse_sqrt --warmup-updates 400 \
    --criterion label_smoothed_cross_entropy_with_aux --label-smoothing 0.1 --max-tokens 8192 --max-update 400 \
    --save-dir ckpt_$v --no-epoch-checkpoints --disable-validation --log-format simple --log-interval 100 --seed 1 \
    --num-workers 0 > "$OUT/train_$v.log" 2>&1
  tail -3 "$OUT/train_$v.log"
  for bs in 1 128; do
    shards=$([ $bs = 1 ] && echo 10 || echo 1)  # batch 1: the first tenth of the test set (100 sentences)
    python3 -m fairseq_eatt.cli.energy --idle-seconds 5 --out "$OUT/decode_${v}_b$bs" --measure -- \
      python3 -m fairseq_cli.generate data --user-dir code/fairseq_eatt --path ckpt_$v/checkpoint_last.pt \
      --gen-subset test --beam 4 --batch-size $bs --required-batch-size-multiple 1 --max-len-b 50 \
      --num-shards $shards --shard-id 0 > "$OUT/decode_${v}_b$bs.log" 2>&1
    tail -2 "$OUT/decode_${v}_b$bs.log"
  done
done
ls "$OUT"

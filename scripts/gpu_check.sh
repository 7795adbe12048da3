#!/usr/bin/env bash
# The GPU measurements of E-ATT's Triton kernels (issue 20), as one short script for a machine with a CUDA GPU:
#   1. the Triton kernels on the GPU itself against the reference (tests/test_triton_l1.py without the interpreter);
#   2. fairseq-eatt-bench --gpu at Transformer-base with the paper's 4,096-token batches, fp32 and fp16:
#      training tokens/s, generation sentences/s, peak memory, the score operation at lengths 32-512;
#      writes results/performance-gpu.{md,json} and results/performance-gpu-fp16.{md,json}.
# Usage: bash scripts/gpu_check.sh [DATA-BIN]   (default: the shipped Multi30k, prepared on first use)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.cuda.get_device_name(0), 'triton', triton.__version__)"
# GPU time is scarce: a failing kernel test is reported, and the benchmarks still run; the exit status is the tests'
tests=0
TRITON_INTERPRET=0 "$PY" -m pytest -q -rf tests/test_triton_l1.py -m "not e2e" -p no:cacheprovider || tests=$?
data=()
if [[ $# -gt 0 ]]; then data=(--data "$1"); fi
"$PY" -m fairseq_eatt.cli.bench --gpu --preset base --variants eatt --skip lengths "${data[@]}" \
  --out results/performance-gpu
"$PY" -m fairseq_eatt.cli.bench --gpu --fp16 --preset base --variants eatt --skip lengths "${data[@]}" \
  --out results/performance-gpu-fp16
if [[ $tests -ne 0 ]]; then echo "gpu_check: the kernel tests FAILED on the GPU (exit $tests); see above" >&2; fi
exit "$tests"

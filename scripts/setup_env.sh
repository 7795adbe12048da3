#!/usr/bin/env bash
# Creates (or reuses) .venv/ with torch, fairseq-fixed and this plugin. Idempotent.
#
# - A torch that is already importable is kept (a GPU user's CUDA build stays): if the
#   python that runs this script has torch, the venv sees it through --system-site-packages.
# - Otherwise the CPU wheel torch==2.13.0 is installed.
# - fairseq-fixed is installed --no-deps: its metadata asks for torchaudio, which would
#   pull a different torch (see ../shared/ANCHORS.md section 5).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
FAIRSEQ_SPEC="fairseq-fixed==0.12.3.1"
# fairseq-fixed's real runtime dependencies, plus what the plugin, data prep and tests use.
DEPS=(cffi cython numpy regex "sacrebleu>=2.0" tqdm bitarray scikit-learn packaging
      "hydra-core==1.3.2" "omegaconf==2.3.0" sacremoses subword-nmt jieba matplotlib
      onnx onnxruntime pytest hypothesis import-linter
      "ctranslate2>=4.0"  # the deployment anchor (setup.py's [deploy] extra); it pulls no torch
      triton)  # E-ATT's GPU kernels; the tests run them with Triton's interpreter on the CPU

# The stamp changes with the dependencies, the package metadata and the C++ kernel's source.
stamp_of() {
  printf '%s\n' "$TORCH_VERSION" "$FAIRSEQ_SPEC" "${DEPS[@]}" \
    | cat - setup.py pyproject.toml fairseq_eatt/csrc/*.cpp | sha1sum | cut -c1-16
}
STAMP="$VENV/.eatt-setup-$(stamp_of)"
kernel_built() { "$VENV/bin/python" -c "import fairseq_eatt._pairwise_l1" 2>/dev/null; }
if [ -f "$STAMP" ] && kernel_built; then
  echo "[setup] .venv is up to date ($(basename "$STAMP"))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import torch" 2>/dev/null; then
    echo "[setup] found torch $("$PY" -c 'import torch; print(torch.__version__)') in $PY: keeping it (venv with system site-packages)"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)

if "$VPY" -c "import torch" 2>/dev/null; then
  echo "[setup] keeping torch $("$VPY" -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] installing torch==$TORCH_VERSION"
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
# Pin whatever torch we now have so no later install can replace it.
INSTALLED_TORCH=$("$VPY" -c "import torch; print(torch.__version__)")
CONSTRAINTS="$VENV/eatt-constraints.txt"
echo "torch==$INSTALLED_TORCH" > "$CONSTRAINTS"

"${PIP[@]}" install -c "$CONSTRAINTS" "${DEPS[@]}" setuptools wheel
if ! "$VPY" -c "import fairseq, fairseq.data.data_utils_fast" 2>/dev/null; then
  echo "[setup] building $FAIRSEQ_SPEC (compiles C++/Cython extensions, ~3 minutes on 2 cores)"
  "${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --no-build-isolation "$FAIRSEQ_SPEC"
fi
# --no-build-isolation: setup.py compiles E-ATT's L1 kernel against the torch installed above
"${PIP[@]}" install -c "$CONSTRAINTS" --no-deps --no-build-isolation -e .
if ! kernel_built; then
  echo "[setup] error: E-ATT's compiled L1 kernel did not build (see the pip output above)" >&2
  exit 1
fi

"$VPY" - <<'PY'
import torch, fairseq, fairseq_eatt  # noqa: F401
print(f"[setup] ok: torch {torch.__version__}, fairseq {fairseq.__version__}")
PY
rm -f "$VENV"/.eatt-setup-*
touch "$STAMP"

# Shared by the prepare-*.sh scripts: fetch (or take from --local-dir), verify, tokenize, learn and apply BPE and
# binarize one corpus with fairseq_eatt.data.prepare, then print its Table 3 statistics.
#   prepare_corpus CORPUS [OUT] [options of python -m fairseq_eatt.data.prepare...]
# OUT defaults to data/CORPUS; options: --local-dir DIR, --bpe-merges N, --skip-checksum, --workers N.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="${PYTHON:-python}"; fi

prepare_corpus() {
  local corpus="$1"; shift
  local out="data/$corpus"
  if [[ $# -gt 0 && "$1" != --* ]]; then out="$1"; shift; fi
  "$PY" -m fairseq_eatt.data.prepare "$corpus" --out "$out" "$@"
}

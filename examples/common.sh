# Shared by the recipes in this folder: run one recipe of fairseq-eatt-experiment, then aggregate the results.
#   run_recipe RECIPE [paper|small] [fairseq-eatt-experiment options...]
# The scale defaults to paper. The repository's .venv is used when it exists, else the python on PATH.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY="${PYTHON:-python}"; fi

run_recipe() {
  local recipe="$1"; shift
  local scale="paper"
  if [[ $# -gt 0 && ( "$1" == "paper" || "$1" == "small" ) ]]; then scale="$1"; shift; fi
  if [[ $# -gt 0 && "$1" != --* ]]; then
    echo "$(basename "$0"): unknown scale '$1' (valid: paper, small); options start with --" >&2
    exit 2
  fi
  cd "$REPO"
  "$PY" -m fairseq_eatt.cli.experiment "$recipe" --scale "$scale" "$@"
  local eatt_recipe=() previous=""
  for arg in "$@"; do  # the tables report the runs of the E-ATT recipe just run
    if [[ "$previous" == --eatt-recipe ]]; then eatt_recipe=(--eatt-recipe "$arg"); fi
    if [[ "$arg" == --eatt-recipe=* ]]; then eatt_recipe=(--eatt-recipe "${arg#--eatt-recipe=}"); fi
    previous="$arg"
  done
  if [[ "$recipe" == study* && ${#eatt_recipe[@]} -eq 0 ]]; then eatt_recipe=(--eatt-recipe paper); fi
  if [[ "$recipe" != energy && " $* " != *" --dry-run "* ]]; then
    "$PY" -m fairseq_eatt.cli.aggregate --scale "$scale" "${eatt_recipe[@]}"
  fi
}

#!/usr/bin/env bash
# `make run`: the quickstart from nothing. Fetches the default corpus (Debian's linux-doc), trains a
# tokenizer and tokenizes (tools/data/prepare.sh, skipped when done), trains experiments/quickstart.yaml
# (a 4-block model with one L3 layer, a few minutes on a CPU), plots its curves, and says where
# everything is. Extra arguments go to `l3lab train` (for example horizon.num_iterations=50).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
L3LAB="$ROOT/build/l3lab"

tools/data/prepare.sh --vocab-size 8192

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
"$L3LAB" train experiments/quickstart.yaml "$@" | tee "$log"
code=${PIPESTATUS[0]}
set -e
run_dir="$(sed -n 's/^run directory: //p' "$log" | head -1)"
if [[ -z "$run_dir" ]]; then
  echo "quickstart: training did not start (exit $code)" >&2
  exit "$code"
fi
/usr/bin/python3 tools/plot_metrics.py "$run_dir" --out "$run_dir/curves.png" || true

echo
echo "run directory: $run_dir"
echo "metrics:       $run_dir/metrics.h5   (live-readable: h5py.File(path, 'r', swmr=True))"
echo "plot:          $run_dir/curves.png"
echo "checkpoint:    $(ls -d "$run_dir"/checkpoints/step-* 2>/dev/null | tail -1)"
echo "try:           build/l3lab sample $run_dir --prompt 'The kernel' --max-tokens 24"
exit "$code"

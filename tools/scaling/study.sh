#!/usr/bin/env bash
# `make study`: the CPU scaling-law study of docs/scaling.md from a machine that has run `make run` (or
# from nothing: the corpus is fetched when it is missing). Prepares the study's data once (a 512-token
# BPE of the default corpus and its shards, documents cut at 512 bytes), runs the sweep (resumable:
# Ctrl-C checkpoints the running cell, and running this again continues), collects it, fits it with
# tools/scaling/fit.py, and prints where the report and the plots are.
#
#   tools/scaling/study.sh [--sweep FILE] [--jobs K] [--corpus JSONL] [--data DIR]
#
# --sweep   the sweep (default sweeps/cpu_isoflop.yaml); its data.* keys must name the --data directory
# --jobs    cells at a time (default 1, the run docs/scaling.md measures; with 2, each cell gets one of 2 cores)
# --corpus  the text to train the tokenizer on and tokenize (default data/corpus/linux-doc.jsonl)
# --data    where the tokenizer/ and shards/ go (default data/study)
# Exit codes: 0 done, 1 a cell or a step failed, 2 bad arguments, 3 interrupted (run it again).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
L3LAB="${L3LAB:-$ROOT/build/l3lab}"
SWEEP=sweeps/cpu_isoflop.yaml
JOBS=1
CORPUS=""
DATA=data/study
VOCAB=512
MAX_DOC_BYTES=512

usage() { echo "usage: tools/scaling/study.sh [--sweep FILE] [--jobs K] [--corpus JSONL] [--data DIR]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sweep) [[ $# -ge 2 ]] || usage; SWEEP="$2"; shift 2 ;;
    --jobs) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || usage; JOBS="$2"; shift 2 ;;
    --corpus) [[ $# -ge 2 ]] || usage; CORPUS="$2"; shift 2 ;;
    --data) [[ $# -ge 2 ]] || usage; DATA="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[[ -f "$SWEEP" ]] || { echo "study: $SWEEP: no such sweep file" >&2; exit 2; }
if [[ -z "$CORPUS" ]]; then
  CORPUS=data/corpus/linux-doc.jsonl
  [[ -s "$CORPUS" ]] || tools/data/fetch_corpus.sh data/corpus
fi
[[ -s "$CORPUS" ]] || { echo "study: $CORPUS: no such corpus file" >&2; exit 2; }

step() { printf '[study] %s\n' "$*"; }
started=$(date +%s)

# The data, once: each step is skipped when its output is there (delete it to redo the step).
if [[ ! -s "$DATA/tokenizer/tokenizer.pkl" ]]; then
  step "training a $VOCAB-token BPE on $CORPUS"
  "$L3LAB" data train-tokenizer --input "$CORPUS" --vocab-size "$VOCAB" --output "$DATA/tokenizer"
fi
TOKENIZER_SHA256="$(sha256sum "$DATA/tokenizer/tokenizer.pkl" | cut -d' ' -f1)"
if ! grep -qs "$TOKENIZER_SHA256" "$DATA/shards/manifest.json" ||
   ! grep -qs "\"max_doc_bytes\": $MAX_DOC_BYTES" "$DATA/shards/manifest.json"; then
  step "tokenizing $CORPUS into $DATA/shards (documents cut at $MAX_DOC_BYTES bytes)"
  "$L3LAB" data tokenize --tokenizer "$DATA/tokenizer" --input "$CORPUS" --output "$DATA/shards" \
    --max-doc-bytes "$MAX_DOC_BYTES" --overwrite
fi

step "running $SWEEP with --jobs $JOBS (Ctrl-C stops it; run again to continue)"
set +e
"$L3LAB" sweep run "$SWEEP" --jobs "$JOBS"
code=$?
set -e
if [[ $code -eq 3 ]]; then
  step "interrupted: the running cells were checkpointed; run the same command again to continue"
  exit 3
fi
[[ $code -eq 0 ]] || { step "a cell failed (exit $code): build/l3lab sweep status $SWEEP"; exit "$code"; }

collect_log="$(mktemp)"
trap 'rm -f "$collect_log"' EXIT
"$L3LAB" sweep collect "$SWEEP" | tee "$collect_log"
results="$(sed -n 's/^ *\(.*results\.csv\)$/\1/p' "$collect_log" | head -1)"
[[ -n "$results" ]] || { step "sweep collect wrote no results.csv"; exit 1; }
sweep_dir="$(dirname "$results")"
/usr/bin/python3 tools/scaling/fit.py "$sweep_dir"

echo
step "done in $(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s"
echo "report:   $sweep_dir/analysis/report.md"
echo "plots:    $sweep_dir/analysis/isoflop.png  $sweep_dir/analysis/optimal.png  $sweep_dir/analysis/l3_vs_dense.png"
echo "numbers:  $sweep_dir/analysis/fit.json   cells: $sweep_dir/results.csv"

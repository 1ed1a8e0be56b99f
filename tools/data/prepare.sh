#!/usr/bin/env bash
# Everything the quickstart reads, from nothing: the default corpus (fetch_corpus.sh), a tokenizer
# trained on it and its token shards, at the paths experiments/base.yaml names:
#   data/corpus/linux-doc.jsonl   data/tokenizer/ (nanochat's BPE: tokenizer.pkl)   data/shards/{train,val}_*.bin + manifest.json
#
#   tools/data/prepare.sh [--vocab-size N]    # default 8192, the quickstart's model.vocab_size
#
# Idempotent: each step is skipped when its output exists (delete it to redo the step); the shards are
# made again when they were not made with the tokenizer there (its sha256 is not in their manifest).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VOCAB=8192
while [[ $# -gt 0 ]]; do
  case "$1" in
    --vocab-size) VOCAB="$2"; shift 2 ;;
    *) echo "usage: tools/data/prepare.sh [--vocab-size N]" >&2; exit 2 ;;
  esac
done
L3LAB="${L3LAB:-$ROOT/build/l3lab}"
DATA="$ROOT/data"

"$ROOT/tools/data/fetch_corpus.sh" "$DATA/corpus"
if [[ ! -s "$DATA/tokenizer/tokenizer.pkl" ]]; then
  "$L3LAB" data train-tokenizer --input "$DATA/corpus/linux-doc.jsonl" --vocab-size "$VOCAB" --output "$DATA/tokenizer"
fi
TOKENIZER_SHA256="$(sha256sum "$DATA/tokenizer/tokenizer.pkl" | cut -d' ' -f1)"
if ! grep -qs "$TOKENIZER_SHA256" "$DATA/shards/manifest.json"; then
  "$L3LAB" data tokenize --tokenizer "$DATA/tokenizer" --input "$DATA/corpus/linux-doc.jsonl" \
    --output "$DATA/shards" --overwrite
fi

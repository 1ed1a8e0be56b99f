#!/usr/bin/env bash
# `make study` in miniature (tools/scaling/study.sh, docs/scaling.md): the shipped sweeps/cpu_isoflop.yaml
# cut to 4 cells (one budget and size, dense and L3, two seeds) on a small generated corpus, end to end:
# tokenizer and shards, plan + run, collect, fit, the printed paths; then a second run that trains
# nothing again. It checks the pipeline, not the science: one size cannot give an isoFLOP fit, and the
# report must say so, while the L3 - dense comparison must carry both seeds and their spread.
#   tests/study_miniature.sh L3LAB_BINARY
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export L3LAB="${1:?usage: tests/study_miniature.sh L3LAB_BINARY}"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A corpus of 300 documents of pseudo-English, some longer than the 512 bytes a piece may have.
/usr/bin/python3 - "$T/corpus.jsonl" <<'PY'
import json, random, sys
rng = random.Random(7)
# A vocabulary of made-up words (and a few non-ASCII ones), enough pairs for a 512-token BPE.
syllables = [a + b for a in "bcdfgklmnprstvz" for b in "aeiou"] + ["é", "ï", "你", "好", "デ", "タ"]
words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for d in range(300):
        paragraphs = ["  ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))) + "."
                                for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6))]
        f.write(json.dumps({"text": "\n\n".join(paragraphs)}, ensure_ascii=False) + "\n")
PY

cat > "$T/mini.yaml" <<YAML
extends: [$ROOT/sweeps/cpu_isoflop.yaml]
name: mini
set:
  model.sequence_len: 64
  eval.tokens: 2048
  data.tokenizer: $T/data/tokenizer
  data.train: $T/data/shards/train_*.bin
  data.val: $T/data/shards/val_*.bin
zip:
  - horizon.target_flops: [2.0e9]
    model.depth:          [2]
    model.aspect_ratio:   [24]
  - l3_at_fraction: [[], [0.5]]
seeds: [1, 2]
output: $T/out
YAML

code=0
"$ROOT/tools/scaling/study.sh" --sweep "$T/mini.yaml" --corpus "$T/corpus.jsonl" --data "$T/data" > "$T/first.log" 2>&1 || code=$?
[[ $code -eq 0 ]] || { cat "$T/first.log"; fail "the first run exited $code"; }
cat "$T/first.log"
grep -q "training a 512-token BPE" "$T/first.log" || fail "no tokenizer was trained"
grep -q "documents cut at 512 bytes" "$T/first.log" || fail "the shards were not made"
grep -q '"max_doc_bytes": 512' "$T/data/shards/manifest.json" || fail "the manifest does not record the cut"
[[ $(grep -c ": completed in " "$T/first.log") -eq 4 ]] || fail "4 cells should have completed"
for f in report.md fit.json isoflop.png optimal.png l3_vs_dense.png; do
  [[ -s "$T/out/mini/analysis/$f" ]] || fail "no $f"
  grep -Eq "^(report|plots|numbers): .*$T/out/mini/analysis/$f" "$T/first.log" || fail "the run does not say where $f is"
done
/usr/bin/python3 - "$T/out/mini/analysis/fit.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["cells_used"] == 4, r["cells_used"]
rows = r["comparison"]
assert len(rows) == 1, rows
row = rows[0]
assert row["seeds"] == ["1", "2"] or row["seeds"] == [1, 2], row["seeds"]
assert len(row["delta_by_seed"]) == 2 and row["delta_std"] is not None and row["delta_std"] >= 0, row
assert abs(row["delta_mean"] - sum(row["delta_by_seed"]) / 2) < 1e-12, row
assert all(not f["ok"] and f["problem_kind"] == "sizes" for arm in r["fits"].values() for f in arm), r["fits"]
print("fit.json: 4 cells, L3 - dense over 2 seeds", row["delta_by_seed"], "no isoFLOP fit (one size), as it must")
PY
grep -q "cannot support a scaling-law fit" "$T/out/mini/analysis/report.md" || fail "the report does not say why there is no fit"

# Run again: the data and every cell are done, so nothing is trained; the analysis is written again.
"$ROOT/tools/scaling/study.sh" --sweep "$T/mini.yaml" --corpus "$T/corpus.jsonl" --data "$T/data" > "$T/second.log" 2>&1 || code=$?
[[ $code -eq 0 ]] || { cat "$T/second.log"; fail "the second run exited $code"; }
! grep -q "training a 512-token BPE\|documents cut at\|: starting" "$T/second.log" || { cat "$T/second.log"; fail "the second run redid work"; }
grep -q "^report: " "$T/second.log" || fail "the second run printed no report path"
echo "OK"

#!/bin/bash
# CPU training speed, l3lab against the reference (nanochat b7629ef's base_train step, eager and with
# torch.compile(model)), side by side on the configurations of docs/benchmarks.md, interleaved: every round
# runs each (threads, configuration) on all sides one after the other, so a change in the machine's load
# hits all of them alike. Prints one markdown table of medians over the rounds and the load seen.
#
#   tools/bench/compare_cpu.sh [--rounds N] [--threads "1 2"] [--configs "tiny small small-dense small-lzw"]
#                              [--nanochat DIR] [--precision auto|bf16] [--out FILE.jsonl]
#
# Needs: build/l3lab, .venv (torch), the quickstart data (make run), a reference checkout (default
# /tmp/nanochat-ref: git -C <nanochat mirror> archive b7629ef | tar -x -C /tmp/nanochat-ref). Run nothing
# else on the machine meanwhile. l3lab's tok/s and the reference's come from the same statistic
# (tools/bench/bench_train_reference.py: total batch / median step time after 3 warm-up steps).
set -euo pipefail
set -f  # the overrides hold brackets: no globbing
cd "$(dirname "$0")/../.."

rounds=1 threads="1 2" configs="tiny small small-dense small-lzw" nanochat=/tmp/nanochat-ref precision=auto
out=$(mktemp /tmp/compare_cpu.XXXXXX.jsonl)
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --configs) configs=$2; shift 2 ;;
    --nanochat) nanochat=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "compare_cpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x build/l3lab ] || { echo "compare_cpu.sh: build/l3lab missing: run make build" >&2; exit 2; }
[ -d "$nanochat/nanochat" ] || { echo "compare_cpu.sh: no reference checkout at $nanochat" >&2; exit 2; }
py=.venv/bin/python

# Each configuration as l3lab overrides of experiments/quickstart.yaml and as the reference's flags
# ("" = no reference side: the reference has no lzw allocation).
l3lab_args() {
  case "$1" in
    tiny) echo "model.depth=2 model.sequence_len=64 model.window_pattern=SL model.l3.k_max=8 model.l3.allocation=frequency batch.device_batch_size=4 batch.total_batch_size=512 horizon.num_iterations=40" ;;
    small) echo "model.l3.allocation=frequency horizon.num_iterations=15" ;;
    small-dense) echo "model.l3.after_layers=[] horizon.num_iterations=15" ;;
    small-lzw) echo "horizon.num_iterations=15" ;;
  esac
}
reference_args() {
  case "$1" in
    tiny) echo "--depth 2 --head-dim 64 --max-seq-len 64 --window-pattern SL --l3-after-layers 1 --l3-k-max 8 --device-batch-size 4 --total-batch-size 512 --num-iterations 40" ;;
    small) echo "--depth 4 --head-dim 64 --max-seq-len 256 --window-pattern L --l3-after-layers 1 --l3-k-max 64 --device-batch-size 8 --total-batch-size 4096 --num-iterations 15" ;;
    small-dense) echo "--depth 4 --head-dim 64 --max-seq-len 256 --window-pattern L --device-batch-size 8 --total-batch-size 4096 --num-iterations 15" ;;
    small-lzw) echo "" ;;
  esac
}

record() {  # config threads side load json
  printf '{"config": "%s", "threads": %s, "side": "%s", "load": %s, "result": %s}\n' "$1" "$2" "$3" "$4" "$5" >> "$out"
}
load() { cut -d' ' -f1 /proc/loadavg; }

run_dir=$(mktemp -d /tmp/compare_cpu.run.XXXXXX)
trap 'rm -rf "$run_dir"' EXIT
for round in $(seq 1 "$rounds"); do
  for t in $threads; do
    for c in $configs; do
      l=$(load)
      rm -rf "$run_dir/run"
      # shellcheck disable=SC2046
      OMP_NUM_THREADS=$t build/l3lab train experiments/quickstart.yaml $(l3lab_args "$c") precision="$precision" \
        eval.every=-1 sample.every=-1 checkpoint.every=-1 --run-dir "$run_dir/run" > "$run_dir/log" 2>&1 \
        || { echo "l3lab failed on $c:" >&2; tail -5 "$run_dir/log" >&2; exit 1; }
      record "$c" "$t" l3lab "$l" "$($py tools/bench/bench_train_reference.py --l3lab-log "$run_dir/run/train.log" | tail -1)"
      ref=$(reference_args "$c")
      [ -n "$ref" ] || continue
      for compile in none model; do
        l=$(load)
        # shellcheck disable=SC2086
        result=$(OMP_NUM_THREADS=$t $py tools/bench/bench_train_reference.py --nanochat "$nanochat" --threads "$t" \
                   --compile $compile $ref 2> "$run_dir/err" | tail -1) \
          || { echo "the reference failed on $c ($compile):" >&2; tail -5 "$run_dir/err" >&2; exit 1; }
        record "$c" "$t" "reference-$compile" "$l" "$result"
      done
      echo "round $round, $t thread(s), $c: done" >&2
    done
  done
done

"$py" - "$out" "$precision" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["config"], r["threads"], r["side"]), []).append(r["result"]["tok_per_s"])
loads = [r["load"] for r in rows]
med = {k: statistics.median(v) for k, v in by.items()}
print(f"l3lab precision {sys.argv[2]}; {len(rows)} runs; 1-minute load {min(loads):.2f}-{max(loads):.2f} "
      f"(median {statistics.median(loads):.2f}); medians over {max(len(v) for v in by.values())} round(s)\n")
print("| config | threads | l3lab tok/s | reference eager | reference, compiled model | l3lab / eager | l3lab / compiled |")
print("|---|---:|---:|---:|---:|---:|---:|")
seen = []
for (c, t, _) in by:
    if (c, t) not in seen:
        seen.append((c, t))
for c, t in seen:
    ours, eager, comp = med.get((c, t, "l3lab")), med.get((c, t, "reference-none")), med.get((c, t, "reference-model"))
    f = lambda v: f"{v:,.0f}" if v else "–"
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"
    print(f"| {c} | {t} | {f(ours)} | {f(eager)} | {f(comp)} | {ratio(ours, eager)} | {ratio(ours, comp)} |")
print(f"\nraw results: {sys.argv[1]}")
EOF

#!/usr/bin/env bash
# The GPU check (docs/cuda.md), run by a person on a fresh GPU machine of ours - one NVIDIA H200, PyTorch
# 2.11 (+cu130) in its Python, nvcc 13.0, CMake, no internet - with the bundle that tools/gpu/prepare.sh
# made on a networked machine:
#   1. installs the bundle's .deb files that the machine lacks into a local prefix (dpkg-deb -x, no root)
#   2. builds l3lab against the machine's own PyTorch, with the CUDA kernels for sm_90 (L3LAB_CUDA=ON)
#   3. runs the GPU tests (ctest -R '^Cuda'): L3 kernel, windowed flash attention and fused loss against
#      the CPU math, a bf16 training step, a step without host syncs
#   4. benchmarks l3lab against the reference (nanochat b7629ef, torch.compile) on synthetic token shards:
#      depth 12 and 20, dense and with two L3 layers (k_max 512, lzw allocation) - train steps/s,
#      tokens/s, MFU, peak memory - and prints one table with the ratios.
#
#   tools/gpu/check.sh --bundle DIR [--python PY] [--work DIR] [--deadline-min 8] [--steps 12] [--warmup 4]
#                      [--l3-batch 8] [--dense-batch 32] [--jobs N] [--tests-only] [--force-prefix]
#                      [--rows d12,d20,d12-l3,d20-l3] [--row-timeout SECONDS]
#   tools/gpu/check.sh --prebuilt DIR [...]
#
# --prebuilt DIR skips steps 1 and 2: it runs the binaries that tools/gpu/pack_prebuilt.sh packed from a
# CUDA build made on the CPU machine (against the same torch 2.11.0+cu130), with DIR/lib and this Python's
# torch/lib as their libraries, and the reference from DIR/nanochat-b7629ef.tar. The GPU tests then run
# from the test binary (--gtest_filter='Cuda*'). That binary and l3lab carry the absolute checkout path of
# the build (L3LAB_SOURCE_DIR); the GPU tests do not use it.
#
# --force-prefix takes every dependency from the bundle even when the machine has it (how the build part
# is tried on a CPU machine: the GPU tests then skip and the benchmark is left out). Everything goes
# under --work (default: build-gpu-check/ in the checkout); the table is also written to
# WORK/results.md and each run's raw output to WORK/logs/. The deadline stops starting new benchmark
# rows once that many minutes have passed since the start; rows not run say so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUNDLE="" PY="${PYTHON:-python3}" WORK="$ROOT/build-gpu-check" DEADLINE_MIN=8 STEPS=12 WARMUP=4
ROW_NAMES="d12,d20,d12-l3,d20-l3" ROW_TIMEOUT=0
L3_BATCH=8 DENSE_BATCH=32 JOBS="$(nproc)" TESTS_ONLY=0 FORCE_PREFIX=0 PREBUILT=""
while (($#)); do
  case "$1" in
    --bundle) BUNDLE="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --deadline-min) DEADLINE_MIN="$2"; shift 2 ;;
    --rows) ROW_NAMES="$2"; shift 2 ;;
    --row-timeout) ROW_TIMEOUT="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --l3-batch) L3_BATCH="$2"; shift 2 ;;
    --dense-batch) DENSE_BATCH="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --tests-only) TESTS_ONLY=1; shift ;;
    --force-prefix) FORCE_PREFIX=1; shift ;;
    --prebuilt) PREBUILT="$2"; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
if [[ -n "$PREBUILT" ]]; then
  [[ -x "$PREBUILT/build/l3lab" ]] || { echo "check.sh: --prebuilt $PREBUILT has no build/l3lab (tools/gpu/pack_prebuilt.sh makes it)" >&2; exit 2; }
  BUNDLE="$(cd "$PREBUILT" && pwd)"
else
  [[ -n "$BUNDLE" && -d "$BUNDLE/debs" ]] || { echo "check.sh: --bundle DIR (made by tools/gpu/prepare.sh) or --prebuilt DIR is required" >&2; exit 2; }
  BUNDLE="$(cd "$BUNDLE" && pwd)"
fi
mkdir -p "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
BUILD="$WORK/build" PREFIX="$WORK/deps" LOGS="$WORK/logs"
START=$(date +%s)
BIN_ENV=()  # what runs l3lab's own binaries (--prebuilt: their library path)
elapsed() { echo $(( $(date +%s) - START )); }
phase() { printf '\n== [%4ss] %s\n' "$(elapsed)" "$*"; }
die() { echo "check.sh: $*" >&2; exit 1; }

# --- 0. the machine ---------------------------------------------------------------------------------
phase "machine"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: not found"
"$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
"| GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible")' || die "$PY cannot import torch"
NVCC="$(command -v nvcc || true)"
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
[[ -n "$NVCC" ]] || die "nvcc not found (PATH, /usr/local/cuda/bin)"
echo "nvcc: $("$NVCC" --version | tail -1)"
export PATH="$(dirname "$NVCC"):$PATH"
echo "cmake: $(cmake --version | head -1)"
GPU_VISIBLE=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')

if [[ -n "$PREBUILT" ]]; then
# --- 1-2. the prebuilt binaries -----------------------------------------------------------------------
phase "prebuilt binaries from $BUNDLE (no build here)"
BUILD="$BUNDLE/build"
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
# Only the packed binaries get the packed libraries: this Python keeps the machine's own.
BIN_ENV=(env "LD_LIBRARY_PATH=$BUNDLE/lib:$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
"${BIN_ENV[@]}" "$BUILD/l3lab" --version | sed 's/^/  /' || die "the prebuilt l3lab does not start (ldd $BUILD/l3lab)"
else
# --- 1. dependencies from the bundle ----------------------------------------------------------------
phase "dependencies: the bundle's .deb files the machine lacks, into $PREFIX"
installed() {  # a package is on the machine (dpkg's database), unless --force-prefix
  ((FORCE_PREFIX)) && return 1
  command -v dpkg-query >/dev/null && dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
extract() {  # dpkg-deb -x, or ar + tar where there is no dpkg
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$PREFIX"; return; fi
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && ar x "$1" && tar -xf data.tar.* -C "$PREFIX")
  rm -rf "$tmp"
}
rm -rf "$PREFIX" && mkdir -p "$PREFIX"
taken=() skipped=()
for deb in "$BUNDLE"/debs/*.deb; do
  pkg="$(basename "$deb")"; pkg="${pkg%%_*}"
  if installed "$pkg"; then skipped+=("$pkg"); else extract "$deb"; taken+=("$pkg"); fi
done
echo "from the bundle (${#taken[@]}): ${taken[*]:-none}"
echo "already installed (${#skipped[@]}): ${skipped[*]:-none}"
# The extracted tree lives elsewhere than /usr: absolute symlinks and pkg-config prefixes must follow it.
while IFS= read -r link; do
  ln -sfn "$PREFIX$(readlink "$link")" "$link"
done < <(find "$PREFIX" -type l -lname '/*')
find "$PREFIX" -name '*.pc' -exec sed -i "s|^prefix=/usr|prefix=$PREFIX/usr|" {} +
ARCH_LIB="$PREFIX/usr/lib/x86_64-linux-gnu"
export PATH="$PREFIX/usr/bin:$PATH"
export PKG_CONFIG_PATH="$ARCH_LIB/pkgconfig:$PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$ARCH_LIB:$ARCH_LIB/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for tool in ninja pkg-config; do command -v "$tool" >/dev/null || die "$tool is missing and not in the bundle"; done
if command -v ccache >/dev/null; then export CCACHE_DIR="${CCACHE_DIR:-$WORK/ccache}"; fi

# --- 2. build -----------------------------------------------------------------------------------------
phase "configure and build l3lab (CUDA kernels for sm_90) against $("$PY" -c 'import torch; print(torch.__file__)')"
cmake_args=(-S "$ROOT" -B "$BUILD" -G Ninja -DL3LAB_PYTHON="$(command -v "$PY")" -DL3LAB_CUDA=ON
            -DCMAKE_PREFIX_PATH="$PREFIX/usr" -DOPENSSL_ROOT_DIR="$PREFIX/usr"
            -DCMAKE_BUILD_RPATH="$ARCH_LIB;$ARCH_LIB/hdf5/serial")
# With --force-prefix the machine's own HDF5 wrapper (h5cc) must not answer for the bundle's HDF5.
((FORCE_PREFIX)) && cmake_args+=(-DHDF5_C_COMPILER_EXECUTABLE=/bin/false)
cmake "${cmake_args[@]}" > "$LOGS/configure.log" 2>&1 || { tail -40 "$LOGS/configure.log"; die "configure failed ($LOGS/configure.log)"; }
grep -E "l3lab CUDA kernels|CUDA NVCC flags" "$LOGS/configure.log" || true
grep -E '^(yaml-cpp_DIR|Boost_DIR|fmt_DIR|spdlog_DIR|nlohmann_json_DIR|GTest_DIR|HDF5_C_INCLUDE_DIR|HDF5_hdf5_LIBRARY_RELEASE|OPENSSL_CRYPTO_LIBRARY|pkgcfg_lib_SENTENCEPIECE_sentencepiece)[:=]' \
  "$BUILD/CMakeCache.txt" | sed 's/^/  found: /'
build_start=$(date +%s)
cmake --build "$BUILD" -j "$JOBS" --target l3lab l3lab_torch l3lab_torch_tests bench_l3 > "$LOGS/build.log" 2>&1 ||
  { tail -40 "$LOGS/build.log"; die "build failed ($LOGS/build.log)"; }
echo "built in $(( $(date +%s) - build_start )) s with $JOBS jobs"
"$BUILD/l3lab" --version | sed 's/^/  /'
fi

# --- 3. GPU tests --------------------------------------------------------------------------------------
phase "GPU tests (ctest -R '^Cuda')"
tests_ok=1
if [[ -n "$PREBUILT" ]]; then
  "${BIN_ENV[@]}" "$BUILD/tests/torch/l3lab_torch_tests" --gtest_filter='Cuda*' > "$LOGS/tests.log" 2>&1 || tests_ok=0
  grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED) +\]" "$LOGS/tests.log" | sed 's/^/  /' || true
else
  ctest --test-dir "$BUILD" -R '^Cuda' --output-on-failure -V > "$LOGS/tests.log" 2>&1 || tests_ok=0
fi
grep -E "^[0-9]+/[0-9]+ Test|Skipped|tests passed|FAILED|Failed" "$LOGS/tests.log" | sed 's/^/  /' || true
grep -h "^\S*: Skipped\|GTEST_SKIP\|skipped" "$LOGS/tests.log" | grep -v "^$" | sort -u | head -5 | sed 's/^/  /' || true
((tests_ok)) || echo "SOME GPU TESTS FAILED: $LOGS/tests.log"
if ((TESTS_ONLY)) || [[ "$GPU_VISIBLE" != 1 ]]; then
  [[ "$GPU_VISIBLE" != 1 ]] && echo "no GPU visible: the benchmark needs one; stopping after the build and the (skipped) GPU tests"
  phase "done"; ((tests_ok)) || exit 1; exit 0
fi

# --- 4. benchmark --------------------------------------------------------------------------------------
phase "synthetic token shards"
DATA="$WORK/data"
[[ -f "$DATA/manifest.json" ]] || "$PY" "$ROOT/tools/gpu/make_shards.py" --out "$DATA"
REF="$WORK/nanochat"
if [[ ! -f "$REF/nanochat/gpt.py" ]]; then mkdir -p "$REF" && tar -xf "$BUNDLE"/nanochat-*.tar -C "$REF" --strip-components=1; fi
# Runs and checkpoints in memory when there is room (a d20-l3 checkpoint is several GB).
RUNS="$WORK/runs"
if [[ -d /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR==2 {print $4}') > 60 * 1024 * 1024 )); then
  RUNS="/dev/shm/l3lab-gpu-check-$$"; trap 'rm -rf "$RUNS"' EXIT
fi
mkdir -p "$RUNS"
DEADLINE=$(( START + DEADLINE_MIN * 60 ))
LIMIT=()  # --row-timeout: each l3lab or reference run (and the L3 layer benchmark) is stopped after that long
((ROW_TIMEOUT > 0)) && LIMIT=(timeout --signal=KILL "$ROW_TIMEOUT")
# The L3 layer alone (tools/bench/bench_l3): segment kernel vs the reference's padded gather at k_max 512.
phase "one L3 layer: segment kernel vs padded gather (bench_l3 --device cuda)"
"${BIN_ENV[@]}" "${LIMIT[@]}" "$BUILD/tools/bench/bench_l3" --device cuda --tokens 16384 --seq 2048 --width 768 --reps 5 \
    --cap-gib 100 2>&1 | tee "$LOGS/bench_l3.txt" | tail -9 || true

T=2048
declare -A L3_AFTER=([d12]="" [d20]="" [d12-l3]="3,7" [d20-l3]="4,15")  # the reference's --l3-after-layers
IFS=',' read -r -a ROWS <<< "$ROW_NAMES"
for name in "${ROWS[@]}"; do
  [[ -v "L3_AFTER[$name]" ]] || die "--rows: unknown row $name (d12, d20, d12-l3, d20-l3)"
  exp="$name" l3="${L3_AFTER[$name]}"
  B=$DENSE_BATCH; [[ -n "$l3" ]] && B=$L3_BATCH
  if (( $(date +%s) > DEADLINE )); then
    echo "{\"name\": \"$name\", \"skipped\": \"deadline of $DEADLINE_MIN min reached\"}" > "$LOGS/$name.l3lab.json"
    continue
  fi
  phase "$name: l3lab (batch $B x $T, $STEPS steps)"
  run="$RUNS/$name"
  rm -rf "$run" "$RUNS/out-$name"
  "${BIN_ENV[@]}" "${LIMIT[@]}" "$BUILD/l3lab" train "$ROOT/experiments/$exp.yaml" device=cuda model.vocab_size=32768 model.sequence_len=$T \
      data.tokenizer="$WORK/no-tokenizer" data.train="$DATA" data.val="$DATA" \
      horizon.num_iterations=$STEPS batch.device_batch_size=$B batch.total_batch_size=$((B * T)) \
      eval.every=-1 eval.core_every=-1 eval.tokens=$((B * T)) sample.every=-1 checkpoint.every=-1 checkpoint.keep_last=1 \
      output.dir="$RUNS/out-$name" --run-dir "$run" > "$LOGS/$name.l3lab.log" 2>&1 || true
  "$PY" "$ROOT/tools/gpu/table.py" summarize-l3lab --name "$name" --run "$run" --log "$LOGS/$name.l3lab.log" \
      --warmup "$WARMUP" > "$LOGS/$name.l3lab.json"
  cat "$LOGS/$name.l3lab.json"
  ref_args=(--nanochat "$REF" --shards "$DATA" --depth "${exp:1:2}" --device-batch-size "$B" --steps "$STEPS" --warmup "$WARMUP")
  if [[ -n "$l3" ]]; then
    rows_json="$(ls "$RUNS/out-$name"/.cache/l3-allocation-*.json 2>/dev/null | head -1 || true)"
    [[ -n "$rows_json" ]] && ref_args+=(--l3-after-layers "$l3" --l3-rows "$rows_json")
  fi
  if (( $(date +%s) > DEADLINE )); then
    echo "{\"name\": \"$name\", \"skipped\": \"deadline of $DEADLINE_MIN min reached\"}" > "$LOGS/$name.reference.json"
    continue
  fi
  phase "$name: reference, torch.compile (batch $B x $T, $STEPS steps)"
  if [[ -n "$l3" && -z "${rows_json:-}" ]]; then
    echo '{"error": "no l3lab allocation to share (the l3lab run failed)"}' > "$LOGS/$name.reference.json"
  else
    "${LIMIT[@]}" "$PY" "$ROOT/tools/gpu/bench_reference.py" "${ref_args[@]}" > "$LOGS/$name.reference.json" 2> "$LOGS/$name.reference.log" ||
      echo "{\"error\": \"exit $? (see $LOGS/$name.reference.log)\"}" >> "$LOGS/$name.reference.json"
  fi
  tail -1 "$LOGS/$name.reference.json"
done

phase "results"
"$PY" "$ROOT/tools/gpu/table.py" table --logs "$LOGS" --names "${ROWS[@]}" | tee "$WORK/results.md"
{ echo; echo '```'; tail -9 "$LOGS/bench_l3.txt"; echo '```'; } >> "$WORK/results.md"

echo "GPU tests: $( ((tests_ok)) && echo passed || echo FAILED ) | total time $(elapsed) s | raw outputs: $LOGS"
((tests_ok)) || exit 1

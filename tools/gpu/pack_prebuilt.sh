#!/usr/bin/env bash
# Packs a CUDA build made on the CPU machine (make build: libtorch from .venv's torch 2.11.0+cu130, the
# CUDA kernels for sm_90) so that tools/gpu/check.sh --prebuilt DIR can run the GPU tests and the benchmark
# on a GPU machine without building there (docs/cuda.md): a cold build there needs the bundle's .deb
# files and minutes of the GPU lease, these binaries only need the GPU machine's own PyTorch 2.11 (+cu130).
#
#   DIR/build/{l3lab,libl3lab_torch.so,tests/torch/l3lab_torch_tests,tools/bench/bench_l3}  stripped
#   DIR/lib/            the shared libraries they load that are neither glibc's, the C++ runtime's nor
#                       libtorch's (yaml-cpp, HDF5, spdlog, fmt, SentencePiece, OpenSSL, PCRE2, libcudart,
#                       pyarrow's Arrow and Parquet...)
#   DIR.tar.gz          all of it in one archive (about 40 MB: what fits a 64 MiB transfer)
#   DIR/nanochat-b7629ef.tar   the reference checkout, for the comparison benchmark
#
#   tools/gpu/pack_prebuilt.sh [--build build] [DIR]      # default DIR: build-gpu-prebuilt/
#
# The test binary and l3lab carry this checkout's absolute path (L3LAB_SOURCE_DIR, L3LAB_BINARY); check.sh
# --prebuilt tells how to run them from another path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$ROOT/build" OUT=""
while (($#)); do
  case "$1" in
    --build) BUILD="$(cd "$2" && pwd)"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "pack_prebuilt.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
    *) OUT="$1"; shift ;;
  esac
done
OUT="${OUT:-$ROOT/build-gpu-prebuilt}"
BINARIES=(l3lab libl3lab_torch.so tests/torch/l3lab_torch_tests tools/bench/bench_l3)
for b in "${BINARIES[@]}"; do
  [[ -f "$BUILD/$b" ]] || { echo "pack_prebuilt.sh: $BUILD/$b is missing: cmake --build $BUILD --target l3lab l3lab_torch l3lab_torch_tests bench_l3" >&2; exit 2; }
done
"$BUILD/l3lab" --version | grep -q "CUDA kernels: built" ||
  { echo "pack_prebuilt.sh: $BUILD/l3lab was built without its CUDA kernels (l3lab --version)" >&2; exit 2; }

rm -rf "$OUT" && mkdir -p "$OUT/lib"
for b in "${BINARIES[@]}"; do
  mkdir -p "$OUT/build/$(dirname "$b")"
  strip -o "$OUT/build/$b" "$BUILD/$b"
done
# Every library ldd resolves outside libtorch's wheel, less the ones every Linux with a C++ compiler has.
SYSTEM_REGEX='^(linux-vdso|ld-linux.*|libc|libm|libdl|librt|libpthread|libutil|libresolv|libstdc\+\+|libgcc_s)\.so'
for b in "${BINARIES[@]}"; do ldd "$BUILD/$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
  while read -r name path; do
    # libtorch and its CUDA libraries come from the GPU machine's own wheel; pyarrow's (parquet) travel.
    [[ "$name" =~ $SYSTEM_REGEX || "$path" == */site-packages/torch/* || "$path" == */site-packages/nvidia/* ]] && continue
    cp -L "$path" "$OUT/lib/$name"
  done
REPO="${NANOCHAT_REPO:-/work/.mirror/karpathy+nanochat/repo}"
if git -C "$REPO" rev-parse -q --verify b7629ef^{commit} >/dev/null 2>&1; then
  git -C "$REPO" archive --prefix=nanochat/ -o "$OUT/nanochat-b7629ef.tar" b7629ef
else
  echo "pack_prebuilt.sh: no nanochat clone with b7629ef at $REPO (NANOCHAT_REPO): the benchmark's reference half will be skipped" >&2
fi
tar -czf "$OUT.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
du -sh "$OUT" "$OUT"/lib "$OUT"/build "$OUT.tar.gz" | sed 's/^/[pack] /' >&2
echo "$OUT"

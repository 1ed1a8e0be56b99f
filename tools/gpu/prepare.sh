#!/usr/bin/env bash
# Prepares, on a networked Debian 12 (amd64) machine, what tools/gpu/check.sh needs on a GPU machine that
# has no internet (docs/cuda.md):
#   debs/        the Debian 12 .deb files l3lab builds against (yaml-cpp, Boost.Program_options, HDF5,
#                spdlog, fmt, nlohmann-json, OpenSSL, SentencePiece, protobuf-c, GoogleTest, pkg-config, ccache,
#                ninja) and the runtime libraries they load, resolved with apt-cache and fetched with
#                `apt-get download` (no root needed). Not included: what every machine that compiles
#                CUDA code has (libc, libstdc++, gcc's runtime libraries, zlib) - check.sh says so if one
#                is missing.
#   nanochat-b7629ef.tar   the reference checkout (git archive of karpathy/nanochat at b7629ef), for
#                the comparison benchmark.
#   MANIFEST.txt what is in the bundle, with sizes.
#
#   tools/gpu/prepare.sh [OUT_DIR]        # default: gpu-bundle/ ; then copy OUT_DIR and the l3lab checkout over
#
# Needs apt-get (lists from `apt-get update`), apt-cache, dpkg-deb and git (with NANOCHAT_REPO, a clone of
# karpathy/nanochat; default: the first of /work/.mirror/karpathy+nanochat/repo, /tmp/nanochat-ref/.git, or
# a fresh clone from GitHub).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/gpu-bundle}" && cd "${1:-$ROOT/gpu-bundle}" && pwd)"
REFERENCE_COMMIT=b7629ef
LIMIT_MB=60

log() { printf '[prepare] %s\n' "$*" >&2; }

# What l3lab's CMake looks for (tools/bootstrap.sh's list, less the toolchain and the Python packages).
DEV_PACKAGES=(
  libyaml-cpp-dev libboost-program-options-dev libhdf5-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libssl-dev libsentencepiece-dev libpcre2-dev libgtest-dev libgmock-dev libprotobuf-c-dev protobuf-c-compiler
  pkg-config ccache ninja-build
)
# Dependencies of the -dev packages that building l3lab never touches: HDF5's Fortran and high-level
# libraries and helper programs, the headers of its own dependencies, GoogleTest's sources.
SKIP_REGEX='^(hdf5-helpers|libhdf5-(fortran|hl|hl-fortran|hl-cpp|cpp)-[0-9].*|libjpeg.*-dev|libaec-dev|zlib1g-dev|libcurl.*-dev|googletest|catch2)$'
# The base system and the compiler toolchain: present wherever nvcc and PyTorch extensions compile.
BASE_REGEX='^(libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt1|libcrypt-dev|libnsl-dev|libnsl2|libtirpc.*|rpcsvc-proto|libgcc-s1|libgcc-[0-9]+-dev|gcc-[0-9]+-base|libstdc\+\+6|libstdc\+\+-[0-9]+-dev|libasan[0-9]+|libtsan[0-9]+|liblsan[0-9]+|libubsan[0-9]+|libgomp1|libitm1|libatomic1|libquadmath0|libcc1-0|zlib1g|libzstd1|liblzma5|libbz2-1.0|libselinux1|libpcre2-8-0|libgmp10|libdb5.3|debconf|dpkg|perl-base|libsystemd0|libcap2|libudev1|libmd0|libbsd0|libxxhash0|libhiredis0.14)$'

# Depends of the given packages, first alternative of each "a | b" group, virtual packages resolved to their
# first provider: one "package dependency" pair per line (one apt-cache call for a whole BFS level).
depends_of() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "$@" 2>/dev/null |
    awk '
      /^[^ ]/ { pkg = $1; in_alt = 0; want_provider = 0; next }
      /^ *\|?(Pre)?Depends:/ {
        alt = ($1 ~ /^\|/)           # this line continues an alternative group
        name = $2
        if (!in_alt) {               # first of its group: take it
          if (name ~ /^</) { want_provider = 1 } else { print pkg, name; want_provider = 0 }
        }
        in_alt = alt
        next
      }
      /^    [^ ]/ && want_provider { print pkg, $1; want_provider = 0 }
    '
}

declare -A seen=()
level=("${DEV_PACKAGES[@]}")
wanted=()
while ((${#level[@]})); do
  fresh=()
  for pkg in "${level[@]}"; do
    [[ -n "${seen[$pkg]:-}" ]] && continue
    seen[$pkg]=1
    [[ "$pkg" =~ $BASE_REGEX || "$pkg" =~ $SKIP_REGEX ]] && continue
    fresh+=("$pkg")
  done
  ((${#fresh[@]})) || break
  known="$(apt-cache show --no-all-versions "${fresh[@]}" 2>/dev/null | awk '/^Package:/ {print $2}' | sort -u)"
  for pkg in "${fresh[@]}"; do
    grep -qx "$pkg" <<< "$known" ||
      { log "error: apt-cache knows no package '$pkg' (run apt-get update on this Debian 12 machine)"; exit 1; }
  done
  wanted+=("${fresh[@]}")
  mapfile -t level < <(depends_of "${fresh[@]}" | awk '{print $2}' | sort -u)
done

log "downloading ${#wanted[@]} packages into $OUT/debs"
rm -rf "$OUT/debs" && mkdir -p "$OUT/debs"
(cd "$OUT/debs" && apt-get download -qq "${wanted[@]}")

log "reference: nanochat at $REFERENCE_COMMIT"
repo="${NANOCHAT_REPO:-}"
if [[ -z "$repo" ]]; then
  for candidate in /work/.mirror/karpathy+nanochat/repo /tmp/nanochat-ref/.git; do
    if git -C "$candidate" cat-file -e "$REFERENCE_COMMIT^{commit}" 2>/dev/null; then repo="$candidate"; break; fi
  done
fi
if [[ -z "$repo" ]]; then
  repo="$OUT/.nanochat-clone"
  [[ -d "$repo" ]] || git clone --quiet --bare https://github.com/karpathy/nanochat.git "$repo"
fi
git -C "$repo" archive --format=tar --prefix=nanochat/ "$REFERENCE_COMMIT" > "$OUT/nanochat-$REFERENCE_COMMIT.tar"
rm -rf "$OUT/.nanochat-clone"

{
  echo "l3lab GPU bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME") by tools/gpu/prepare.sh"
  echo "reference: nanochat-$REFERENCE_COMMIT.tar ($(du -k "$OUT/nanochat-$REFERENCE_COMMIT.tar" | cut -f1) KiB)"
  echo "packages (${#wanted[@]}):"
  (cd "$OUT/debs" && for f in *.deb; do printf '  %8s KiB  %s\n' "$(( $(stat -c %s "$f") / 1024 ))" "$f"; done)
} > "$OUT/MANIFEST.txt"

total_kib=$(du -sk --apparent-size "$OUT" | cut -f1)
echo "total: $((total_kib / 1024)) MiB ($total_kib KiB)" >> "$OUT/MANIFEST.txt"
log "bundle: $OUT, $((total_kib / 1024)) MiB in all (${#wanted[@]} .deb files + the reference)"
if ((total_kib > LIMIT_MB * 1024)); then
  log "error: the bundle is over the ${LIMIT_MB} MB budget"; exit 1
fi

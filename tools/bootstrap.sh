#!/usr/bin/env bash
# Installs everything l3lab needs on a fresh Debian 12 machine, and nothing when it is all present.
#   - Debian -dev packages (apt-get) for the C++ libraries and tools
#   - libtorch from PyPI's torch wheel, pinned, inside the project-local virtualenv .venv/, with the
#     tensorboard wheel beside it (the tests read l3lab's event files with TensorBoard's own reader, and
#     `.venv/bin/tensorboard --logdir runs` shows them), and the pyarrow wheel, whose bundled Arrow C++
#     libraries and headers (libarrow, libparquet) read nanochat's parquet data (docs/data.md)
# Idempotent: a second run checks a stamp and the package list and returns in well under 5 seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.11.0"
TENSORBOARD_VERSION="2.21.0"
PYARROW_VERSION="26.0.1"
VENV="$ROOT/.venv"
STAMP="$VENV/.l3lab-bootstrap"

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libyaml-cpp-dev
  libboost-program-options-dev
  libhdf5-dev
  libspdlog-dev libfmt-dev
  nlohmann-json3-dev
  # TensorBoard event files (docs/tracking.md): protobuf-c and its compiler (Boost.CRC comes with Boost)
  libprotobuf-c-dev protobuf-c-compiler
  libssl-dev
  libsentencepiece-dev
  # nanochat's tokenizer: its split pattern needs Unicode properties, possessive quantifiers, look-ahead
  libpcre2-dev
  libgtest-dev libgmock-dev
  # headers only, for declaring libtorch's built-in Gloo backend (docs/distributed.md); libgloo is not linked
  libgloo-dev
  python3-h5py python3-matplotlib python3-pandas
  # single-node SLURM for the `sweep slurm` test (tools/slurm/local_cluster.sh; docs/slurm.md)
  slurmctld slurmd slurm-client munge
)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  echo "${missing[@]:-}"
}

install_debian_packages() {
  local missing
  missing="$(missing_packages)"
  [[ -z "$missing" ]] && return 0
  log "installing Debian packages: $missing"
  local sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing
}

python_for_venv() {
  # Prefer the python3 on PATH; fall back to Debian's.
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import venv, ensurepip' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

install_torch() {
  local want="torch==$TORCH_VERSION tensorboard==$TENSORBOARD_VERSION pyarrow==$PYARROW_VERSION"
  if [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$want" ]] && [[ -x "$VENV/bin/python" ]]; then
    return 0
  fi
  local py
  if ! py="$(python_for_venv)"; then
    log "no python3 with venv/ensurepip; installing Debian's python3-venv"
    DEBIAN_PACKAGES+=(python3-venv) ; install_debian_packages
    py=/usr/bin/python3
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  log "installing $want into $VENV (a few GB on the first run)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" \
    "tensorboard==$TENSORBOARD_VERSION" "pyarrow==$PYARROW_VERSION" numpy safetensors pyyaml
  "$VENV/bin/python" -c "import torch, sys; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__"
  "$VENV/bin/python" -c "import tensorboard; assert tensorboard.__version__ == '$TENSORBOARD_VERSION', tensorboard.__version__"
  "$VENV/bin/python" -c "import pyarrow; assert pyarrow.__version__ == '$PYARROW_VERSION', pyarrow.__version__"
  echo "$want" > "$STAMP"
}

install_debian_packages
install_torch

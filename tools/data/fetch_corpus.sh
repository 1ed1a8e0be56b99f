#!/usr/bin/env bash
# The default corpus on a fresh Debian 12 machine: the English reStructuredText sources of the Linux
# kernel documentation (html/_sources of Debian's linux-doc-6.1 package, about 2,800 documents and
# 21 MB), one document per .rst file, written as JSON lines {"text": ..., "source": ...} in a fixed
# pseudo-random order (sorted by the sha256 of each file's path), like the reference's pre-shuffled
# parquet shards. Only Debian's archive is contacted; nothing is installed.
#
#   tools/data/fetch_corpus.sh [OUT_DIR]      # default data/corpus; writes linux-doc.jsonl + SOURCE
#
# Idempotent: returns at once when OUT_DIR/linux-doc.jsonl and its SOURCE record exist.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/data/corpus}"
PACKAGE="${L3LAB_CORPUS_PACKAGE:-linux-doc-6.1}"
JSONL="$OUT/linux-doc.jsonl"

log() { printf '[fetch_corpus] %s\n' "$*" >&2; }

if [[ -s "$JSONL" && -s "$OUT/SOURCE" ]]; then
  log "present: $JSONL ($(head -n1 "$OUT/SOURCE"))"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

log "downloading Debian's $PACKAGE (about 37 MB)"
if ! (cd "$WORK" && apt-get download -qq "$PACKAGE" 2>"$WORK/apt.err"); then
  # A fresh machine may not have package lists yet.
  log "apt-get download failed; updating the package lists and trying again"
  sudo=""; [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  (cd "$WORK" && apt-get download -qq "$PACKAGE") || { cat "$WORK/apt.err" >&2; exit 1; }
fi
DEB="$(ls "$WORK"/*.deb)"
dpkg-deb -x "$DEB" "$WORK/pkg"
SRC="$WORK/pkg/usr/share/doc/$PACKAGE/html/_sources"
[[ -d "$SRC" ]] || { log "no html/_sources in $(basename "$DEB")"; exit 1; }

PYTHON="python3"
[[ -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"
"$PYTHON" - "$SRC" "$JSONL.tmp" "$PACKAGE" <<'PY'
import hashlib, json, pathlib, sys

src, out, package = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
files = [p for p in src.rglob("*.txt") if p.is_file() and "translations" not in p.relative_to(src).parts]
files.sort(key=lambda p: hashlib.sha256(str(p.relative_to(src)).encode()).hexdigest())
docs = skipped = chars = 0
with open(out, "w", encoding="utf-8") as f:
    for p in files:
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if not text.strip():
            skipped += 1
            continue
        rel = str(p.relative_to(src))
        f.write(json.dumps({"text": text, "source": f"{package}/html/_sources/{rel}"}, ensure_ascii=False) + "\n")
        docs += 1
        chars += len(text)
print(f"{docs} documents, {chars} characters ({skipped} skipped: empty or not UTF-8)")
PY
mv "$JSONL.tmp" "$JSONL"
{
  echo "$(basename "$DEB")"
  echo "sha256 $(sha256sum "$DEB" | cut -d' ' -f1)"
  echo "documents $(wc -l < "$JSONL"), bytes $(wc -c < "$JSONL")"
  echo "from html/_sources/**/*.rst.txt without translations/, one document per file"
} > "$OUT/SOURCE"
log "wrote $JSONL ($(sed -n 3p "$OUT/SOURCE"))"

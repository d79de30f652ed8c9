#!/usr/bin/env bash
# Builds real, unmodified C code bases to wasm32-wasi test modules (called by
# tools/build_wasm_fixtures.sh):
#   target/wasm-fixtures/sqlite.wasm  the SQLite amalgamation (crates.io libsqlite3-sys)
#   target/wasm-fixtures/zlib.wasm    zlib (crates.io libz-sys)
# each linked with a driver of ours, tests/wasm/codebases/<name>_main.c.
#
# The packages are pinned in tests/wasm/codebases/sources.txt (version + SHA-256 of the .crate),
# downloaded from static.crates.io into target/c-codebases/ and verified before use; the C files
# are compiled straight from the unpacked package. Needs curl, clang, lld, wasi-libc and the wasm32
# compiler-rt builtins (Debian `libclang-rt-14-dev-wasm32`: SQLite needs the `long double`
# helpers). Cached: a module is rebuilt only when its key (package pin, flags, driver source,
# clang version) changes; the SQLite amalgamation object has its own key, so a driver change does
# not recompile it.
#
# Usage: bash tools/build_c_codebases.sh <sysroot>
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot=${1:?usage: bash tools/build_c_codebases.sh <wasi sysroot>}
out=target/wasm-fixtures
cache=target/c-codebases
pins=tests/wasm/codebases/sources.txt
mkdir -p "$out" "$cache"

die() {
  echo "build_c_codebases: $*" >&2
  exit 1
}
builtins=$(clang --target=wasm32-wasi -print-libgcc-file-name)
[ -f "$builtins" ] ||
  die "no compiler-rt builtins for wasm32 at $builtins (apt-get install libclang-rt-14-dev-wasm32)"
cc=(nice -n 10 clang --target=wasm32-wasi "--sysroot=$sysroot" -O2)
clang_id=$(clang --version | head -n 1)

pin() { # pin <name>: "crate version sha256"
  local line
  line=$(awk -v n="$1" '$1 == n { print $2, $3, $4 }' "$pins")
  [ -n "$line" ] || die "no pin for $1 in $pins"
  echo "$line"
}

# fetch <crate> <version> <sha256>: prints the unpacked package's directory.
# shellcheck source=tools/crate_fetch.sh
. tools/crate_fetch.sh
fetch() { crate_fetch "$cache" "$@" || die "fetch of $1 $2 failed"; }

key() { # key <text> <file>...: a hash of the text and the files' contents
  local text=$1
  shift
  { printf '%s\n%s\n' "$text" "$clang_id" && cat "$@"; } | sha256sum | cut -c1-16
}

# fresh <output> <key>: whether <output> was built with <key>.
fresh() { [ -f "$1" ] && [ "$(cat "$1.key" 2>/dev/null)" = "$2" ]; }

timed() { # timed <label> <command>...
  local start=$SECONDS
  "${@:2}"
  echo "built $1 in $((SECONDS - start)) s"
}

# SQLite: the amalgamation as libsqlite3-sys builds it for wasm32-wasi (THREADSAFE=0 and wasi-libc's
# emulations of mmap/getpid/signal/process clocks), plus FTS5, R*Tree and the math functions for
# the workloads; temporary tables in memory (no preopened directory for temp files).
read -r crate version sha <<<"$(pin sqlite)"
src=$(fetch "$crate" "$version" "$sha")/sqlite3
sqlite_flags=(-DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_TEMP_STORE=3
  -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_RTREE -DSQLITE_ENABLE_MATH_FUNCTIONS
  -D_WASI_EMULATED_MMAN -D_WASI_EMULATED_GETPID -D_WASI_EMULATED_SIGNAL
  -D_WASI_EMULATED_PROCESS_CLOCKS)
sqlite_libs=(-lwasi-emulated-mman -lwasi-emulated-getpid -lwasi-emulated-signal
  -lwasi-emulated-process-clocks)
obj_key=$(key "$crate $version $sha ${sqlite_flags[*]}")
obj="$cache/sqlite3-$obj_key.o"
if [ ! -f "$obj" ]; then
  rm -f "$cache"/sqlite3-*.o
  timed "the SQLite amalgamation ($crate $version)" \
    "${cc[@]}" "${sqlite_flags[@]}" -w -c "$src/sqlite3.c" -o "$obj.part"
  mv "$obj.part" "$obj"
fi
main=tests/wasm/codebases/sqlite_main.c
k=$(key "$obj_key ${sqlite_libs[*]}" "$main")
if ! fresh "$out/sqlite.wasm" "$k"; then
  "${cc[@]}" -I"$src" "$main" "$obj" "${sqlite_libs[@]}" -Wl,--strip-debug -o "$out/sqlite.wasm.part"
  mv "$out/sqlite.wasm.part" "$out/sqlite.wasm"
  echo "$k" >"$out/sqlite.wasm.key"
fi

# zlib: the library's C files (the same list libz-sys compiles, with the gz* file functions).
read -r crate version sha <<<"$(pin zlib)"
src=$(fetch "$crate" "$version" "$sha")/src/zlib
zlib_files=()
for f in adler32 compress crc32 deflate gzclose gzlib gzread gzwrite infback inffast inflate \
  inftrees trees uncompr zutil; do zlib_files+=("$src/$f.c"); done
zlib_flags=(-DSTDC -D_LARGEFILE64_SOURCE)
main=tests/wasm/codebases/zlib_main.c
k=$(key "$crate $version $sha ${zlib_flags[*]}" "$main")
if ! fresh "$out/zlib.wasm" "$k"; then
  timed "zlib ($crate $version)" "${cc[@]}" "${zlib_flags[@]}" -I"$src" "$main" \
    "${zlib_files[@]}" -Wl,--strip-debug -o "$out/zlib.wasm.part"
  mv "$out/zlib.wasm.part" "$out/zlib.wasm"
  echo "$k" >"$out/zlib.wasm.key"
fi

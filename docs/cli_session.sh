#!/usr/bin/env bash
# Produces docs/cli.md's transcript: every command is run for real, output and exit code shown.
# Usage: bash docs/cli_session.sh <scratch dir> (with the modules, testguest, data/, out/ in it;
# it writes hello.js, loop.js, hello.py, serve.json and bad_serve.json there itself)
HL_CLI=${HL_CLI:-$(cd "$(dirname "$0")/.." && pwd)/cli.ts}
cd "${1:-.}"
hl() { NO_COLOR=1 deno run -A --quiet "$HL_CLI" "$@"; }
show() {
  local input=""
  if [ "$1" = "<<<" ]; then input="$2"; shift 2; fi
  printf '$ %s\n' "$*"
  if [ -n "$input" ]; then printf '%s' "$input" | eval "$@" 2>&1; else eval "$@" 2>&1 </dev/null; fi
  printf '[exit %d]\n\n' "$?"
}
show hl --help
show hl run --help
show hl run wasi_hello.wasm -- one two
show hl run --env GREETING=bonjour --stats wasi_hello.wasm
show "printf 'piped\ninput\n' | hl run wasi_files.wasm stdin"
show hl run --dir data::/data wasi_files.wasm ls /data
show hl run --dir data::/data wasi_files.wasm cat /data/words.txt
show hl run --dir data::/data wasi_files.wasm cat /data/shortcut
show hl run --dir data::/data wasi_files.wasm cat /data/../secret.txt
show hl run --dir data::/data wasi_files.wasm write /data/new.txt hello
show hl run --dir-rw out::/out wasi_files.wasm write /out/new.txt hello
show cat out/new.txt
show hl run --timeout 100 --fuel 1000000 wasi_files.wasm stdin
show hl inspect fib.wasm
show hl inspect values.wasm
show hl inspect --json fib.wasm
show hl inspect testguest
show hl call fib.wasm fib 25
show hl call testguest add 40 2
show hl call testguest echo "'héllo'"
show hl call testguest echo_bytes hex:cafe
show hl call fib.wasm fib
show hl call values.wasm id_i32 1
show hl call traps.wasm div_zero 1
show hl call --timeout 100 traps.wasm spin
show hl call --fuel 1000 fib.wasm fib 30
show hl call --engine wasmtime fib.wasm fib 30
show hl run --engine v8 fib.wasm
show hl run missing.wasm
show hl run --frobnicate fib.wasm
printf 'console.log("hello from", scriptArgs.join(" "));\nglobalThis.exitCode = 3;\n' > hello.js
printf 'for (;;) {}\n' > loop.js
printf 'import sys\nprint("hello from", " ".join(sys.argv[1:]))\nsys.exit(3)\n' > hello.py
printf '{ "routes": [{ "path": "/hello/*", "kind": "wagi", "module": "wasi_hello.wasm" }] }\n' \
  > serve.json
printf '{ "routes": [{ "path": "hello", "kind": "wagi" }] }\n' > bad_serve.json
show hl js hello.js one two
show hl js --timeout 100 loop.js
show hl py hello.py one two
show hl serve --check --config serve.json
show hl serve --check --config bad_serve.json

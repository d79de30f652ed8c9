#!/usr/bin/env bash
# The README's "your own guest" steps, from an empty directory, as a script the tests run
# (tests/kvm/new_guest.test.ts): setup, `hl new-guest`, `cargo build --release`, `hl call`.
#
#   tools/guest_quickstart.sh <empty-dir>
#
# HL_CLI / HL_SETUP: the entry points (default: the published ones on JSR; a test passes the
# clone's cli.ts / setup.ts). HL_SKIP_SETUP=1 skips the setup (a clone that is already built).
# The guest's cargo target directory is inside <empty-dir>/my-guest (CARGO_TARGET_DIR is unset).
set -euo pipefail
dir=${1:?usage: guest_quickstart.sh <empty-dir>}
cli=${HL_CLI:-jsr:@hl/sandbox/cli}
setup=${HL_SETUP:-jsr:@hl/sandbox/setup}
unset CARGO_TARGET_DIR
cd "$dir"

# 1. The library, the built-in guests and the guest runtime's sources (once per version).
[ "${HL_SKIP_SETUP:-0}" = 1 ] || deno run -A "$setup"
# 2. A guest project: Cargo.toml, .cargo/config.toml, src/main.rs.
deno run -A "$cli" new-guest my-guest
# 3. Build it.
(cd my-guest && cargo build --release)
# 4. Call it.
guest=my-guest/target/x86_64-unknown-linux-gnu/release/my-guest
deno run -A "$cli" call "$guest" add 2 3
deno run -A "$cli" call "$guest" greet world

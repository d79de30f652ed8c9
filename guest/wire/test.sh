#!/usr/bin/env bash
# Runs the hl-wire tests natively (on the host, with std).
#
# The guest workspace's .cargo/config.toml gives every crate built for the target the
# freestanding link flags (-nostartfiles -nostdlib -static-pie ...), which a std test harness
# cannot link with. A set-but-empty RUSTFLAGS takes precedence over `target.<triple>.rustflags`,
# so the tests build as ordinary host programs.
#
# HL_REQUIRE_VECTORS=1: a missing tests/vectors/wire.json is a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS= exec cargo test -p hl-wire "$@"

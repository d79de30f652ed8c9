#!/usr/bin/env bash
# The one test command (`deno task test`): builds what is needed, runs the static checks and the
# tests that need no KVM natively, then the KVM tests where /dev/kvm is usable — natively, or
# inside the nested-KVM harness (tools/vm/run.sh) otherwise — and a short smoke stage forced
# through the harness. Ends with "N passed, N failed".
#
# HL_REQUIRE_KVM=1: a KVM test that did not really execute is a failure (CI sets it).
set -uo pipefail
cd "$(dirname "$0")/.."
export NO_COLOR=1

passed=0
failed=0
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

note() { printf '\n== %s\n' "$*"; }

# Counts one stage from its exit code and its runner's own summary: for Deno the last line
# "ok | N passed (M steps) | N failed | N ignored (...)" (or "FAILED | ..."), for cargo every
# "test result: ok. N passed; N failed; N ignored; ..." line (one per test binary). Nothing else
# in the output is read, so a test that prints "3 failed" cannot change the totals. A stage that
# exits non-zero counts at least one failure (a crash is never a pass); a stage that exits 0 but
# has no summary is a failure too (its runner did not finish).
count() {
  local name=$1 rc=$2 out=$3 runner=$4 kind=$5 p=0 f=0 ignored=0 line summaries=0
  local n='([0-9]+)'
  if [ "$runner" = deno ]; then
    line=$(tr -d '\r' <"$out" | grep -aE "^(ok|FAILED) \| $n passed" | tail -n 1)
    if [[ $line =~ ^(ok|FAILED)\ \|\ $n\ passed.*\|\ $n\ failed ]]; then
      p=${BASH_REMATCH[2]} f=${BASH_REMATCH[3]} summaries=1
      [[ $line =~ \|\ $n\ ignored ]] && ignored=${BASH_REMATCH[1]}
    fi
  else
    while read -r line; do
      if [[ $line =~ ^test\ result:\ [a-zA-Z]+\.\ $n\ passed\;\ $n\ failed\;\ $n\ ignored ]]; then
        p=$((p + BASH_REMATCH[1])) f=$((f + BASH_REMATCH[2]))
        ignored=$((ignored + BASH_REMATCH[3])) summaries=$((summaries + 1))
      fi
    done < <(tr -d '\r' <"$out" | grep -aE '^test result: ')
  fi
  if [ "$summaries" -eq 0 ]; then
    echo "$name: no summary line from $runner (exit $rc)"
    f=$((f + 1))
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
  fi
  if [ "${HL_REQUIRE_KVM:-0}" = 1 ] && [ "$kind" = kvm ]; then
    if [ "$ignored" -ne 0 ]; then
      echo "$name: $ignored KVM test(s) were ignored although HL_REQUIRE_KVM=1"
      f=$((f + ignored))
    fi
    if [ "$p" -eq 0 ]; then
      echo "$name: no KVM test executed although HL_REQUIRE_KVM=1"
      f=$((f + 1))
    fi
  fi
  echo "-- $name: $p passed, $f failed"
  passed=$((passed + p))
  failed=$((failed + f))
}

# One check that is not a test runner: a pass or a failure.
check() {
  local name=$1
  shift
  if "$@" >"$log/check" 2>&1; then
    passed=$((passed + 1))
    echo "-- $name: ok"
  else
    failed=$((failed + 1))
    cat "$log/check"
    echo "-- $name: FAILED"
  fi
}

# stage <name> <deno|cargo> <unit|kvm> <command...>: one test runner's run, counted by count().
stage() {
  local name=$1 runner=$2 kind=$3
  shift 3
  note "$name"
  "$@" 2>&1 | tee "$log/out"
  count "$name" "${PIPESTATUS[0]}" "$log/out" "$runner" "$kind"
}

note "build"
if ! bash tools/build.sh; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

note "static checks"
check "deno fmt --check" deno fmt --check
check "deno lint" deno lint
check "deno check" deno check mod.ts setup.ts cli.ts src/ tests/ bench/ examples/ tools/
# The JSDoc examples (and the README's code blocks go through mod.ts's own example) type-check.
check "deno check --doc" deno check --doc mod.ts setup.ts cli.ts src/
check "deno doc --lint" deno doc --lint mod.ts setup.ts cli.ts
check "deno publish --dry-run" deno publish --dry-run --allow-dirty
check "src/rust_sources.ts is current" deno run --allow-run --allow-read tools/rust_sources.ts --check
check "cargo fmt --check" cargo fmt --all -- --check
# The Kubernetes manifests: decoded strictly into the upstream API types and checked against the
# deployment's rules, with negative fixtures (deploy/validate; docs/deploy.md, "Validation").
# -count=1: go test's result cache did not notice an edited manifest (a privileged: true passed).
check "k8s manifests (deploy/validate gofmt + go test)" env PATH="$PATH:/usr/local/go/bin" \
  GOFLAGS=-mod=readonly bash -c 'cd deploy/validate && test -z "$(gofmt -l .)" && go test -count=1 ./...'
check "cargo clippy (rust-vmm)" cargo clippy --release -p hl-rust-vmm -- -D warnings
check "cargo clippy (compiler)" cargo clippy --release -p hl-wasm-compiler --all-targets -- -D warnings
if [ -f guest/Cargo.toml ]; then
  check "cargo fmt --check (guests)" bash -c 'cd guest && cargo fmt --all -- --check'
  check "cargo clippy (guests)" bash -c 'cd guest && cargo clippy --release -- -D warnings'
fi

# --allow-net and --allow-run: the networking tests (net_hostile, net_telemetry) start servers on
# loopback, connect to names their own resolver pins there, and run a child with HTTP_PROXY set.
stage "deno unit tests (no KVM)" deno unit deno test --allow-read --allow-write --allow-env --allow-ffi --allow-net --allow-run tests/unit/
if [ -f guest/wire/Cargo.toml ]; then
  stage "hl-wire tests (no KVM)" cargo unit bash -c 'cd guest && bash wire/test.sh'
fi
if [ -f guest/wasi/Cargo.toml ]; then
  # Native, like hl-wire: an empty RUSTFLAGS drops the freestanding link flags.
  stage "hl-wasi tests (no KVM)" cargo unit bash -c 'cd guest && RUSTFLAGS= cargo test -p hl-wasi'
fi

stage "compiler tests (no KVM)" cargo unit cargo test --release -p hl-wasm-compiler

# Compile the Rust tests natively: compiling under the emulator would take minutes.
check "cargo test --no-run (rust-vmm)" cargo test --release -p hl-rust-vmm --no-run

KVM_TESTS="deno test --no-check --allow-all --v8-flags=--expose-gc tests/kvm/ tests/hostile/"
stage "rust-vmm tests (KVM)" cargo kvm bash tools/vm/run.sh cargo test --release -p hl-rust-vmm
stage "deno KVM tests" deno kvm bash tools/vm/run.sh $KVM_TESTS

# The nested-QEMU path (hosts with no usable /dev/kvm) stays tested: a few KVM tests forced
# through the harness. They cover the CPL-3 entry, the host's exception stubs and fault frames
# on hardware-style (SVM) KVM. HL_SKIP_NESTED=1 leaves it out (a local quick run).
if [ "${HL_SKIP_NESTED:-0}" != 1 ]; then
  stage "nested-QEMU smoke (KVM)" deno kvm env HL_VM_FORCE=1 bash tools/vm/run.sh \
    deno test --no-check --allow-all tests/kvm/abi_version.test.ts tests/kvm/ring3.test.ts \
    tests/kvm/restore_state.test.ts \
    tests/kvm/cpuid.test.ts
fi

# The OCI image built offline and run under podman with /dev/kvm, read-only, non-root, no
# capabilities, serving on loopback (tools/image_test.sh). It needs native KVM (podman passes the
# host's /dev/kvm); HL_SKIP_IMAGE=1 leaves it out.
if [ "${HL_SKIP_IMAGE:-0}" != 1 ]; then
  note "image test (podman, /dev/kvm)"
  if bash tools/vm/run.sh --probe >/dev/null 2>&1; then
    check "image test (podman, /dev/kvm)" bash tools/image_test.sh
  elif [ "${HL_REQUIRE_KVM:-0}" = 1 ]; then
    echo "image test: no native KVM although HL_REQUIRE_KVM=1"
    failed=$((failed + 1))
  else
    echo "image test: skipped (no native KVM here)"
  fi
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

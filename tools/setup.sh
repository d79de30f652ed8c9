#!/usr/bin/env bash
# The one set-up script, used by `deno task demo`, `deno task test` and `.ci/run`. It starts from
# a machine with only Deno and cargo and makes sure what the given purpose needs is there:
#
#   demo  the cdylib, the KVM probe and the guests (cargo). The demo's Wasm is written out in
#         examples/demo.ts, so no Debian package is needed where the KVM probe passes natively;
#         where it does not, the nested-KVM harness's packages (QEMU, a kernel, busybox, ...).
#   test  the Wasm fixture toolchain (wabt, clang, lld, wasi-libc, the wasm32 compiler-rt
#         builtins, curl for the pinned C code bases) and the harness's packages
#         (the test suite always runs a nested-QEMU smoke stage; HL_SKIP_NESTED=1 leaves them
#         out where the probe passes natively). tools/test.sh then builds and runs everything.
#         Also the image test's packages (podman, runc, mmdebstrap: tools/image_test.sh;
#         HL_SKIP_IMAGE=1 leaves them out) and a check that Go is there (deploy/validate).
#   load  the load generator of tools/serve_load.sh (`wrk`, and `curl` for its readiness polls).
#
# Missing Debian packages: as root they are installed (saying so in one line); otherwise the
# exact command is printed and the script fails.
#
# Usage: bash tools/setup.sh demo|test|load
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in demo | test | load) ;; *) echo "usage: bash tools/setup.sh demo|test|load" >&2 && exit 2 ;; esac

die() {
  echo "setup: $*" >&2
  exit 1
}
command -v cargo >/dev/null || die "cargo not found: install Rust stable (https://rustup.rs)"
command -v deno >/dev/null || die "deno not found: npm install -g deno@2"

# What each package provides, checked by what the scripts actually use (so a tool hidden from
# PATH counts as missing): "package:check" where check is a command or an absolute path glob.
QEMU_NEEDS=(qemu-system-x86:qemu-system-x86_64 "linux-image-amd64:/boot/vmlinuz-*"
  busybox-static:/bin/busybox kmod:modprobe cpio:cpio file:file xz-utils:xz zstd:zstd)
FIXTURE_NEEDS=(wabt:wat2wasm clang:clang lld:wasm-ld "wasi-libc:/usr/lib/wasm32-wasi/libc.a"
  "libclang-rt-14-dev-wasm32:/usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a"
  curl:curl python3-pip:pip3)
# The image test: podman builds and runs the image (runc: crun refuses hybrid cgroup hosts),
# mmdebstrap makes its root file system (docs/deploy.md).
IMAGE_NEEDS=(podman:podman runc:runc mmdebstrap:mmdebstrap curl:curl)

have() {
  local check=$1
  if [ "${check#/}" != "$check" ]; then
    compgen -G "$check" >/dev/null
  else
    PATH="$PATH:/usr/sbin:/sbin" command -v "$check" >/dev/null
  fi
}

# ensure <purpose> <package:check>...: installs (root) or names the command (otherwise).
ensure() {
  local why=$1 need missing=() checks=()
  shift
  for need in "$@"; do
    have "${need#*:}" || { missing+=("${need%%:*}") && checks+=("${need#*:}"); }
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local cmd="apt-get update && apt-get install -y ${missing[*]}"
  command -v apt-get >/dev/null ||
    die "$why needs ${checks[*]} (Debian packages: ${missing[*]}); no apt-get here: install them with your package manager"
  if [ "${EUID:-$(id -u)}" != 0 ]; then
    die "$why needs Debian packages that are missing: ${missing[*]}. Run: sudo sh -c '$cmd'"
  fi
  echo "setup: installing Debian packages for $why: ${missing[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 ||
    die "apt-get could not install ${missing[*]}: run \`$cmd\` to see why"
  for need in "$@"; do
    have "${need#*:}" || die "${need#*:} is still missing after installing ${need%%:*}"
  done
}

# Whether guests run natively here (the harness's own probe; builds the probe if needed).
native_kvm() {
  bash tools/vm/run.sh --probe >/dev/null 2>&1
}

case "$mode" in
demo)
  bash tools/build.sh native
  native_kvm || ensure "the nested-KVM harness (no usable /dev/kvm here)" "${QEMU_NEEDS[@]}"
  ;;
load)
  ensure "the serve load test" wrk:wrk curl:curl
  ;;
test)
  ensure "the Wasm test fixtures" "${FIXTURE_NEEDS[@]}"
  [ "${HL_SKIP_IMAGE:-0}" = 1 ] || ensure "the image test" "${IMAGE_NEEDS[@]}"
  PATH="$PATH:/usr/local/go/bin" command -v go >/dev/null ||
    die "go not found: the manifest validator (deploy/validate) needs Go >= 1.26 (https://go.dev/dl)"
  if [ "${HL_SKIP_NESTED:-0}" != 1 ]; then
    ensure "the nested-QEMU smoke stage" "${QEMU_NEEDS[@]}"
  else
    cargo build --release -q -p hl-rust-vmm --example kvm_probe
    native_kvm || ensure "the nested-KVM harness (no usable /dev/kvm here)" "${QEMU_NEEDS[@]}"
  fi
  ;;
esac

#!/usr/bin/env bash
# tools/vm/run.sh — run a command where /dev/kvm is usable.
#
#   bash tools/vm/run.sh <command> [args...]      (or: deno task vm <command> [args...])
#
# native      /dev/kvm opens read-write here: exec the command as is.
# nested-qemu no usable /dev/kvm: boot the host's Debian kernel under QEMU's emulator
#             (TCG, -cpu max emulates AMD SVM), load kvm_amd inside, and run the command
#             there in a chroot of the host's root filesystem. See tools/vm/README.md.
#
# Exit status: the command's; 125 when the harness itself fails (missing QEMU or kernel, VM
# died, no /dev/kvm inside the VM).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$repo/.vm-cache"

say() { echo "hl-vm: $*" >&2; }
fail() {
    say "$*"
    exit 125
}

if [ $# -eq 0 ]; then
    echo "usage: bash tools/vm/run.sh <command> [args...] | --probe" >&2
    exit 2
fi

# --- native mode -------------------------------------------------------------------------
# Opening /dev/kvm is not enough: "usable" means the functional probe
# (rust-vmm/examples/kvm_probe.rs: a tiny CPL-3 guest of SSE instructions, a store and two port
# writes, run the way sandboxes run) passes. A paravirtual KVM (kvm_pvm inside a cloud VM) passes
# it: it runs guest user mode natively. The mode line names the KVM module.
probe_bin="$repo/target/release/examples/kvm_probe"
why=""
kvm_usable() {
    if ! { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && (exec 3<>/dev/kvm) 2>/dev/null; }; then
        why="no usable /dev/kvm on this host"
        return 1
    fi
    if [ ! -x "$probe_bin" ] && command -v cargo >/dev/null 2>&1; then
        (cd "$repo" && cargo build --release -q -p hl-rust-vmm --example kvm_probe) >&2 || true
    fi
    if [ ! -x "$probe_bin" ]; then
        why="/dev/kvm opens, but the KVM probe could not be built (cargo build --release -p hl-rust-vmm --example kvm_probe)"
        return 1
    fi
    local out
    if out=$("$probe_bin" 2>&1); then
        return 0
    fi
    why="/dev/kvm opens but cannot run guests: ${out#kvm_probe: }"
    return 1
}
if [ "${HL_VM_INSIDE:-}" = 1 ]; then
    # Already inside the harness VM (a task calling the harness again): never nest twice.
    say "mode=native (inside the hl-vm VM)"
    [ "$1" = --probe ] && exit 0
    exec "$@"
fi
if [ "${HL_VM_FORCE:-}" != 1 ] && kvm_usable; then
    kind="hardware"
    if [ -d /sys/module/kvm_pvm ]; then
        kind="kvm_pvm, paravirtual"
    elif [ -d /sys/module/kvm_intel ]; then
        kind="kvm_intel, hardware"
    elif [ -d /sys/module/kvm_amd ]; then
        kind="kvm_amd, hardware"
    fi
    say "mode=native ($kind: the KVM probe ran a CPL-3 SSE guest)"
    [ "$1" = --probe ] && exit 0
    exec "$@"
fi
# `--probe`: only say whether guests run natively (exit 0) or need this harness (exit 3).
if [ "$1" = --probe ]; then
    say "mode=nested-qemu needed (${why:-HL_VM_FORCE=1})"
    exit 3
fi

# --- nested-qemu mode --------------------------------------------------------------------
t0=$EPOCHREALTIME
if [ "${HL_VM_FORCE:-}" = 1 ]; then
    say "mode=nested-qemu (HL_VM_FORCE=1: running inside QEMU TCG with nested KVM (AMD SVM))"
else
    say "mode=nested-qemu ($why: running inside QEMU TCG with nested KVM (AMD SVM))"
fi

qemu=$(command -v "${HL_VM_QEMU:-qemu-system-x86_64}") ||
    fail "qemu-system-x86_64 not found: apt-get install qemu-system-x86 (needed without /dev/kvm)"
modprobe=$(PATH="$PATH:/usr/sbin:/sbin" command -v modprobe) ||
    fail "modprobe not found: apt-get install kmod"
busybox=${HL_VM_BUSYBOX:-/bin/busybox}
file -b "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    { [ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1; } ||
    fail "no static busybox at $busybox: apt-get install busybox-static"

# The kernel: HL_VM_KERNEL=/boot/vmlinuz-<kver>, else the newest /boot/vmlinuz-* that has a
# matching /lib/modules/<kver> (the VM loads kvm_amd, 9p, virtio, overlay from there).
kernel=${HL_VM_KERNEL:-}
if [ -z "$kernel" ]; then
    for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
        if [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ]; then
            kernel=$k
            break
        fi
    done
fi
[ -n "$kernel" ] ||
    fail "no /boot/vmlinuz-<kver> with /lib/modules/<kver>: apt-get install linux-image-amd64"
[ -r "$kernel" ] || fail "cannot read $kernel (chmod a+r it, or set HL_VM_KERNEL)"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || fail "no /lib/modules/$kver for $kernel"

# --- the kernel image, cached in .vm-cache/ -------------------------------------------------
# Booting the bzImage costs ~3 s under the emulator (firmware real-mode path plus an xz
# decompression of ~60 MB by emulated code). The uncompressed ELF vmlinux inside it has a
# PVH entry note (CONFIG_PVH=y in Debian's kernel), which QEMU boots directly: extract it once.
extract_vmlinux() { # <bzImage> <out>: 0 when <out> is an ELF vmlinux
    local magic tool off
    for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x28\xb5\x2f\xfd:zstd -qdc' \
        '\x1f\x8b\x08:gzip -dc'; do
        tool=${magic#*:}
        command -v "${tool%% *}" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "${magic%%:*}" "$1" 2>/dev/null | cut -d: -f1 | head -n 3); do
            tail -c +$((off + 1)) "$1" | $tool >"$2" 2>/dev/null
            [ "$(head -c 4 "$2" 2>/dev/null)" = $'\x7fELF' ] && return 0
        done
    done
    rm -f "$2"
    return 1
}
boot_image=$kernel
if [ "${HL_VM_BZIMAGE:-}" != 1 ] && grep -qx 'CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null; then
    vmlinux="$cache/vmlinux-$kver-$(stat -c %s-%Y "$kernel")"
    if [ ! -s "$vmlinux" ]; then
        mkdir -p "$cache"
        find "$cache" -maxdepth 1 -name 'vmlinux-*' ! -name '*.tmp.*' -delete
        if extract_vmlinux "$kernel" "$vmlinux.tmp.$$"; then
            mv -f "$vmlinux.tmp.$$" "$vmlinux"
        fi
    fi
    [ ! -s "$vmlinux" ] || boot_image=$vmlinux
fi

# --- the initramfs, cached in .vm-cache/ ----------------------------------------------------
build_initramfs() {
    local stage m base
    say "building $initrd"
    mkdir -p "$cache"
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    mkdir -p "$stage"/{bin,dev,proc,sys,host,newroot,rw,modules}
    cp "$busybox" "$stage/bin/busybox"
    # Only the applets init.sh uses.
    for a in sh mount insmod cat cp mkdir chmod grep echo sleep sync poweroff kill \
        stty mkfifo env chroot cut; do
        ln -s busybox "$stage/bin/$a"
    done
    for m in $modules; do
        base=$(basename "$m")
        case $m in
        *.ko.xz) base=${base%.xz} && xz -dc "$m" >"$stage/modules/$base" ;;
        *.ko.zst) base=${base%.zst} && zstd -qdc "$m" >"$stage/modules/$base" ;;
        *.ko.gz) base=${base%.gz} && gzip -dc "$m" >"$stage/modules/$base" ;;
        *) cp "$m" "$stage/modules/$base" ;;
        esac
        echo "$base" >>"$stage/modules/order"
    done
    cp "$here/init.sh" "$stage/init"
    chmod 0755 "$stage/init"
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$stage.cpio.gz"
    mv -f "$stage.cpio.gz" "$initrd" # atomic: concurrent runs never see half a file
    rm -rf "$stage"
    # Drop initramfs images of older kernels or older init scripts.
    find "$cache" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -name "${initrd##*/}" -delete
}

# Modules in load order, deduplicated ("builtin" lines are skipped: nothing to load).
modules=$(
    for m in kvm_amd 9p 9pnet_virtio virtio_pci overlay; do
        "$modprobe" -S "$kver" --show-depends "$m" ||
            fail "modprobe cannot resolve $m for kernel $kver"
    done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'
)
key=$( {
    echo "$kver"
    echo "$modules"
    cat "$here/init.sh"
    declare -f build_initramfs
    sha256sum "$busybox"
} | sha256sum | cut -c1-16)
initrd="$cache/initramfs-$kver-$key.cpio.gz"

[ -s "$initrd" ] || build_initramfs

# --- the job --------------------------------------------------------------------------------
# A host temp dir, read by the VM through the read-only host root share; its path goes on
# the kernel command line (so no whitespace in it).
tmpbase=${TMPDIR:-/tmp}
case $tmpbase in *[[:space:],]* | "") tmpbase=/tmp ;; esac
job=$(mktemp -d "$tmpbase/hl-vm.XXXXXX")
qpid=
cleanup() {
    if [ -n "$qpid" ]; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    # Unblock a stdout/stderr reader still waiting in open() (QEMU never started).
    for f in "$job/stdout" "$job/stderr"; do [ ! -p "$f" ] || : <>"$f"; done
    wait 2>/dev/null || true
    [ "${HL_VM_KEEP:-}" = 1 ] && say "job dir kept: $job" || rm -rf "$job"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The writable share: the current directory, or HL_VM_RW=<dir> (e.g. the repo root when
# running from a subdirectory whose build output goes to the root's target/).
cwd_log=$PWD
cwd_phys=$(pwd -P)
rw_phys=$(cd "${HL_VM_RW:-.}" && pwd -P) || fail "HL_VM_RW=$HL_VM_RW is not a directory"
printf '%s\n' "$rw_phys" >"$job/rw"

# The environment inside: an allowlist (the VM is a different machine; host paths such as
# TMPDIR or XDG_RUNTIME_DIR, sockets and display variables make no sense there).
{
    echo "#!$(command -v bash)"
    echo "# generated by tools/vm/run.sh"
    for name in $(compgen -e); do
        case $name in
        PATH | HOME | USER | LOGNAME | LANG | LC_* | TZ | CI | NO_COLOR | DENO_* | CARGO* | \
            RUSTUP_* | RUST* | HL_*) ;;
        *) continue ;;
        esac
        case $name in HL_VM_* | DENO_DIR | HOME) continue ;; esac
        printf 'export %s=%q\n' "$name" "${!name}"
    done
    # HOME stays the host's (writable through the overlay, discarded at the end); when the
    # overlay is unavailable, a fresh tmpfs dir instead.
    printf 'export HOME=%q\n' "${HOME:-/root}"
    # CARGO_HOME/RUSTUP_HOME: the host's toolchains, even if HOME moves.
    [ -n "${CARGO_HOME:-}" ] || [ ! -d "${HOME:-/root}/.cargo" ] ||
        printf 'export CARGO_HOME=%q\n' "$HOME/.cargo"
    [ -n "${RUSTUP_HOME:-}" ] || [ ! -d "${HOME:-/root}/.rustup" ] ||
        printf 'export RUSTUP_HOME=%q\n' "$HOME/.rustup"
    # DENO_DIR: the caller's if set, else Deno's default under HOME. Both live on the overlay:
    # the host's cache (npm packages: the VM has no network) is readable, writes are kept
    # in the VM only. Read-only root (no overlay): a tmpfs dir.
    [ -z "${DENO_DIR:-}" ] || printf 'export DENO_DIR=%q\n' "$DENO_DIR"
    cat <<'EOF'
if [ "$(cat /run/hl-vm/overlay)" != 1 ]; then
    export HOME=/tmp/hl-home DENO_DIR=/tmp/deno-dir
    mkdir -p "$HOME" "$DENO_DIR"
fi
export TERM=dumb HL_VM_INSIDE=1 HL_VM_MODE=nested-qemu
EOF
    printf 'cd -- %q 2>/dev/null || cd -- %q || exit 125\n' "$cwd_log" "$cwd_phys"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} >"$job/job.sh"
chmod 0755 "$job/job.sh"

# --- boot -----------------------------------------------------------------------------------
# QEMU option values: a ',' in a path is written ',,'.
qpath() { printf '%s' "${1//,/,,}"; }
mkfifo "$job/stdout" "$job/stderr"
cat "$job/stdout" &
pout=$!
cat "$job/stderr" >&2 &
perr=$!

# Serial ports: ttyS0 = console (kernel messages, exit marker) into a file, ttyS1 = stdout,
# ttyS2 = stderr, each into a FIFO copied to our own fd 1/2 by the cats above.
# -nodefaults: no VGA, NIC, floppy, CD-ROM (faster boot; the VM has no network).
qemu_args=(
    -accel tcg -cpu max -smp "${HL_VM_SMP:-1}" -m "${HL_VM_MEM:-6G}"
    -nodefaults -no-user-config -display none -no-reboot
    -kernel "$boot_image" -initrd "$initrd"
    -append "console=ttyS0 $([ "${HL_VM_DEBUG:-}" = 1 ] && echo hl.debug || echo quiet loglevel=3) mitigations=off panic=-1 ${HL_VM_APPEND:-} hl.job=$job"
    -chardev "file,id=con,path=$(qpath "$job/console.log")" -serial chardev:con
    -chardev "file,id=out,append=on,path=$(qpath "$job/stdout")" -serial chardev:out
    -chardev "file,id=err,append=on,path=$(qpath "$job/stderr")" -serial chardev:err
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
)
[ "$rw_phys" = / ] ||
    qemu_args+=(-virtfs "local,path=$(qpath "$rw_phys"),mount_tag=rw,security_model=none,multidevs=remap")

# Extra QEMU options for experiments (word-split).
# shellcheck disable=SC2206
qemu_args+=(${HL_VM_QEMU_ARGS:-})

timeout=()
[ -z "${HL_VM_TIMEOUT:-}" ] || timeout=(timeout -k 5 "$HL_VM_TIMEOUT")
set +e
"${timeout[@]}" "$qemu" "${qemu_args[@]}" </dev/null 2>"$job/qemu.err" &
qpid=$!
wait "$qpid"
qrc=$?
qpid=
set -e
for f in "$job/stdout" "$job/stderr"; do : <>"$f"; done # in case QEMU never opened them
wait "$pout" "$perr" || true

# --- result ---------------------------------------------------------------------------------
log="$job/console.log"
rc=$(sed -n 's/^HL_VM_EXIT=\([0-9]*\).*/\1/p' "$log" 2>/dev/null | tail -n 1)
if [ -z "$rc" ]; then
    why=$(sed -n 's/^HL_VM_\(FAIL\|NOKVM\)=//p' "$log" 2>/dev/null | tr -d '\r' | tail -n 1)
    if [ -s "$job/qemu.err" ]; then sed 's/^/hl-vm: qemu: /' "$job/qemu.err" >&2; fi
    if [ -n "$why" ]; then
        say "the VM could not run the command: $why"
    elif [ "$qrc" = 124 ] && [ -n "${HL_VM_TIMEOUT:-}" ]; then
        say "timed out after HL_VM_TIMEOUT=${HL_VM_TIMEOUT}s"
        rc=124
    else
        say "the VM ended without an exit status (qemu exit $qrc); console log tail:"
        tail -n 30 "$log" 2>/dev/null | tr -d '\r' | sed 's/^/hl-vm: | /' >&2 || true
    fi
    rc=${rc:-125}
elif [ "${HL_VM_DEBUG:-}" = 1 ]; then
    tr -d '\r' <"$log" | sed 's/^/hl-vm: | /' >&2
fi
t1=$EPOCHREALTIME
say "done in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s (exit $rc)"
exit "$rc"

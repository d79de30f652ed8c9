#!/bin/sh
# /init of the hl-vm initramfs. Runs as PID 1 under busybox ash inside the QEMU VM
# started by tools/vm/run.sh. Any change to this file changes the initramfs cache key.
#
# Contract with run.sh (the host side):
#   - kernel command line: hl.job=<host dir> holding job.sh (the command, a bash script that
#     sets the environment and cd's) and rw (the host dir shared writable as 9p tag "rw",
#     mounted at the same path; "/" means no such share); hl.debug for boot time stamps
#   - serial ports: ttyS0 = console (kernel log + markers), ttyS1 = command stdout,
#     ttyS2 = command stderr
#   - markers on the console, parsed by run.sh: HL_VM_EXIT=<rc>, HL_VM_FAIL=<reason>,
#     HL_VM_NOKVM=<reason>
PATH=/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node (building it would need mknod, i.e. root), so
# the kernel started us without stdio: take the console from devtmpfs now.
exec </dev/console >/dev/console 2>&1

# A failure before the command runs: tell run.sh why, then power off.
die() {
    echo "HL_VM_${2:-FAIL}=$1"
    sync
    poweroff -f
    sleep 60
}

job= debug=
for w in $(cat /proc/cmdline); do
    case $w in
    hl.job=*) job=${w#hl.job=} ;;
    hl.debug) debug=1 ;;
    esac
done
[ -n "$job" ] || die "no hl.job= on the kernel command line"
# HL_VM_DEBUG=1 on the host: time stamps of the boot steps in the console log.
stamp() { [ -z "$debug" ] || echo "hl-vm-init: $(cut -d' ' -f1 /proc/uptime)s $*"; }
stamp "init started"

# Kernel modules, in dependency order (resolved on the host by modprobe --show-depends).
while read -r m; do
    if ! insmod "/modules/$m"; then
        case $m in
        kvm*) die "insmod $m failed (no AMD SVM in the emulated CPU? QEMU needs -cpu max)" NOKVM ;;
        *) die "insmod $m failed" ;;
        esac
    fi
    stamp "insmod $m"
done </modules/order
stamp "modules loaded"

# Host root, read-only. cache=loose: the host tree is treated as immutable for the
# lifetime of the VM, so the guest may cache pages and attributes (big speed-up when the
# same binary or source is read twice).
ninep="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$ninep,ro,cache=loose" hostroot /host || die "cannot mount the host root (9p)"

# Read the job from the host /tmp now, before a fresh tmpfs hides host /tmp.
[ -r "/host$job/job.sh" ] || die "job $job not visible in the VM"
cp "/host$job/job.sh" /job.sh || die "cannot copy the job script"
IFS= read -r rw <"/host$job/rw"

# New root = overlay(lower = host root read-only, upper = tmpfs). Everything looks writable
# (HOME, DENO_DIR, CARGO_HOME locks...), reads see the host (e.g. the host's Deno npm
# cache, since the VM has no network), and writes outside the cwd share are thrown away
# at poweroff. If overlayfs refuses, fall back to the plain read-only host root.
R=/newroot
mount -t tmpfs -o mode=0755 upper /rw
mkdir -p /rw/upper /rw/work
if mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay $R 2>/dev/null; then
    overlay=1
else
    echo "hl-vm-init: overlayfs over 9p refused; the root is read-only" >&2
    mount --bind /host $R || die "cannot bind the host root"
    overlay=0
fi

mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=1777 tmp $R/tmp
mount -t tmpfs -o mode=0755 run $R/run
mkdir -p $R/run/hl-vm
cp /job.sh $R/run/hl-vm/job.sh
chmod 0755 $R/run/hl-vm/job.sh
echo "$overlay" >$R/run/hl-vm/overlay

# kvm_amd creates /dev/kvm (misc device) in devtmpfs. The command runs as root anyway;
# 0666 mirrors what distributions do with the kvm group.
[ -c $R/dev/kvm ] || die "/dev/kvm did not appear (kvm_amd loaded: $(grep -c '^kvm_amd ' /proc/modules))" NOKVM
chmod 0666 $R/dev/kvm

# The writable share (the cwd by default), after the tmpfs mounts so that one under /tmp or
# /run lands on top of them. cache=mmap: shared writable mmap works (linkers), file data is
# not kept across host changes.
if [ "$rw" != / ]; then
    mkdir -p "$R$rw" 2>/dev/null
    mount -t 9p -o "$ninep,cache=mmap" rw "$R$rw" || die "cannot mount the writable share on $rw"
fi

# stdout/stderr: raw serial ports (no \n -> \r\n). The command writes into FIFOs (so it
# sees pipes, like under CI, not a tty), and one cat per stream copies to its port.
stty -F /dev/ttyS1 raw -echo
stty -F /dev/ttyS2 raw -echo
mkfifo /out /err
cat /out >/dev/ttyS1 &
pout=$!
cat /err >/dev/ttyS2 &
perr=$!

stamp "root ready, running the command"
# A clean environment: job.sh (a host bash script, see its #! line) exports exactly what
# run.sh chose.
env -i /bin/chroot $R /run/hl-vm/job.sh </dev/null >/out 2>/err
rc=$?

# The cats end when every writer is gone. A background process left behind by the
# command may keep a FIFO open: give the cats 5 s, then kill what is left of the job.
(
    sleep 5
    kill -9 -1 2>/dev/null
) &
watchdog=$!
wait $pout $perr
kill $watchdog 2>/dev/null
stamp "command done"
sync
echo "HL_VM_EXIT=$rc"
poweroff -f
sleep 60

# Sourced by deploy/image/build.sh and tools/image_test.sh: how podman runs the image here, as
# Kubernetes runs it (deploy/k8s/base): /dev/kvm passed in, read-only root, UID 65532, all
# capabilities dropped, no-new-privileges, podman's default seccomp profile, a memory /tmp.
#
# What this kind of machine needs (docs/deploy.md, "The image test under podman"): crun refuses
# its hybrid cgroup layout, runc runs it; podman's default RLIMIT_NOFILE/NPROC are above the
# machine's hard limits, so modest ones are given; /dev/kvm keeps the host's owner and mode inside
# the container, so where it is 0660 root:kvm the user gets the device's group (in Kubernetes:
# supplementalGroups).
# shellcheck shell=bash
export PATH="$PATH:/usr/sbin:/sbin"
hl_podman=(podman)
command -v runc >/dev/null && hl_podman+=(--runtime runc)
hl_run_flags=(--read-only --user 65532:65532 --cap-drop=ALL --security-opt no-new-privileges
  --device /dev/kvm --tmpfs /tmp:rw,nosuid,nodev,size=64m
  --ulimit nofile=16384:16384 --ulimit nproc=4096:4096)
if [ -c /dev/kvm ] && [ "$(($(stat -c '%#a' /dev/kvm) & 6))" -ne 6 ]; then
  hl_run_flags+=(--group-add "$(stat -c %g /dev/kvm)")
fi

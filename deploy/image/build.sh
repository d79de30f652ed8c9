#!/usr/bin/env bash
# Builds the hl serve OCI image offline, from Debian's packages and npm only (no registry base
# image): docs/deploy.md, "The image".
#
#   1. stage/: Deno from npm (@deno/linux-x64-glibc, the version of the `deno` running this
#      script unless HL_IMAGE_DENO_VERSION says otherwise), the package's TypeScript sources,
#      the built cdylib, Wasm compiler + its child process, guests and runtime modules, the npm
#      dependencies in a DENO_DIR, the default serve config (/etc/hl), a non-root user (65532),
#      and what deploy/image/bake.ts bakes (compiled Wasm artifacts).
#   2. rootfs.tar: mmdebstrap, variant `extract` (only libc6 and libgcc-s1, which Deno, the
#      cdylib and the compiler link against, with their dependencies: no shell, no package
#      manager), the stage synced in; mtimes clamped to SOURCE_DATE_EPOCH.
#   3. `podman build` of deploy/image/Containerfile (FROM scratch, ADD rootfs.tar) with
#      --timestamp SOURCE_DATE_EPOCH, tagged $HL_IMAGE_TAG (default localhost/hl-sandbox:dev).
#   4. Where /dev/kvm is here (and HL_IMAGE_SNAPSHOTS is not 0): `hl serve --bake` run in that
#      image writes the routes' snapshots, which a second layer adds at /var/lib/hl/snapshots.
#
# Needs: root (mmdebstrap's root mode, rootful podman), Debian packages mmdebstrap, podman and
# runc (tools/setup.sh test installs them), npm, and `deno task build` done. Prints the image's size
# and the time the build took. Usage: bash deploy/image/build.sh [--oci-archive FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
tag=${HL_IMAGE_TAG:-localhost/hl-sandbox:dev}
suite=${HL_IMAGE_SUITE:-bookworm}
archive=""
if [ "${1:-}" = --oci-archive ]; then
  archive=${2:?--oci-archive needs a file}
fi

die() {
  echo "build_image: $*" >&2
  exit 1
}
# One line per step, with the seconds since the start: the build takes minutes on a loaded machine.
step() {
  echo "build_image: [$(($(date +%s) - started)) s] $*"
}
for tool in mmdebstrap podman npm deno; do
  command -v "$tool" >/dev/null || die "$tool not found (bash tools/setup.sh test installs mmdebstrap and podman)"
done
[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap root mode and rootful podman)"

guests=guest/target/x86_64-unknown-linux-gnu/release
need=(target/release/libhl_rust_vmm.so target/release/libhl_wasm_compiler.so
  target/release/hl-wasm-compile "$guests/testguest" "$guests/wasm-runtime"
  "$guests/wasmtime-runtime" target/runtimes/quickjs.wasm)
for f in "${need[@]}"; do
  [ -f "$f" ] || die "$f is missing: run \`deno task build\` first"
done

# Reproducible where cheap: every timestamp is the last commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH

work=$(mktemp -d /var/tmp/hl-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage"/{usr/local/bin,opt/hl,etc/hl,tmp,var/cache/hl/wasmtime,var/lib/hl/snapshots}
chmod 1777 "$stage/tmp"

# Deno from npm: the platform package carries the binary.
step "stage: Deno from npm, the package, its npm dependencies ..."
deno_version=${HL_IMAGE_DENO_VERSION:-$(deno --version | sed -n 's/^deno \([0-9.]*\).*/\1/p')}
(cd "$work" && npm pack --silent "@deno/linux-x64-glibc@$deno_version" >/dev/null)
tar -xzf "$work"/deno-linux-x64-glibc-*.tgz -C "$work" package/deno
install -m 0755 "$work/package/deno" "$stage/usr/local/bin/deno"

# The package: sources, deno.json/lock (deno.json is imported for the version), built artifacts.
cp -r mod.ts setup.ts cli.ts deno.json deno.lock LICENSE src "$stage/opt/hl/"
mkdir -p "$stage/opt/hl/target/release" "$stage/opt/hl/$guests" "$stage/opt/hl/target/runtimes"
install -m 0755 target/release/libhl_rust_vmm.so target/release/libhl_wasm_compiler.so \
  target/release/hl-wasm-compile "$stage/opt/hl/target/release/"
install -m 0755 "$guests/testguest" "$guests/wasm-runtime" "$guests/wasmtime-runtime" \
  "$stage/opt/hl/$guests/"
for m in target/runtimes/*.wasm; do
  [ "${HL_IMAGE_PYTHON:-1}" = 0 ] && [[ $m == *python* ]] && continue
  install -m 0644 "$m" "$stage/opt/hl/target/runtimes/"
done
# The npm dependencies (JSR is not reachable; the image runs with --cached-only).
# Only the npm packages are kept: the rest of a DENO_DIR (transpiled files under the build
# machine's paths, SQLite caches) is per machine, differs from build to build, and is not needed.
DENO_DIR=$work/deno-dir deno cache --quiet cli.ts mod.ts
mkdir -p "$stage/opt/hl/deno-dir"
cp -r "$work/deno-dir/npm" "$stage/opt/hl/deno-dir/"

# The default serve config: the kustomize base's (its ConfigMap replaces /etc/hl in Kubernetes).
install -m 0644 deploy/k8s/base/config/serve.json deploy/k8s/base/config/hello.js "$stage/etc/hl/"

# The non-root user. The numeric UID/GID are what the Containerfile and the manifests name.
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nhl:x:65532:65532:hl serve:/tmp:/usr/sbin/nologin\n' \
  >"$stage/etc/passwd"
printf 'root:x:0:\nhl:x:65532:\n' >"$stage/etc/group"

# Warm start: compiled Wasm artifacts (and snapshots once the API exists).
step "stage: compiled Wasm artifacts (bake.ts) ..."
deno run --allow-all deploy/image/bake.ts "$stage"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# The root file system. `extract`: the packages are unpacked, no maintainer scripts run, so
# nothing but what is listed (and its dependencies) is there.
mirror=http://deb.debian.org/debian
[ -f /etc/apt/sources.list.d/debian.sources ] && mirror=/etc/apt/sources.list.d/debian.sources
step "mmdebstrap ($suite, extract: libc6 libgcc-s1) ..."
mmdebstrap --quiet --mode=root --variant=extract --include=libc6,libgcc-s1 \
  --extract-hook="sync-in '$stage' /" \
  --extract-hook='chown -R 65532:65532 "$1/var/cache/hl" "$1/var/lib/hl"' \
  --extract-hook='rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/lintian" ' \
  --format=tar "$suite" "$work/rootfs.tar" "$mirror"

cp deploy/image/Containerfile "$work/Containerfile"
previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
step "podman build $tag ..."
podman build --quiet --layers=false --timestamp "$SOURCE_DATE_EPOCH" -f "$work/Containerfile" -t "$tag" "$work" >/dev/null

# Snapshots: `hl serve --bake` in the image just built, with its own files and the same podman
# flags it runs with (and, only here, write access to the snapshot directory; the server itself
# gets none), writes each route's snapshot (docs/serve.md, "Baked snapshots") into a
# directory that a second layer then adds at /var/lib/hl/snapshots. Needs /dev/kvm here; without
# it (or with HL_IMAGE_SNAPSHOTS=0) the routes start cold (a logged "snapshot_skipped").
if [ "${HL_IMAGE_SNAPSHOTS:-1}" = 1 ] && [ -c /dev/kvm ]; then
  # shellcheck source=podman.sh
  source deploy/image/podman.sh
  mkdir -p "$work/layer2/snapshots"
  chown 65532:65532 "$work/layer2/snapshots"
  step "hl serve --bake (snapshots) ..."
  "${hl_podman[@]}" run --rm "${hl_run_flags[@]}" --network none \
    -v "$work/layer2/snapshots:/var/lib/hl/snapshots:rw" --entrypoint /usr/local/bin/deno "$tag" \
    run --cached-only --no-prompt --allow-ffi --allow-read --allow-env --allow-run --allow-sys \
    --allow-write=/var/lib/hl/snapshots /opt/hl/cli.ts serve --config /etc/hl/serve.json --bake
  find "$work/layer2" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  printf 'FROM %s\nCOPY --chown=65532:65532 snapshots/ /var/lib/hl/snapshots/\n' \
    "$(podman image inspect --format '{{.Id}}' "$tag")" >"$work/layer2/Containerfile"
  podman build --quiet --layers=false --timestamp "$SOURCE_DATE_EPOCH" -f "$work/layer2/Containerfile" \
    -t "$tag" "$work/layer2" >/dev/null
  ls -l "$work/layer2/snapshots" | tail -n +2 | sed 's/^/build_image: baked /'
else
  echo "build_image: no snapshots baked (no /dev/kvm or HL_IMAGE_SNAPSHOTS=0): routes start cold"
fi

if [ -n "$archive" ]; then
  rm -f "$archive"
  podman save --quiet --format oci-archive -o "$archive" "$tag"
fi
# The image this tag named before (a rebuild's leftover, 176 MiB) goes unless a container uses it.
[ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$tag")" ] &&
  podman rmi "$previous" >/dev/null 2>&1 || true
rootfs_sha=$(sha256sum "$work/rootfs.tar" | cut -c1-16)
size=$(podman image inspect --format '{{.Size}}' "$tag")
id=$(podman image inspect --format '{{.Id}}' "$tag")
echo "build_image: $tag id ${id:0:12} size $((size / 1024 / 1024)) MiB ($size bytes), rootfs.tar $(($(stat -c %s "$work/rootfs.tar") / 1024 / 1024)) MiB sha256 $rootfs_sha..., built in $(($(date +%s) - started)) s"

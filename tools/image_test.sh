#!/usr/bin/env bash
# The image test (`deno task image-test`; also a stage of `deno task test`): builds the hl serve
# image (deploy/image/build.sh) and runs it under podman the way Kubernetes runs it
# (deploy/k8s/base): /dev/kvm passed in, read-only root, UID 65532, all capabilities dropped,
# no-new-privileges, the default seccomp profile, a memory tmpfs on /tmp; the port published on
# loopback only. Then it checks, each with a bounded wait:
#   - /healthz answers 200, /readyz 200 once the route's pool is warm, started from the snapshot
#     the build baked into the image;
#   - the image's default route runs a JsSandbox on KVM and answers 200 with its text; the request
#     id is echoed; an unknown path answers 404; /metrics counts the requests;
#   - inside, the process is UID 65532 with no capabilities, and / is not writable;
#   - SIGTERM (podman stop) drains and the server exits 0 with a `drained` log line.
# Ends with "image test: N passed, N failed". HL_IMAGE_TEST_SKIP_BUILD=1 reuses the tagged image.
set -uo pipefail
cd "$(dirname "$0")/.."
tag=${HL_IMAGE_TAG:-localhost/hl-sandbox:dev}
export HL_IMAGE_TAG=$tag
name=hl-image-test-$$
passed=0
failed=0

ok() {
  passed=$((passed + 1))
  echo "ok   $*"
}
bad() {
  failed=$((failed + 1))
  echo "FAIL $*"
}
finish() {
  podman rm -f -t 0 "$name" >/dev/null 2>&1
  echo "image test: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}
trap finish EXIT

if [ "${HL_IMAGE_TEST_SKIP_BUILD:-0}" != 1 ]; then
  t0=$(date +%s)
  if bash deploy/image/build.sh; then
    ok "image built in $(($(date +%s) - t0)) s"
  else
    bad "deploy/image/build.sh failed"
    exit 1
  fi
fi
[ -c /dev/kvm ] || {
  bad "/dev/kvm is missing: the image test needs KVM"
  exit 1
}

# The podman flags (runc, limits, the kvm group) and why: deploy/image/podman.sh.
# shellcheck source=../deploy/image/podman.sh
source deploy/image/podman.sh
port=$((20000 + $$ % 20000))
started=$(date +%s%N)

"${hl_podman[@]}" run -d --name "$name" "${hl_run_flags[@]}" -p "127.0.0.1:$port:8080" "$tag" \
  >/dev/null || {
  bad "podman run failed"
  exit 1
}
base=http://127.0.0.1:$port

# wait_status <path> <status> <seconds>: polls until the path answers the status.
wait_status() {
  local deadline=$(($(date +%s) + $3)) code
  while [ "$(date +%s)" -lt "$deadline" ]; do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$base$1")
    [ "$code" = "$2" ] && return 0
    [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || return 1
    sleep 0.5
  done
  return 1
}

if wait_status /healthz 200 30; then ok "/healthz 200"; else bad "/healthz did not answer 200 within 30 s"; fi
if wait_status /readyz 200 60; then
  ok "/readyz 200 (the route's pool is warm) $((($(date +%s%N) - started) / 1000000)) ms after podman run"
else
  bad "/readyz did not answer 200 within 60 s"
fi

# (conmon writes the log asynchronously: a bounded wait for the line.)
logged() {
  local i
  for i in $(seq 20); do
    podman logs "$name" 2>/dev/null | grep -q "$1" && return 0
    sleep 0.25
  done
  return 1
}
if logged '"event":"snapshot_loaded".*"route":"/hello"'; then
  ok "the route started from the snapshot baked into the image"
else
  bad "no snapshot_loaded event for /hello: $(podman logs "$name" 2>&1 | grep -m1 snapshot_)"
fi

body=$(curl -s -m 10 -D "/tmp/$name.head" -H 'X-Request-Id: image-test-1' "$base/hello")
if [ "$body" = "hello from hl serve: GET /hello" ]; then
  ok "GET /hello ran the JsSandbox handler: $body"
else
  bad "GET /hello answered '$body'"
fi
if grep -qi '^x-request-id: image-test-1' "/tmp/$name.head"; then ok "request id echoed"; else bad "request id not echoed"; fi
rm -f "/tmp/$name.head"
code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$base/nope")
if [ "$code" = 404 ]; then ok "unknown path 404"; else bad "unknown path answered $code"; fi
if curl -s -m 5 "$base/metrics" | grep -q '^hl_serve_requests_total{.*route="/hello".*code="200".*} [1-9]'; then
  ok "/metrics counts the request"
else
  bad "/metrics has no hl_serve_requests_total for /hello"
fi

# Inside the container: who the process is, its capabilities, and a read-only root.
status=$(podman exec "$name" /usr/local/bin/deno eval --quiet \
  'const s = Deno.readTextFileSync("/proc/1/status"); console.log(s.match(/^Uid:.*$/m)[0].split(/\s+/)[1], s.match(/^CapEff:\s*(\S+)/m)[1])' 2>&1)
if [ "$status" = "65532 0000000000000000" ]; then
  ok "PID 1 is UID 65532 with no effective capabilities"
else
  bad "PID 1 uid/CapEff: '$status'"
fi
if podman exec "$name" /usr/local/bin/deno eval --quiet 'Deno.writeTextFileSync("/opt/hl/x", "x")' >/dev/null 2>&1; then
  bad "the root file system is writable"
else
  ok "the root file system is read-only"
fi

# Drain: SIGTERM, then the server exits 0 within its drainTimeoutMs (20 s in the image's config).
podman stop -t 30 "$name" >/dev/null 2>&1
rc=$(podman inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null)
if [ "$rc" = 0 ] && logged '"drained"'; then
  ok "SIGTERM drained and exited 0"
else
  bad "after SIGTERM: exit code '$rc'; log tail:"
  podman logs --tail 20 "$name" 2>&1 | sed 's/^/  /'
fi

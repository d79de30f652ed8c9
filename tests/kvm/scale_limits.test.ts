/**
 * Host limits at scale (issue 19, docs/design.md "Scale"): a create that runs out of file
 * descriptors is a typed `ResourceLimitError` naming `RLIMIT_NOFILE`, and leaves nothing behind:
 * after a few disposes the next create works. Run in a child process with a low limit.
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";

kvmTest(
  "a create past RLIMIT_NOFILE is a ResourceLimitError naming the limit, and recoverable",
  async () => {
    const child = new URL("./scale/fd_limit_child.ts", import.meta.url).pathname;
    const out = await new Deno.Command("sh", {
      args: [
        "-c",
        'ulimit -n 96 && exec "$0" run --allow-all --no-check "$1"',
        Deno.execPath(),
        child,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
    assert.ok(r.created > 4, JSON.stringify(r));
    assert.equal(r.name, "ResourceLimitError", JSON.stringify(r));
    assert.equal(r.isLimit, true);
    assert.equal(r.limit, "RLIMIT_NOFILE");
    assert.match(r.message, /RLIMIT_NOFILE/);
    assert.equal(r.answer, 5, "a create after some disposes works");
    assert.equal(r.liveAfter, 0, "nothing left behind");
  },
);

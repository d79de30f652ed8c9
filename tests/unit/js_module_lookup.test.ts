/** Where JsSandbox's engine is found (src/artifacts.ts): a miss names the fix. */
import assert from "node:assert/strict";
import { GuestNotFoundError } from "../../mod.ts";
import { cachedArtifact, findRuntimeModule } from "../../src/artifacts.ts";

Deno.test("findRuntimeModule: HL_QUICKJS_WASM names the only candidate; a miss names the fix", () => {
  const old = Deno.env.get("HL_QUICKJS_WASM");
  try {
    Deno.env.set("HL_QUICKJS_WASM", "/nonexistent/quickjs.wasm");
    assert.throws(() => findRuntimeModule("quickjs"), (e: unknown) => {
      assert.ok(e instanceof GuestNotFoundError);
      assert.deepEqual(e.searched, ["/nonexistent/quickjs.wasm"]);
      assert.match(e.message, /HL_QUICKJS_WASM/);
      return true;
    });
    const self = new URL(import.meta.url).pathname;
    Deno.env.set("HL_QUICKJS_WASM", self);
    assert.equal(findRuntimeModule("quickjs"), self);
  } finally {
    if (old === undefined) Deno.env.delete("HL_QUICKJS_WASM");
    else Deno.env.set("HL_QUICKJS_WASM", old);
  }
  assert.equal(cachedArtifact("/c", "quickjs"), "/c/runtimes/quickjs.wasm");
});

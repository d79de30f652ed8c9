/**
 * Messages a new user meets (issue 26, item 4): the CLI prints a guest panic's whole message (its
 * lines joined), and Wasm bytes given to `Sandbox` point at `WasmSandbox`.
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { TESTGUEST } from "../_guests.ts";
import { GuestImageError, Sandbox } from "../../mod.ts";
import { oneLine } from "../../src/cli/common.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

Deno.test("oneLine joins every line of a message, drops blank ones", () => {
  assert.equal(
    oneLine(new Error("guest panicked: panicked at src/main.rs:32:5:\n  the reason\n\n")),
    "guest panicked: panicked at src/main.rs:32:5: the reason",
  );
  assert.equal(oneLine(new TypeError("")), "TypeError");
});

kvmTest("cli: a guest panic's reason is on the one error line", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", CLI, "call", TESTGUEST, "panic", "line one\nthe real reason"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 134, stderr);
  const lines = stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], /^hl call: .*panicked.*line one the real reason/);
});

Deno.test("Sandbox given Wasm bytes says to use WasmSandbox", async () => {
  const wasm = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  await assert.rejects(
    Sandbox.create({ guest: wasm }),
    (e) => e instanceof GuestImageError && /WasmSandbox/.test(e.message),
  );
});

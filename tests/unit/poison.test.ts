// The one "does this error poison?" decision (src/call/poison.ts).
import assert from "node:assert/strict";
import { poisons } from "../../src/call/poison.ts";
import {
  ArgumentError,
  CancelledError,
  GuestError,
  GuestFaultError,
  GuestPanicError,
  HypervisorError,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  TimeoutError,
} from "../../src/errors.ts";

Deno.test("poisons: after the guest was entered, every error but the protocol's answers", () => {
  const poisoning = [
    new GuestFaultError({ vector: 14 }),
    new GuestPanicError("boom"),
    new ProtocolError("bad frame"),
    new TimeoutError(10),
    new CancelledError("stop"),
    new HypervisorError("STATE", "a negative status from the run"),
    new SandboxError("onLog threw"),
    new ArgumentError("an answer that cannot be written"),
    new TypeError("anything unanticipated"),
    "a thrown string",
  ];
  for (const e of poisoning) assert.equal(poisons(e, true), true, String(e));
  const answers = [
    new GuestError(1000, "the guest's own error"),
    new SandboxDisposedError(),
    new SandboxPoisonedError(new Error("earlier")),
  ];
  for (const e of answers) assert.equal(poisons(e, true), false, String(e));
});

Deno.test("poisons: nothing before the guest was entered", () => {
  for (
    const e of [new ArgumentError("bad"), new ReentrantCallError(), new HypervisorError("X", "y")]
  ) {
    assert.equal(poisons(e, false), false, String(e));
  }
});

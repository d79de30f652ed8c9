import assert from "node:assert/strict";
import {
  ArgumentError,
  CancelledError,
  GuestAbiError,
  GuestError,
  GuestFaultError,
  GuestImageError,
  GuestPanicError,
  HypervisorError,
  LibraryNotFoundError,
  ProtocolError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  StackOverflowError,
  TimeoutError,
  vectorName,
} from "../../src/errors.ts";

Deno.test("errors", async (t) => {
  await t.step("every class extends SandboxError and Error, and names itself", () => {
    const errors: [Error, string][] = [
      [new SandboxError("x"), "SandboxError"],
      [new HypervisorError("NO_HYPERVISOR", "x"), "HypervisorError"],
      [new LibraryNotFoundError([]), "LibraryNotFoundError"],
      [new GuestImageError("x"), "GuestImageError"],
      [new GuestAbiError("x"), "GuestAbiError"],
      [new ArgumentError("x"), "ArgumentError"],
      [new GuestError(1000, "x"), "GuestError"],
      [new GuestPanicError("x"), "GuestPanicError"],
      [new GuestFaultError({}), "GuestFaultError"],
      [new StackOverflowError({}), "StackOverflowError"],
      [new TimeoutError(5), "TimeoutError"],
      [new CancelledError(), "CancelledError"],
      [new ProtocolError("x"), "ProtocolError"],
      [new SandboxPoisonedError(new Error("x")), "SandboxPoisonedError"],
      [new SandboxDisposedError(), "SandboxDisposedError"],
    ];
    for (const [err, name] of errors) {
      assert.ok(err instanceof SandboxError, name);
      assert.ok(err instanceof Error, name);
      assert.equal(err.name, name);
      assert.ok(err.message.length > 0, name);
      assert.ok(String(err).startsWith(`${name}: `), name);
      assert.ok(err.stack?.includes(name), name);
    }
  });

  await t.step("fields", () => {
    const hv = new HypervisorError("PERMISSION", "no access to /dev/kvm");
    assert.equal(hv.code, "PERMISSION");
    assert.equal(hv.message, "no access to /dev/kvm");

    const lib = new LibraryNotFoundError(["/a/lib.so", "/b/lib.so"]);
    assert.deepEqual(lib.searched, ["/a/lib.so", "/b/lib.so"]);
    assert.match(lib.message, /\/a\/lib\.so, \/b\/lib\.so/);
    assert.match(lib.message, /deno task build/);

    const guest = new GuestError(1001, "bad input");
    assert.equal(guest.code, 1001);
    assert.equal(guest.message, "bad input");

    const panic = new GuestPanicError("oops");
    assert.equal(panic.guestMessage, "oops");
    assert.match(panic.message, /panicked: oops/);

    assert.equal(new TimeoutError(250).timeoutMs, 250);
    assert.match(new TimeoutError(250).message, /250 ms/);

    const protocol = new ProtocolError("bad tag");
    assert.equal(protocol.detail, "bad tag");
    assert.match(protocol.message, /bad tag/);

    const reason = new Error("stop");
    assert.equal(new CancelledError("cancelled", { cause: reason }).cause, reason);
  });

  await t.step("faults", () => {
    const pf = new GuestFaultError({ vector: 14, rip: 0x1234n, address: 0xdeadn, errorCode: 2n });
    assert.equal(pf.vector, 14);
    assert.equal(pf.vectorName, "#PF");
    assert.equal(pf.rip, 0x1234n);
    assert.equal(pf.address, 0xdeadn);
    assert.equal(pf.errorCode, 2n);
    assert.equal(pf.stackOverflow, false);
    assert.match(pf.message, /#PF/);
    assert.match(pf.message, /0x1234/);
    assert.match(pf.message, /0xdead/);

    const triple = new GuestFaultError({}, "guest triple fault");
    assert.equal(triple.vector, undefined);
    assert.equal(triple.vectorName, "unknown");
    assert.equal(triple.message, "guest triple fault");

    const overflow = new StackOverflowError({ vector: 14, address: 0x7000n });
    assert.ok(overflow instanceof GuestFaultError);
    assert.ok(overflow instanceof StackOverflowError);
    assert.equal(overflow.stackOverflow, true);
    assert.equal(overflow.vectorName, "#PF");
    assert.match(overflow.message, /stack overflow/);
  });

  await t.step("vector names", () => {
    assert.equal(vectorName(0), "#DE");
    assert.equal(vectorName(3), "#BP");
    assert.equal(vectorName(6), "#UD");
    assert.equal(vectorName(13), "#GP");
    assert.equal(vectorName(14), "#PF");
    assert.equal(vectorName(15), "#15");
    assert.equal(vectorName(200), "#200");
    assert.equal(vectorName(undefined), "unknown");
  });

  await t.step("a poisoned sandbox carries the original error", () => {
    const original = new GuestPanicError("boom");
    const poisoned = new SandboxPoisonedError(original);
    assert.equal(poisoned.cause, original);
    assert.match(poisoned.message, /boom/);
  });
});

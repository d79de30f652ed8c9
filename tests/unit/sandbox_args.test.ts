import assert from "node:assert/strict";
import {
  ArgumentError,
  GuestImageError,
  HypervisorError,
  LibraryNotFoundError,
  Sandbox,
} from "../../mod.ts";
import { openLibrary } from "../../src/ffi/lib.ts";
import { ABI_VERSION } from "../../src/abi.ts";
import { GuestAbiError } from "../../src/errors.ts";
import { abiVersionError } from "../../src/sandbox.ts";
import { TESTGUEST } from "../_guests.ts";

// Everything here is rejected before a VM exists, so it needs no KVM.

Deno.test("a missing library is LibraryNotFoundError naming the path and the fix", () => {
  assert.throws(
    () => openLibrary("/nonexistent/libhl_rust_vmm.so"),
    (e) =>
      e instanceof LibraryNotFoundError &&
      e.searched.includes("/nonexistent/libhl_rust_vmm.so") &&
      /deno task build/.test(e.message) && /HL_SANDBOX_LIB/.test(e.message),
  );
});

Deno.test("bad guest images are GuestImageError before any VM is created", async () => {
  await assert.rejects(Sandbox.create({ guest: new Uint8Array(10) }), GuestImageError);
  await assert.rejects(
    Sandbox.create({ guest: new TextEncoder().encode("#!/bin/sh\necho not an ELF\n") }),
    (e) => e instanceof GuestImageError && /magic|ELF/i.test(e.message),
  );
});

Deno.test("bad options are ArgumentError naming the option", async () => {
  const guest = await Deno.readFile(TESTGUEST);
  const bad = (options: Record<string, unknown>, text: RegExp) =>
    assert.rejects(
      Sandbox.create({ guest, ...options }),
      (e) => e instanceof ArgumentError && text.test(e.message),
    );
  await bad({ heapSize: 1000 }, /heapSize/);
  await bad({ stackSize: 0 }, /stackSize/);
  await bad({ heapSize: 2 ** 31 }, /heapSize|1 GiB|memory/);
  await bad({ inputSize: -4096 }, /inputSize/);
  await bad({ timeoutMs: -1 }, /timeoutMs/);
  await bad({ hostFunctions: { f: { params: ["int"], result: "i32", fn: () => 1 } } }, /params/);
  await bad({ hostFunctions: { f: { params: [], result: "i32" } } }, /fn/);
  await bad({ hostFunctions: { f: { params: ["void"], result: "i32", fn: () => 1 } } }, /params/);
  await assert.rejects(
    Sandbox.create({ guest: "/nonexistent/guest" }),
    (e) => e instanceof ArgumentError && /cannot read the guest/.test(e.message),
  );
  // deno-lint-ignore no-explicit-any
  await assert.rejects(Sandbox.create(undefined as any), ArgumentError);
});

Deno.test("without a usable library or KVM, creation fails with a typed error", async () => {
  // Here the library exists (tools/build.sh) but may point at a host without KVM: either way
  // the failure must be a typed SandboxError, never a crash.
  const guest = await Deno.readFile(TESTGUEST);
  try {
    const sb = await Sandbox.create({ guest, initTimeoutMs: 10_000 });
    await sb.dispose();
  } catch (e) {
    assert.ok(
      e instanceof HypervisorError || e instanceof LibraryNotFoundError,
      `unexpected ${e}`,
    );
  }
});

Deno.test("the host reports a guest of another ABI version as GuestAbiError", () => {
  const cause = new Error("guest panicked");
  const error = abiVersionError(7, cause);
  assert.ok(error instanceof GuestAbiError);
  assert.match(error.message, new RegExp(`ABI version 7, this host speaks ${ABI_VERSION}`));
  assert.equal(error.cause, cause);
  assert.match(abiVersionError(0)!.message, /did not report/);
  assert.equal(abiVersionError(ABI_VERSION), undefined);
});

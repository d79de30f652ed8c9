// What a CPL-3 guest can read about the host, and what extended state it can hold
// (docs/security.md, "What the guest can read about the host"; docs/abi.md, "Entry"). Hosts differ
// here (kvm_pvm runs CPL-3 code natively with the host's CR4 and XCR0; hardware KVM loads the
// guest's), so each step accepts every documented outcome — the instruction faults (a typed
// GuestFaultError that poisons the sandbox), or it runs — and asserts the invariant in both: a
// value is the guest's own (kept across exits, brought back by a restore, never another VM's or a
// host address), and the host and the next call are unaffected.
import assert from "node:assert/strict";
import { GuestFaultError, Sandbox, SandboxPoisonedError } from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

const UD = 6, GP = 13;

type Outcome<T> = { value: T } | { fault: GuestFaultError };

/** Runs one call; a fault must be typed and poison the sandbox (the next call refused). */
async function outcome<T>(sb: Sandbox, name: string, ...args: unknown[]): Promise<Outcome<T>> {
  try {
    return { value: (await sb.call(name, ...args)) as T };
  } catch (e) {
    assert.ok(e instanceof GuestFaultError, `${name}: ${String(e)}`);
    assert.equal(sb.poisoned, true, `${name}: a fault poisons`);
    await assert.rejects(sb.call("noop"), SandboxPoisonedError);
    return { fault: e };
  }
}

/** The highest CPU number this host can have (/sys/devices/system/cpu/possible, e.g. "0-63"). */
function maxCpu(): number {
  const text = Deno.readTextFileSync("/sys/devices/system/cpu/possible").trim();
  return Math.max(...text.split(/[,-]/).map(Number));
}

const lanes = (bytes: Uint8Array) => {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return [0, 1, 2, 3].map((i) => v.getBigUint64(8 * i, true));
};

kvmTest("host state: rdtscp / rdpid read a CPU number at most", async (t) => {
  for (const [op, name] of [[0, "rdtscp (TSC_AUX)"], [1, "rdpid"]] as const) {
    await t.step(name, async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      const r = await outcome<bigint>(sb, "host_probe", op);
      if ("fault" in r) {
        assert.equal(r.fault.vector, UD, `${name}: #UD where the CPU lacks it`);
        return;
      }
      // Hardware KVM: the vCPU's own TSC_AUX (0). kvm_pvm: the host's TSC_AUX, the number of the
      // host CPU the vCPU thread runs on (documented; it cannot be switched from user space).
      assert.ok(r.value <= BigInt(maxCpu()), `${name} read ${r.value}: more than a CPU number`);
      assert.equal(await sb.call("add", 2, 3), 5);
    });
  }
});

kvmTest("host state: FS/GS base is the guest's own", async (t) => {
  for (const [op, read, name] of [[0, 2, "FS"], [1, 3, "GS"]] as const) {
    await t.step(`${name} base`, async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      const fresh = await outcome<bigint>(sb, "host_probe", read);
      if ("fault" in fresh) {
        // CR4.FSGSBASE is the guest's and off (hardware KVM).
        assert.equal(fresh.fault.vector, UD);
        return;
      }
      // kvm_pvm: CPL 3 runs with the host's CR4.FSGSBASE. A fresh VM reads its own 0, never the
      // host thread's TLS pointer.
      assert.equal(fresh.value, 0n, `a fresh guest's ${name} base`);
      const a = 0x1234_5000n, b = 0x6789_a000n;
      assert.equal(await sb.call("host_set", op, a), a);
      assert.equal(await sb.call("host_probe", read), a, "kept across exits");
      await using snap = await sb.snapshot();
      // A kernel-half address is canonical: the guest may hold it, the host never uses it.
      assert.equal(await sb.call("host_set", op, 0xffff_8000_0000_0000n), 0xffff_8000_0000_0000n);
      assert.equal(await sb.call("add", 2, 3), 5, "the next call is exact");
      assert.equal(await sb.call("host_set", op, b), b);
      await sb.restore(snap);
      assert.equal(await sb.call("host_probe", read), a, "a restore brings it back");
      await using other = await Sandbox.create({ guest: TESTGUEST });
      assert.equal(await other.call("host_probe", read), 0n, "another VM's value never shows");
      // A non-canonical base is #GP in the guest.
      const bad = await outcome<bigint>(sb, "host_set", op, 0x8000_0000_0000_0000n);
      assert.ok("fault" in bad && bad.fault.vector === GP, "non-canonical base: #GP");
    });
  }
});

kvmTest("host state: extended state (XCR0, AVX, AVX-512, AMX)", async (t) => {
  let xcr0: bigint | undefined;
  await t.step("xgetbv", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    const r = await outcome<bigint>(sb, "host_probe", 4);
    if ("fault" in r) return assert.equal(r.fault.vector, UD, "CR4.OSXSAVE off: #UD");
    xcr0 = r.value;
    console.log(`guest reads XCR0 = 0x${xcr0.toString(16)}`);
    assert.equal(xcr0 & 3n, 3n, "x87 and SSE are always on");
  });
  await t.step("AVX: YMM state is kept across exits and brought back by a restore", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    const a = 0x1111_2222_3333_4444n, b = 0x5555_6666_7777_8888n;
    const r = await outcome<bigint>(sb, "host_set", 2, a);
    if ("fault" in r) return assert.equal(r.fault.vector, UD, "AVX not enabled: #UD");
    assert.ok(xcr0 === undefined || (xcr0 & 4n) === 4n, "AVX runs only with XCR0.AVX set");
    assert.equal(r.value, a);
    assert.deepEqual(lanes((await sb.call("get_ymm")) as Uint8Array), [a, a, a, a], "across exits");
    await using snap = await sb.snapshot();
    assert.equal(await sb.call("host_set", 2, b), b);
    await sb.restore(snap);
    assert.deepEqual(lanes((await sb.call("get_ymm")) as Uint8Array), [a, a, a, a], "restored");
    await using copy = await Sandbox.create({ snapshot: snap });
    assert.deepEqual(lanes((await copy.call("get_ymm")) as Uint8Array), [a, a, a, a], "a copy");
    await using fresh = await Sandbox.create({ guest: TESTGUEST });
    assert.deepEqual(lanes((await fresh.call("get_ymm")) as Uint8Array), [0n, 0n, 0n, 0n]);
  });
  for (const [op, name, bits] of [[6, "AVX-512", 0xe0n], [7, "AMX", 0x6_0000n]] as const) {
    await t.step(`${name}: a typed #UD, or it runs where XCR0 enables it`, async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      const r = await outcome<bigint>(sb, "host_probe", op);
      if ("fault" in r) return assert.equal(r.fault.vector, UD, `${name} not enabled: #UD`);
      assert.equal(r.value, 1n);
      assert.ok(xcr0 === undefined || (xcr0 & bits) === bits, `${name} runs only when enabled`);
      assert.equal(await sb.call("add", 2, 3), 5);
    });
  }
});

kvmTest("host state: PKRU is the guest's own", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  const fresh = await outcome<bigint>(sb, "host_probe", 8);
  if ("fault" in fresh) return assert.equal(fresh.fault.vector, UD, "no PKU: #UD");
  const a = 0x1555_5554n;
  assert.equal(await sb.call("host_set", 3, a), a);
  assert.equal(await sb.call("host_probe", 8), a, "kept across exits");
  await using snap = await sb.snapshot();
  assert.equal(await sb.call("host_set", 3, 0x5555_5550n), 0x5555_5550n);
  await sb.restore(snap);
  assert.equal(await sb.call("host_probe", 8), a, "a restore brings it back");
  await using other = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(await other.call("host_probe", 8), fresh.value, "another VM starts as this one did");
  // Denying key 0 (every guest page) makes the guest's own next access fault (#PF with the PK bit,
  // error code bit 5); the host thread's PKRU is not the guest's, so this process goes on.
  await using deny = await Sandbox.create({ guest: TESTGUEST });
  const r = await outcome<bigint>(deny, "host_set", 3, 3n);
  assert.ok("fault" in r, "the guest cannot use its memory with key 0 denied");
  assert.equal(r.fault.vector, 14);
  assert.equal((r.fault.errorCode ?? 0n) & 0x20n, 0x20n, "a protection-key fault");
  assert.deepEqual(new Uint8Array([1, 2, 3]).map((x) => x * 2), new Uint8Array([2, 4, 6]));
});

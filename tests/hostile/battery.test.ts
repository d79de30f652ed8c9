/**
 * The hostile-guest battery (issue #10): the test guest speaks the ABI by hand (`raw_frame`,
 * `peb_write`, `forbidden`, `touch_pages`, floods; guest/README.md) and each behaviour asserts its
 * documented outcome (docs/security.md): a typed error and a poisoned sandbox, or a usable one;
 * the host alive (a fresh sandbox still answers); nothing leaked (fds, live VMs, mappings).
 */

import assert from "node:assert/strict";
import {
  ExitBudgetError,
  GuestFaultError,
  GuestPanicError,
  ProtocolError,
  Sandbox,
  SandboxDisposedError,
  SandboxError,
  TimeoutError,
  WasmSandbox,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { StartSnapshotCache } from "../../src/start_cache.ts";
import { TESTGUEST } from "../_guests.ts";
import { guestMappingCount, kvmTest, openFdCount } from "../kvm/_kvm.ts";

const DONE = 0x7f00, HOST_CALL = 0x7f01, ABORT = 0x7f02, LOG = 0x7f03;
const K = {
  CALL: 1,
  RETURN: 2,
  ERROR: 3,
  HOST_CALL: 4,
  HOST_RETURN: 5,
  FUNCTION_TABLE: 7,
} as const;
const K2 = { PANIC: 8, FAULT: 9, LOG: 10 } as const;

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.length);
  return out;
};
const str = (s: string | Uint8Array) => {
  const b = typeof s === "string" ? new TextEncoder().encode(s) : s;
  return cat(u32(b.length), b);
};
/** A frame: header (kind, payload_len, or `len` when given) + payload. */
const frame = (kind: number, payload: Uint8Array, len = payload.length) =>
  cat(u32(kind), u32(len), payload);
const logFrame = (level: number, message: string | Uint8Array) =>
  frame(K2.LOG, cat(u32(level), str(message)));
const hostCall = (name: string | Uint8Array, args: Uint8Array[] = [], argc = args.length) =>
  frame(K.HOST_CALL, cat(str(name), u32(argc), ...args));

type Outcome =
  | { error: new (...a: never[]) => Error; poisoned: true; match?: RegExp }
  | { ok: true };

interface Behaviour {
  name: string;
  run: (sb: Sandbox) => unknown;
  expect: Outcome;
  onLog?: boolean;
  options?: Partial<Parameters<typeof Sandbox.create>[0]>;
  /** An `ok` behaviour that may also end in a typed fault (hypervisor-dependent). */
  allowPoisoned?: boolean;
}

const protocol = (match?: RegExp): Outcome => ({ error: ProtocolError, poisoned: true, match });
const fault: Outcome = { error: GuestFaultError, poisoned: true };
const raw = (port: number, bytes: Uint8Array) => (sb: Sandbox) => sb.call("raw_frame", port, bytes);

const FORBIDDEN: [number, string][] = [
  [0, "lidt"],
  [1, "lgdt"],
  [2, "mov cr3"],
  [3, "wrmsr kvmclock 0x4b564d00"],
  [4, "rdmsr 0x10 (TSC)"],
  [5, "hlt"],
  [6, "cli"],
  [7, "sti; hlt"],
  [9, "out 0x80"],
  [10, "out to the FAULT port"],
  [11, "int3"],
  [12, "ltr"],
  [13, "mov rax, cr0"],
  [15, "rdmsr 0x4b564d01 (kvm system time)"],
  [16, "wrmsr 0x4b564d02 (async PF)"],
  [17, "wrmsr 0x4b564d03 (steal time)"],
  [18, "wrmsr 0x4b564d07"],
  [19, "rdmsr 0xc1 (PMC0)"],
  [20, "wrmsr 0x186 (PERFEVTSEL0)"],
  [21, "rdmsr of a bogus MSR"],
  [24, "xsetbv (AVX)"],
  [25, "mov rax, dr7"],
  [26, "mov dr0, rax"],
  [27, "mov cr4"],
  [28, "outsb to 0x7f00"],
  [30, "out to 0x3f8"],
  [31, "in from 0xcf8"],
  [33, "rdpmc"],
  [34, "int 0x80"],
  [35, "kernel selector into DS"],
  [36, "sgdt, then out to 0x7f0c"],
];

/** −KVM_EPERM: what KVM answers a hypercall from CPL > 0 with (RAX = −1). */
const KVM_EPERM_RESULT = 0xffff_ffff_ffff_ffffn;

/**
 * A hypercall from CPL 3 (docs/security.md, "Hypercalls"). Hosts differ in which of `vmcall` and
 * `vmmcall` faults and which KVM refuses, so either outcome passes, each with its invariant: a
 * typed fault that poisons; or a return with RAX = −KVM_EPERM and no effect (the buffer RBX points
 * to, where KVM_HC_CLOCK_PAIRING would write the host's clock, unchanged), the next call exact.
 */
const hypercall = (op: 0 | 1, nr: bigint): Behaviour => ({
  name: `hypercall: ${op === 0 ? "vmcall" : "vmmcall"} nr ${nr}`,
  run: async (sb) => {
    let out: Uint8Array;
    try {
      out = (await sb.call("hypercall", op, nr)) as Uint8Array;
    } catch (e) {
      assert.ok(e instanceof GuestFaultError, String(e));
      assert.ok(sb.poisoned);
      return;
    }
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    assert.equal(v.getBigUint64(0, true), KVM_EPERM_RESULT, "refused with -KVM_EPERM");
    assert.deepEqual(out.subarray(8), new Uint8Array(64).fill(0xa5), "the guest reached nothing");
  },
  expect: { ok: true },
  allowPoisoned: true,
});

/**
 * State a CPL-3 guest may write where the host's CR4 enables the instruction (kvm_pvm; hardware
 * KVM: #UD): a typed fault, or the value is the guest's own and the next call exact.
 */
const hostSet = (name: string, op: number, value: bigint): Behaviour => ({
  name,
  run: async (sb) => {
    try {
      assert.equal(await sb.call("host_set", op, value), value);
    } catch (e) {
      assert.ok(e instanceof GuestFaultError, String(e));
      assert.ok(sb.poisoned);
    }
  },
  expect: { ok: true },
  allowPoisoned: true,
});

const BEHAVIOURS: Behaviour[] = [
  // Wrong frame kinds per port.
  { name: "DONE with a LOG frame", run: raw(DONE, logFrame(2, "x")), expect: protocol(/got LOG/) },
  { name: "DONE with a HOST_CALL frame", run: raw(DONE, hostCall("h")), expect: protocol() },
  {
    name: "DONE with a FUNCTION_TABLE frame",
    run: raw(DONE, frame(K.FUNCTION_TABLE, u32(0))),
    expect: protocol(),
  },
  { name: "DONE with an unknown kind 99", run: raw(DONE, frame(99, u32(0))), expect: protocol() },
  { name: "DONE with kind 0", run: raw(DONE, frame(0, new Uint8Array())), expect: protocol() },
  {
    name: "DONE with RETURN of the wrong type",
    run: raw(DONE, frame(K.RETURN, cat(new Uint8Array([8]), str("x")))),
    expect: protocol(/signature says u32/),
  },
  { name: "HOST_CALL with a LOG frame", run: raw(HOST_CALL, logFrame(2, "x")), expect: protocol() },
  {
    name: "HOST_CALL with a RETURN frame",
    run: raw(HOST_CALL, frame(K.RETURN, new Uint8Array([0]))),
    expect: protocol(),
  },
  {
    name: "LOG with a HOST_CALL frame (onLog set)",
    run: raw(LOG, hostCall("h")),
    expect: protocol(/expected LOG/),
    onLog: true,
  },
  {
    name: "ABORT with a LOG frame",
    run: raw(ABORT, logFrame(0, "x")),
    expect: protocol(/PANIC/),
  },
  {
    name: "ABORT with an ABI-1 FAULT frame",
    run: raw(ABORT, frame(K2.FAULT, new Uint8Array(40))),
    expect: protocol(/PANIC/),
  },
  {
    name: "ABORT with a PANIC frame",
    run: raw(ABORT, frame(K2.PANIC, str("boom"))),
    expect: { error: GuestPanicError, poisoned: true },
  },
  // Lengths past the buffer, caps, encodings.
  {
    name: "DONE: payload_len past the buffer",
    run: raw(DONE, frame(K.RETURN, new Uint8Array([0]), 0xffff_fff0)),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: payload_len past the buffer",
    run: raw(HOST_CALL, frame(K.HOST_CALL, str("h"), 0x7fff_ffff)),
    expect: protocol(),
  },
  {
    name: "LOG: payload_len past the buffer (onLog set)",
    run: raw(LOG, frame(K2.LOG, u32(2), 0x10_0000_0)),
    expect: protocol(),
    onLog: true,
  },
  {
    name: "HOST_CALL: a 1 MiB name",
    run: raw(HOST_CALL, hostCall("n".repeat(1 << 20))),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: 4M void arguments",
    run: raw(HOST_CALL, hostCall("h", [new Uint8Array(4_000_000)])),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: argc 33",
    run: raw(
      HOST_CALL,
      hostCall("h", Array.from({ length: 33 }, () => cat(new Uint8Array([2]), u32(1)))),
    ),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: argc larger than the bytes",
    run: raw(HOST_CALL, hostCall("h", [], 0xffff_ffff)),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: invalid UTF-8 in the name",
    run: raw(HOST_CALL, hostCall(new Uint8Array([0xff, 0xfe]))),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: a bool of 2",
    run: raw(HOST_CALL, hostCall("h", [new Uint8Array([7, 2])])),
    expect: protocol(),
  },
  {
    name: "HOST_CALL: trailing bytes",
    run: raw(HOST_CALL, frame(K.HOST_CALL, cat(str("h"), u32(0), new Uint8Array(3)))),
    expect: protocol(),
  },
  {
    name: "LOG: invalid UTF-8 (onLog set)",
    run: raw(LOG, logFrame(2, new Uint8Array([0xc3, 0x28]))),
    expect: protocol(),
    onLog: true,
  },
  {
    name: "LOG: level 0xffffffff (onLog set)",
    run: raw(LOG, logFrame(0xffff_ffff, "x")),
    expect: protocol(/level/),
    onLog: true,
  },
  {
    name: "LOG: garbage without onLog is skipped, never decoded",
    run: async (sb) => {
      assert.equal(await sb.call("raw_frame", LOG, new Uint8Array([1, 2, 3])), 3);
      assert.equal(sb.stats().logsSkipped, 1);
    },
    expect: { ok: true },
  },
  {
    name: "HOST_CALL of an unknown host function is answered HOST_ERROR",
    run: async (sb) =>
      assert.ok((await sb.call("raw_frame", HOST_CALL, hostCall("nope"))) as number > 0),
    expect: { ok: true },
  },
  // The PEB is the guest's to scribble on; the host never reads it back for decisions.
  ...[
    [0x00, "magic"],
    [0x20, "output_addr"],
    [0x28, "output_size"],
    [0x10, "input_addr"],
    [0x68, "memory_size"],
  ].map(([offset, field]): Behaviour => ({
    name: `the guest rewrites PEB ${field}`,
    run: async (sb) => {
      await sb.call("peb_write", offset, 0xdead_0000n);
      assert.equal(await sb.call("echo", "still here"), "still here");
    },
    expect: { ok: true },
  })),
  // Privileged and denied instructions.
  ...FORBIDDEN.map(([op, name]): Behaviour => ({
    name: `forbidden: ${name}`,
    run: (sb) => sb.call("forbidden", op),
    expect: { error: SandboxError, poisoned: true },
  })),
  // KVM_HC_KICK_CPU 5, KVM_HC_CLOCK_PAIRING 9, KVM_HC_SEND_IPI 10, KVM_HC_MAP_GPA_RANGE 12.
  ...[0n, 5n, 9n, 10n, 12n].flatMap((nr) => [hypercall(0, nr), hypercall(1, nr)]),
  hostSet("wrfsbase: a kernel-half address", 0, 0xffff_8000_0000_0000n),
  hostSet("wrgsbase: the host's own TLS is not the guest's", 1, 0x7fff_ffff_f000n),
  hostSet("YMM15 all ones", 2, 0xffff_ffff_ffff_ffffn),
  {
    name: "wrfsbase: a non-canonical address",
    run: (sb) => sb.call("host_set", 0, 0x8000_0000_0000_0000n),
    expect: fault,
  },
  {
    name: "wrpkru denying key 0",
    run: (sb) => sb.call("host_set", 3, 3n),
    expect: fault,
  },
  {
    name: "in from port 0x7f00",
    run: (sb) => sb.call("forbidden", 14),
    expect: protocol(/read I\/O/),
  },
  {
    name: "insb from port 0x7f00",
    run: (sb) => sb.call("forbidden", 29),
    expect: { error: SandboxError, poisoned: true },
  },
  { name: "write above memory", run: (sb) => sb.call("write_addr", 1n << 40n), expect: fault },
  { name: "read of the null page", run: (sb) => sb.call("read_addr", 0n), expect: fault },
  { name: "execute the PEB page", run: (sb) => sb.call("exec_addr", 0x1000n), expect: fault },
  {
    name: "CPUID contents come back (16 bytes), sandbox usable",
    run: async (sb) => {
      for (const leaf of [0, 1, 7, 0xd, 0x4000_0000, 0x8000_0001, 0x8000_0008]) {
        assert.equal(((await sb.call("cpuid", leaf, 0)) as Uint8Array).length, 16);
      }
    },
    expect: { ok: true },
  },
  // Floods and budgets.
  {
    name: "a LOG flood past maxExitsPerCall",
    run: (sb) => sb.call("log_flood", 200_000),
    options: { maxExitsPerCall: 5_000, onLog: () => {} },
    expect: { error: ExitBudgetError, poisoned: true },
  },
  {
    name: "a host-call flood past maxExitsPerCall",
    run: (sb) => sb.call("host_call_flood", "nop", 100_000),
    options: { maxExitsPerCall: 5_000 },
    expect: { error: ExitBudgetError, poisoned: true },
  },
  {
    name: "a flood holds the timeout",
    run: (sb) => sb.callWithOptions({ timeoutMs: 100 }, "log_flood", 100_000_000),
    options: { maxExitsPerCall: 2 ** 40 },
    expect: { error: TimeoutError, poisoned: true },
  },
  {
    name: "a host function that calls dispose()",
    run: (sb) => sb.call("host_call_flood", "dispose", 10),
    expect: { error: SandboxDisposedError, poisoned: true },
  },
  {
    name: "dispose during a host-call flood",
    run: (sb) => {
      setTimeout(() => sb.dispose(), 20);
      return sb.call("host_call_flood", "nop", 100_000_000);
    },
    options: { maxExitsPerCall: 2 ** 40 },
    expect: { error: SandboxDisposedError, poisoned: true },
  },
];

/** `elf` with `extra` bytes more `p_memsz` in its last writable PT_LOAD (a larger .bss). */
function withBss(elf: Uint8Array, extra: number): Uint8Array {
  const out = elf.slice();
  const v = new DataView(out.buffer);
  const phoff = Number(v.getBigUint64(0x20, true));
  const size = v.getUint16(0x36, true);
  let last = -1;
  for (let i = 0; i < v.getUint16(0x38, true); i++) {
    const at = phoff + i * size;
    if (v.getUint32(at, true) === 1 && (v.getUint32(at + 4, true) & 2) !== 0) last = at;
  }
  assert.ok(last >= 0, "a writable PT_LOAD");
  v.setBigUint64(last + 40, v.getBigUint64(last + 40, true) + BigInt(extra), true);
  return out;
}

async function makeSandbox(b: Behaviour): Promise<Sandbox> {
  const self: Sandbox = await Sandbox.create({
    guest: TESTGUEST,
    hostFunctions: {
      nop: { params: [], result: "void", fn: () => undefined },
      dispose: { params: [], result: "void", fn: () => void self.dispose() },
      h: { params: ["i32"], result: "i32", fn: (x: number) => x },
    },
    ...(b.onLog ? { onLog: () => {} } : {}),
    ...b.options,
  });
  return self;
}

kvmTest(`hostile guest battery (${BEHAVIOURS.length + 5} behaviours)`, async (t) => {
  // The per-image start snapshots and their recycled VMs are a process-wide cache
  // (src/start_cache.ts, src/recycle.ts): emptied on both sides of the count.
  // One create first: a start snapshot's first use opens the process's userfaultfd and pagemap
  // file, once per process (docs/design.md, "Scale"), not per sandbox.
  await (await Sandbox.create({ guest: TESTGUEST })).dispose();
  await StartSnapshotCache.default.clear();
  const fds = openFdCount();
  const vms = globalStats().liveVms;
  const mappings = guestMappingCount();
  for (const b of BEHAVIOURS) {
    await t.step(b.name, async () => {
      const sb = await makeSandbox(b);
      try {
        let error: unknown;
        try {
          await b.run(sb);
        } catch (e) {
          error = e;
        }
        if ("ok" in b.expect) {
          assert.equal(error, undefined, `unexpected ${error}`);
          if (!(b.allowPoisoned && sb.poisoned)) {
            assert.equal(sb.poisoned, false);
            assert.equal(await sb.call("add", 2, 3), 5);
          }
        } else {
          assert.ok(
            error instanceof b.expect.error,
            `expected ${b.expect.error.name}, got ${error}`,
          );
          assert.ok(!(error instanceof TypeError || error instanceof RangeError));
          if (b.expect.match) assert.match((error as Error).message, b.expect.match);
          assert.ok(sb.poisoned || sb.disposed, "poisoned");
          await assert.rejects(sb.call("add", 1, 1), SandboxError);
        }
      } finally {
        await sb.dispose();
      }
    });
  }
  await t.step("touching every page of a 1 GiB sandbox", async () => {
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      heapSize: (1 << 30) - (16 << 20),
    });
    const heap = (await sb.call("read_addr", 0x1030n)) as bigint;
    const size = (await sb.call("read_addr", 0x1038n)) as bigint;
    assert.equal(size, BigInt((1 << 30) - (16 << 20)));
    assert.equal(await sb.call("touch_pages", heap, size), size / 4096n);
    assert.equal(await sb.call("add", 1, 2), 3);
  });
  for (
    const [what, extra, ok] of [["1 GiB", 1 << 30, false], ["900 MiB", 900 << 20, true]] as const
  ) {
    await t.step(`an ELF with a ${what} .bss`, async () => {
      const elf = withBss(await Deno.readFile(TESTGUEST), extra);
      const create = Sandbox.create({ guest: elf, heapSize: 4 << 20, stackSize: 1 << 20 });
      if (!ok) {
        await assert.rejects(create, (e) => e instanceof SandboxError && /1 GiB/.test(e.message));
        return;
      }
      await using sb = await create;
      assert.equal(await sb.call("add", 2, 2), 4);
    });
  }
  await t.step("a hostile wasm-runtime (the test guest) is a typed ProtocolError", async () => {
    const module = new URL("../../target/wasm-fixtures/fib.wasm", import.meta.url).pathname;
    await assert.rejects(
      WasmSandbox.create({ module, runtime: TESTGUEST, engine: "wasmi" }),
      (e) => e instanceof ProtocolError && /no function load/.test(e.message),
    );
  });
  await t.step("the host is alive and nothing leaked", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    assert.equal(await sb.call("add", 20, 22), 42);
    await sb.dispose();
    await StartSnapshotCache.default.clear();
    assert.equal(globalStats().liveVms, vms);
    assert.ok(openFdCount() <= fds + 2, `fds ${fds} -> ${openFdCount()}`);
    assert.equal(guestMappingCount(), mappings);
  });
});

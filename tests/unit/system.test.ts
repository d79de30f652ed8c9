// The host's system pages (src/system.ts), decoded the way the CPU reads them.
import assert from "node:assert/strict";
import {
  EXCEPTION_VECTORS,
  GDT_ADDR,
  IDT_ADDR,
  Port,
  RING0_STACK_TOP,
  Selector,
  STUB_SIZE,
  STUBS_ADDR,
  SYSTEM_TABLES_ADDR,
  SYSTEM_TABLES_SIZE,
  TSS_ADDR,
} from "../../src/abi.ts";
import {
  exceptionStub,
  PAGE_FAULT_VECTOR,
  readCpuFault,
  STUB_RESUME,
  stubVector,
  TSS_LIMIT,
  writeSystemTables,
} from "../../src/system.ts";

const mem = new Uint8Array(0x10000).fill(0x5a);
writeSystemTables(mem);
const view = new DataView(mem.buffer);
const u64 = (at: number) => view.getBigUint64(at, true);

/** The access byte, DPL and long-mode bit of GDT entry `selector`. */
function descriptor(selector: number) {
  const d = u64(GDT_ADDR + (selector & ~7));
  return {
    access: Number((d >> 40n) & 0xffn),
    dpl: Number((d >> 45n) & 3n),
    long: ((d >> 53n) & 1n) === 1n,
  };
}

Deno.test("system tables", async (t) => {
  await t.step("GDT: kernel and user segments, accessed bits preset", () => {
    assert.equal(u64(GDT_ADDR), 0n, "null descriptor");
    assert.deepEqual(descriptor(Selector.KERNEL_CODE), { access: 0x9b, dpl: 0, long: true });
    assert.deepEqual(descriptor(Selector.USER_CODE), { access: 0xfb, dpl: 3, long: true });
    assert.equal(descriptor(Selector.USER_DATA).access, 0xf3);
    assert.equal(Selector.USER_CODE & 3, 3);
    assert.equal(Selector.USER_DATA & 3, 3);
  });

  await t.step("TSS descriptor: busy 64-bit TSS at TSS_ADDR with the config's limit", () => {
    const low = u64(GDT_ADDR + Selector.TSS);
    const high = u64(GDT_ADDR + Selector.TSS + 8);
    const base = (low >> 16n & 0xffffffn) | ((low >> 56n) << 24n) | (high << 32n);
    const limit = (low & 0xffffn) | (((low >> 48n) & 0xfn) << 16n);
    assert.equal(base, BigInt(TSS_ADDR));
    assert.equal(limit, BigInt(TSS_LIMIT));
    assert.equal(Number((low >> 40n) & 0xffn), 0x8b);
    assert.ok(TSS_ADDR + TSS_LIMIT < SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE);
  });

  await t.step("IDT: a gate per vector to its stub, on IST1; only #BP reachable by int", () => {
    for (let v = 0; v < EXCEPTION_VECTORS; v++) {
      const low = u64(IDT_ADDR + 16 * v);
      const high = u64(IDT_ADDR + 16 * v + 8);
      const target = (low & 0xffffn) | (((low >> 48n) & 0xffffn) << 16n) | (high << 32n);
      assert.equal(target, BigInt(STUBS_ADDR + v * STUB_SIZE), `vector ${v}`);
      assert.equal(Number((low >> 16n) & 0xffffn), Selector.KERNEL_CODE);
      assert.equal(Number((low >> 32n) & 7n), 1, "IST1");
      assert.equal(Number((low >> 40n) & 0xffn), v === 3 ? 0xee : 0x8e);
    }
  });

  await t.step("TSS: RSP0 and IST1 at the ring-0 stack top", () => {
    assert.equal(u64(TSS_ADDR + 4), BigInt(RING0_STACK_TOP));
    assert.equal(u64(TSS_ADDR + 36), BigInt(RING0_STACK_TOP));
  });

  await t.step("I/O bitmap: only the guest ports (and the 3 above each) are granted", () => {
    const base = TSS_ADDR + view.getUint16(TSS_ADDR + 102, true);
    const limit = TSS_ADDR + TSS_LIMIT;
    // As the CPU checks an access of `size` bytes at `port` from CPL 3 with IOPL 0.
    const allowed = (port: number, size: number) => {
      const at = base + (port >> 3);
      if (at + 1 > limit) return false;
      const bits = view.getUint16(at, true) >> (port & 7);
      return (bits & ((1 << size) - 1)) === 0;
    };
    const granted: number[] = [];
    for (let port = 0; port < 0x10000; port++) if (allowed(port, 1)) granted.push(port);
    assert.deepEqual(granted, [0x7f00, 0x7f01, 0x7f02, 0x7f03, 0x7f04, 0x7f05, 0x7f06]);
    for (const p of [Port.DONE, Port.HOST_CALL, Port.ABORT, Port.LOG]) {
      assert.ok(allowed(p, 4), `4-byte out to 0x${p.toString(16)}`);
    }
    assert.ok(!allowed(Port.FAULT, 1), "FAULT is the host's");
    assert.ok(!allowed(0x80, 1));
  });

  await t.step(
    "stubs: mov al, vector; mov dx, FAULT; out dx, al; hlt (#DE, #UD, #PF: iretq)",
    () => {
      for (let v = 0; v < EXCEPTION_VECTORS; v++) {
        const stub = mem.subarray(STUBS_ADDR + v * STUB_SIZE, STUBS_ADDR + (v + 1) * STUB_SIZE);
        assert.deepEqual(stub, exceptionStub(v));
        const exit = [0xb0, v, 0x66, 0xba, Port.FAULT & 0xff, Port.FAULT >> 8, 0xee];
        // add rsp, 8 (#PF's error code); iretq — resumed only when the host delivers a Wasm trap.
        const tail = v === PAGE_FAULT_VECTOR
          ? [0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf]
          : v === 0 || v === 6
          ? [0x48, 0xcf]
          : [0xf4];
        assert.deepEqual([...stub.subarray(0, exit.length + tail.length)], [...exit, ...tail]);
        assert.equal(STUB_RESUME, exit.length);
      }
    },
  );
});

Deno.test("fault decoding", async (t) => {
  await t.step("stubVector: only a stub's own out, at CPL 0", () => {
    const at = (v: number, offset: number) => BigInt(STUBS_ADDR + v * STUB_SIZE + offset);
    assert.equal(stubVector(at(14, 6), 0x08n), 14);
    assert.equal(stubVector(at(14, 7), 0x08n), 14, "RIP after the out");
    assert.equal(stubVector(at(0, 6), 0x08n), 0);
    assert.equal(stubVector(at(31, 7), 0x08n), 31);
    assert.equal(stubVector(at(14, 6), 0x23n), undefined, "CPL 3");
    assert.equal(stubVector(at(14, 2), 0x08n), undefined, "not at the out");
    assert.equal(stubVector(at(32, 6), 0x08n), undefined, "past the stubs");
    assert.equal(stubVector(BigInt(STUBS_ADDR - 10), 0x08n), undefined);
    assert.equal(stubVector(0x812345n, 0x23n), undefined, "guest code");
  });

  await t.step("readCpuFault: the frame below the ring-0 stack top", () => {
    const m = new Uint8Array(RING0_STACK_TOP);
    const v = new DataView(m.buffer);
    const push = (slot: number, value: bigint) =>
      v.setBigUint64(RING0_STACK_TOP - 8 * slot, value, true);
    push(1, 0x1bn); // SS
    push(2, 0x7000n); // RSP
    push(3, 0x202n); // RFLAGS
    push(4, 0x23n); // CS
    push(5, 0x812345n); // RIP
    push(6, 7n); // error code
    assert.deepEqual(readCpuFault(m, 14), {
      vector: 14,
      errorCode: 7n,
      rip: 0x812345n,
      cs: 0x23n,
      rflags: 0x202n,
      rsp: 0x7000n,
    });
    assert.equal(readCpuFault(m, 6).errorCode, undefined, "#UD pushes none");
    assert.equal(readCpuFault(m, 6).rip, 0x812345n);
  });
});

import assert from "node:assert/strict";
import { HypervisorError } from "../../src/errors.ts";
import { CPU_GRANT, globalStats, hypervisorInfo, MicroVm } from "../../src/ffi/vm.ts";
import { openLibrary } from "../../src/ffi/lib.ts";
import { bareGuest, CODE } from "./_bare_guest.ts";
import { guestMappingCount, kvmTest, openFdCount } from "./_kvm.ts";

kvmTest("hypervisor reports KVM API 12 and immediate exit", () => {
  const info = hypervisorInfo();
  assert.equal(info.apiVersion, 12);
  assert.equal(info.immediateExit, true);
  assert.ok(info.maxMemorySlots > 0);
});

kvmTest("a CPL-3 guest writes bytes to an I/O port; its hlt is a fault", async () => {
  const { vm } = bareGuest(CODE.portIo);
  try {
    assert.equal(await vm.run(), 1);
    assert.deepEqual(vm.lastExit(), {
      kind: "io_out",
      port: 0x3f8,
      size: 1,
      data: new Uint8Array([0x48]),
    });
    vm.runSync();
    assert.deepEqual(vm.lastExit(), {
      kind: "io_out",
      port: 0x3f8,
      size: 4,
      data: new TextEncoder().encode("abcd"),
    });
    // hlt is privileged: #GP at CPL 3, and with no IDT that is a triple fault.
    await vm.run();
    assert.deepEqual(vm.lastExit(), { kind: "shutdown" });
    const stats = vm.stats();
    assert.equal(stats.exits, 3);
    assert.equal(stats.runs, 3);
  } finally {
    vm.destroy();
  }
});

kvmTest("a CPL-0 guest halts", async () => {
  const { vm } = bareGuest(CODE.halt, { supervisor: true });
  try {
    assert.equal(await vm.run(), 3);
    assert.deepEqual(vm.lastExit(), { kind: "halt" });
    assert.equal(vm.getSpecialRegisters().cs & 3n, 0n);
  } finally {
    vm.destroy();
  }
});

kvmTest("SSE instructions run at CPL 3 (CR4.OSFXSR set)", async () => {
  const { vm } = bareGuest(CODE.sse);
  try {
    await vm.run();
    assert.equal(vm.lastExit().kind, "io_out");
    assert.equal(vm.exitPort, 0x11);
    const special = vm.getSpecialRegisters();
    assert.equal(special.cs, 0x23n);
    assert.equal(special.ss, 0x1bn);
    assert.equal(special.efer & 1n, 0n, "EFER.SCE off: syscall is #UD");
  } finally {
    vm.destroy();
  }
});

kvmTest("a spinning guest is interrupted promptly and the event loop keeps running", async () => {
  const { vm } = bareGuest(CODE.spin);
  try {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const running = vm.run();
    await new Promise((r) => setTimeout(r, 200));
    // The 5 ms interval was armed before the 200 ms timeout, so it fires first unless the
    // event loop is blocked by the run: an ordering, not a speed.
    const ticksWhileSpinning = ticks;
    // Returns only once the vCPU is out of the run; the library bounds the kicking and throws
    // if the vCPU does not leave, so "promptly" needs no clock here.
    vm.interrupt();
    const kind = await running;
    clearInterval(timer);
    assert.deepEqual(vm.lastExit(), { kind: "interrupted" });
    assert.equal(kind, 8);
    assert.ok(ticksWhileSpinning >= 1, "the event loop ran while the guest spun");
    // The stop is sticky for this call; a new call resumes the guest, which can be interrupted
    // again.
    assert.equal(await vm.run(), 8);
    vm.beginCall();
    const again = vm.run();
    await new Promise((r) => setTimeout(r, 20));
    vm.interrupt();
    assert.equal(await again, 8);
  } finally {
    vm.destroy();
  }
});

kvmTest("an interrupt is sticky until the next call begins", async () => {
  const { vm } = bareGuest(CODE.done);
  try {
    vm.interrupt();
    vm.interrupt();
    // No run was in progress: the stop waits for the next one, which never enters the guest.
    assert.equal(await vm.run(), 8);
    assert.equal(vm.runSync(), 8);
    vm.beginCall();
    assert.equal(await vm.run(), 1);
    assert.equal(vm.exitPort, 0x11);
  } finally {
    vm.destroy();
  }
});

kvmTest("interrupting many short runs never loses or leaks an interrupt", async () => {
  // Guest: out 0x10, al; jmp back — an endless stream of exits.
  const { vm } = bareGuest([0xe6, 0x10, 0xeb, 0xfc]);
  try {
    for (let i = 0; i < 200; i++) {
      vm.beginCall();
      const run = vm.run();
      if (i % 2 === 0) vm.interrupt();
      const kind = await run;
      // Either the exit it reached first, or the interrupt: never an error, never a hang.
      assert.ok(kind === 1 || kind === 8, `run ${i} ended with ${kind}`);
      if (i % 2 === 0) {
        // Whatever that run ended with, the stop holds for the rest of this call.
        assert.equal(await vm.run(), 8, "a stop was lost");
      } else {
        assert.equal(kind, 1, "an interrupt leaked into the next call");
      }
    }
  } finally {
    vm.destroy();
  }
});

kvmTest("a synchronous run with a deadline stops a spinning guest", () => {
  const { vm } = bareGuest(CODE.spin);
  try {
    assert.equal(vm.runSync(20_000_000), 10);
    // The record holds where the vCPU stopped: the deadline interrupted it.
    assert.deepEqual(vm.lastExit(), { kind: "interrupted" });
    // The stop is sticky: the rest of this call does not enter the guest.
    assert.equal(vm.runSync(), 8);
  } finally {
    vm.destroy();
  }
});

kvmTest("a write to unmapped guest-physical memory is an MMIO exit", async () => {
  const { vm } = bareGuest(CODE.mmioWrite);
  try {
    await vm.run();
    assert.deepEqual(vm.lastExit(), {
      kind: "mmio",
      address: 0x10000000n,
      size: 1,
      write: true,
      data: new Uint8Array([0x5a]),
    });
  } finally {
    vm.destroy();
  }
  const read = bareGuest(CODE.mmioRead);
  try {
    await read.vm.run();
    const exit = read.vm.lastExit();
    assert.equal(exit.kind, "mmio");
    assert.equal(exit.kind === "mmio" && exit.write, false);
  } finally {
    read.vm.destroy();
  }
});

kvmTest("a triple fault is a shutdown exit", async () => {
  const { vm } = bareGuest(CODE.tripleFault);
  try {
    await vm.run();
    assert.deepEqual(vm.lastExit(), { kind: "shutdown" });
    const regs = vm.getRegisters();
    assert.ok(typeof regs.rip === "bigint");
  } finally {
    vm.destroy();
  }
});

kvmTest("200 VMs created and destroyed leave fds and mappings where they were", async () => {
  // Warm up: the first VM opens /dev/kvm (kept for the process) and Deno's own lazy resources.
  bareGuest(CODE.done).vm.destroy();
  const fds = openFdCount();
  const maps = guestMappingCount();
  // VMs other test files keep (their module caches' idle VMs; each file has its own JS world
  // but one native library) are theirs: this test counts its own.
  const live = globalStats().liveVms;
  for (let i = 0; i < 200; i++) {
    const { vm } = bareGuest(CODE.done);
    assert.equal(await vm.run(), 1);
    if (i === 0) assert.equal(guestMappingCount(), maps + 2, "guest memory + kvm_run mapped");
    vm.destroy();
  }
  assert.equal(openFdCount(), fds);
  assert.equal(guestMappingCount(), maps);
  assert.equal(globalStats().liveVms, live);
});

kvmTest("one create + run + destroy costs a fixed number of ioctls", () => {
  bareGuest(CODE.done).vm.destroy();
  const before = globalStats().ioctls;
  const { vm } = bareGuest(CODE.done);
  vm.runSync();
  const perVm = vm.stats().ioctls;
  vm.destroy();
  const total = globalStats().ioctls - before;
  // CREATE_VM, GET_VCPU_MMAP_SIZE, X86_SET_MSR_FILTER, SET_USER_MEMORY_REGION, CREATE_VCPU,
  // SET_CPUID2, GET_SREGS, SET_SREGS, SET_REGS, RUN; and SET_XCRS where the VM grants the AVX
  // state (hosts differ: `hypervisorInfo().grantedFeatures`, docs/cdylib-abi.md).
  const want = 10 + (hypervisorInfo().grantedFeatures & CPU_GRANT.AVX_STATE ? 1 : 0);
  assert.equal(perVm, want);
  assert.equal(total, want);
  console.log(`ioctls for create + run + destroy: ${total}`);
});

kvmTest("bad input is a typed error naming the cause", () => {
  const vm = MicroVm.create();
  try {
    const bad = (f: () => unknown, code: string, text: RegExp) =>
      assert.throws(
        f,
        (e) => e instanceof HypervisorError && e.code === code && text.test(e.message),
      );
    bad(() => vm.mapMemory(0, 0), "INVALID_ARGUMENT", /size is 0/);
    bad(() => vm.mapMemory(0, 1000), "INVALID_ARGUMENT", /multiple of the 4096/);
    bad(() => vm.mapMemory(0x123, 4096), "INVALID_ARGUMENT", /not 4096-byte aligned/);
    bad(() => vm.mapMemory(0, 2 ** 40), "INVALID_ARGUMENT", /limit/);
    bad(() => vm.runSync(), "STATE", /no vCPU/);
    const user = { codeSelector: 0x23, dataSelector: 0x1b };
    bad(() => vm.createVcpu({ ...user, cr3: 0x1001 }), "INVALID_ARGUMENT", /aligned/);
    bad(
      () => vm.createVcpu({ cr3: 0x1000, codeSelector: 0x23, dataSelector: 0x10 }),
      "INVALID_ARGUMENT",
      /RPL/,
    );
    vm.mapMemory(0, 0x10000);
    bad(() => vm.mapMemory(0x8000, 0x10000), "INVALID_ARGUMENT", /overlaps/);
  } finally {
    vm.destroy();
    vm.destroy(); // idempotent
  }
  // The raw ABI: a destroyed or unknown handle is an error code, never a crash.
  const lib = openLibrary();
  const handle = MicroVm.create();
  const h = handle.handle;
  handle.destroy();
  assert.equal(lib.hl_vm_destroy(h), -1);
  assert.equal(lib.hl_vcpu_run(h, 0n), -1);
  assert.equal(lib.hl_vcpu_start(h), -1);
  assert.equal(lib.hl_vcpu_interrupt(12345678), -1);
  assert.equal(lib.hl_vm_memory_ptr(h, 0), null);
  assert.equal(lib.hl_vm_create(null), -2);
});

kvmTest("destroy detaches every view of the VM's memory before unmapping it", () => {
  const vm = MicroVm.create();
  const memory = vm.mapMemory(0, 1 << 20);
  const sub = memory.subarray(4096, 8192);
  memory[5000] = 7;
  assert.equal(sub[904], 7);
  vm.destroy();
  assert.equal((memory.buffer as ArrayBuffer).detached, true);
  assert.equal(memory.length, 0);
  assert.equal(sub.length, 0);
  // Reads see nothing and writes go nowhere: the unmapped pages are out of reach.
  assert.equal(memory[5000], undefined);
  memory[5000] = 1;
  assert.equal(memory[5000], undefined);
  assert.throws(() => new Uint8Array(memory.buffer, 0, 16), TypeError);
  vm.destroy();
});

kvmTest("destroy detaches the view of memory mapped from a snapshot too", () => {
  const source = MicroVm.create();
  const target = MicroVm.create();
  try {
    source.mapMemory(0, 1 << 20)[8192] = 9;
    const snapshot = source.snapshotMemory(0);
    try {
      const view = target.mapSnapshot(0, snapshot);
      assert.equal(view[8192], 9);
      target.destroy();
      // A view left attached would read unmapped host memory (a crash, or another mapping's
      // bytes once the address is reused).
      assert.equal((view.buffer as ArrayBuffer).detached, true);
      assert.equal(view[8192], undefined);
    } finally {
      snapshot.release();
    }
  } finally {
    target.destroy();
    source.destroy();
  }
});

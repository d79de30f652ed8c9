/**
 * A restored vCPU resumes where the snapshot left the guest, on every KVM this library runs on:
 * after the I/O exit a snapshot is taken at, the next call runs the guest's dispatch, not the
 * `out` that ended the last call again (hardware KVM completes a port write only at the next
 * `KVM_RUN`, so state read before that would point at the `out`; rust-vmm `complete_pending_io`),
 * and the guest's ports stay usable (KVM on SVM reports TR as busy, which QEMU's emulated CPU
 * then refuses every port through; rust-vmm `set_state`). CI runs this file natively and in the
 * nested-QEMU harness (tools/test.sh), which is SVM-style KVM: there, without those two fixes, the
 * copy's call returned the snapshot's last result (1 instead of 2) or faulted with #GP at `out`.
 */

import assert from "node:assert/strict";
import { Sandbox } from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

kvmTest("restore in place: the next call runs from the snapshot's state", async () => {
  await using a = await Sandbox.create({ guest: TESTGUEST, startSnapshot: false });
  assert.equal(await a.call("counter"), 1n);
  await using s = await a.snapshot();
  assert.equal(await a.call("counter"), 2n);
  assert.equal(await a.call("counter"), 3n);
  await a.restore(s);
  assert.equal(await a.call("counter"), 2n);
});

kvmTest("restore in place to a state taken right after the guest's start", async () => {
  await using a = await Sandbox.create({ guest: TESTGUEST, startSnapshot: false });
  await using s = await a.snapshot();
  assert.equal(await a.call("counter"), 1n);
  await a.restore(s);
  assert.equal(await a.call("counter"), 1n);
});

kvmTest(
  "a new VM from a snapshot: its first call is a new call, not the last one's answer",
  async () => {
    await using a = await Sandbox.create({ guest: TESTGUEST, startSnapshot: false });
    assert.equal(await a.call("counter"), 1n);
    await using s = await a.snapshot();
    await using b = await Sandbox.create({ snapshot: s, recycle: false });
    assert.equal(await b.call("counter"), 2n);
    assert.equal(await b.call("counter"), 3n);
  },
);

kvmTest("cold creates from the image's start snapshot each run their own calls", async () => {
  await using a = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(await a.call("counter"), 1n);
  await using b = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(await b.call("counter"), 1n);
  assert.equal(await a.call("counter"), 2n);
});

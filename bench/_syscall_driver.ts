/**
 * Run by `bench/sandbox.bench.ts` under `strace -c -f`: creates one sandbox and makes `n` calls
 * of one kind, so the syscalls per call are the difference between two counts divided by `n`.
 *
 *   deno run -A bench/_syscall_driver.ts <n> <async|sync|host>
 */
import { Sandbox } from "../src/sandbox.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const n = Number(Deno.args[0] ?? "0");
const mode = Deno.args[1] ?? "async";
await using sb = await Sandbox.create({
  guest: TESTGUEST,
  heapSize: 1 << 20,
  hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
});
for (let i = 0; i < n; i++) {
  if (mode === "sync") sb.callSync("noop");
  else if (mode === "host") await sb.call("call_host", "double", 21);
  else await sb.call("noop");
}

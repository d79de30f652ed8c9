/**
 * Where an idle sandbox's memory goes (issue 19, docs/design.md "Scale"): creates `n` sandboxes
 * from one snapshot (each answers a call), and prints per sandbox the change in `/proc/self/smaps`
 * by kind of mapping (guest memory, the vCPU's `kvm_run`, other anonymous memory, the malloc heap,
 * files): count, RSS, PSS, anonymous and dirty kB; the rollup's RSS and anonymous kB; threads.
 * Measured after the idle vCPUs were detached from their worker threads, and after one sandbox
 * of the snapshot was disposed (as in a server that has served a request before): the snapshot
 * then knows which pages its sandboxes touch, and maps just those into each new one.
 *
 *   deno run -A --v8-flags=--expose-gc bench/_idle_memory.ts [n=200]
 *   HL_VCPU_DETACH_MS=0 deno run -A ...        (a thread per vCPU, for comparison)
 *   HL_SNAPSHOT_FAULT_AROUND=1 deno run -A ... (the kernel's fault-around on, every data page
 *                                               populated: before issue 19's RSS pass)
 */
import { Sandbox } from "../src/sandbox.ts";
import { teardownWait } from "../src/ffi/vm.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { untilDetached } from "../tests/kvm/_vcpu_threads.ts";

const n = Number(Deno.args[0] ?? 200);
const FIELDS = ["Rss", "Pss", "Anonymous", "Private_Dirty", "Shared_Dirty"] as const;
type Totals = Record<string, Record<string, number>>;

/** Sums of each smaps field, by kind of mapping. */
function smaps(): Totals {
  const out: Totals = {};
  let kind = "";
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1];
      kind = name.includes("hl-guest")
        ? "guest memory"
        : name.includes("kvm-vcpu")
        ? "kvm_run"
        : name === "" || name.startsWith("[anon")
        ? "anonymous"
        : name.startsWith("[")
        ? name
        : "files";
      out[kind] ??= {};
      out[kind].count = (out[kind].count ?? 0) + 1;
      continue;
    }
    const field = /^(\w+):\s+(\d+) kB/.exec(line);
    if (field && kind && (FIELDS as readonly string[]).includes(field[1])) {
      out[kind][field[1]] = (out[kind][field[1]] ?? 0) + Number(field[2]);
    }
  }
  return out;
}

function rollup(field: string): number {
  const text = Deno.readTextFileSync("/proc/self/smaps_rollup");
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(text)![1]);
}

/** `/proc/meminfo`'s kernel-side fields (kB): system-wide, so other processes' changes land in
 * them too; over hundreds of sandboxes the VMs' own dominate. */
const KERNEL = ["Slab", "SUnreclaim", "PageTables", "SecPageTables", "KernelStack"] as const;
function meminfo(): Record<string, number> {
  const text = Deno.readTextFileSync("/proc/meminfo");
  return Object.fromEntries(KERNEL.map((f) => {
    const m = new RegExp(`^${f}:\\s+(\\d+)`, "m").exec(text);
    return [f, m ? Number(m[1]) : NaN];
  }));
}

async function settle(): Promise<void> {
  teardownWait();
  (globalThis as { gc?: () => void }).gc?.();
  await untilDetached(5_000); // idle vCPUs detach after 50 ms
}

const guest = await Deno.readFile(TESTGUEST);
const base = await Sandbox.create({ guest, heapSize: 1 << 20 });
await base.call("noop");
const snapshot = await base.snapshot();
const live: Sandbox[] = [];
const more = async (count: number) => {
  for (let i = 0; i < count; i++) {
    const s = await Sandbox.create({ snapshot });
    await s.call("noop");
    live.push(s);
  }
  await settle();
};
await more(20); // warm-up: the process settles
await live.pop()!.dispose(); // the snapshot learns its write set and the pages its copies touch
await settle();
const [a, rssA, pssA, anonA] = [smaps(), rollup("Rss"), rollup("Pss"), rollup("Anonymous")];
const kernelA = meminfo();
const threadsA = [...Deno.readDirSync("/proc/self/task")].length;
await more(n);
const [b, rssB, pssB, anonB] = [smaps(), rollup("Rss"), rollup("Pss"), rollup("Anonymous")];
const kernelB = meminfo();
const threadsB = [...Deno.readDirSync("/proc/self/task")].length;
const perSandbox: Record<string, string> = {};
for (const kind of new Set([...Object.keys(a), ...Object.keys(b)])) {
  const parts = ["count", ...FIELDS].map((f) => {
    const d = ((b[kind]?.[f] ?? 0) - (a[kind]?.[f] ?? 0)) / n;
    return Math.abs(d) >= 0.05 ? `${f} ${d.toFixed(2)}` : "";
  }).filter(Boolean);
  if (parts.length) perSandbox[kind] = parts.join(", ");
}
console.log(JSON.stringify(
  {
    sandboxes: n,
    perSandboxKb: perSandbox,
    faultAround: Deno.env.get("HL_SNAPSHOT_FAULT_AROUND") === "1",
    rollupRssKb: +((rssB - rssA) / n).toFixed(1),
    rollupPssKb: +((pssB - pssA) / n).toFixed(1),
    rollupAnonymousKb: +((anonB - anonA) / n).toFixed(1),
    kernelKb: Object.fromEntries(
      KERNEL.map((f) => [f, +((kernelB[f] - kernelA[f]) / n).toFixed(1)]),
    ),
    threads: +((threadsB - threadsA) / n).toFixed(2),
  },
  null,
  1,
));
for (const s of live) await s.dispose();
await base.dispose();

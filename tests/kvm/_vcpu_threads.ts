/**
 * This process's vCPU worker threads (rust-vmm/src/workers.rs), counted by name: `hl-vcpu-<vm>`
 * while one holds a vCPU, `hl-vcpu-idle` between jobs. For tests/kvm/idle_threads.test.ts and the
 * benches that measure idle sandboxes (bench/scale.bench.ts, bench/_idle_memory.ts).
 */

/** `workers.rs` MAX_IDLE: the most worker threads that wait for work at once. */
export const MAX_IDLE_WORKERS = 4;

/** Our vCPU threads now: those holding a vCPU, and those waiting for work. */
export function vcpuThreads(): { holding: number; idle: number } {
  let holding = 0, idle = 0;
  for (const task of Deno.readDirSync("/proc/self/task")) {
    let comm: string;
    try {
      comm = Deno.readTextFileSync(`/proc/self/task/${task.name}/comm`).trim();
    } catch {
      continue; // the thread exited meanwhile
    }
    if (comm === "hl-vcpu-idle") idle++;
    else if (comm.startsWith("hl-vcpu")) holding++;
  }
  return { holding, idle };
}

/**
 * Polls, for up to `limitMs` (20 s), until no thread holds a vCPU (idle ones are detached after
 * 50 ms, `HL_VCPU_DETACH_MS`) and the pool is back within its bound: a worker renames itself
 * `hl-vcpu-idle` before it finds the pool full and exits, so just after many detach at once more
 * than {@linkcode MAX_IDLE_WORKERS} may still be seen. Returns the last count (the caller asserts
 * on it: a bounded wait, not a timing assumption).
 */
export async function untilDetached(limitMs = 20_000): Promise<{ holding: number; idle: number }> {
  let now = vcpuThreads();
  for (
    let waited = 0;
    waited < limitMs && (now.holding > 0 || now.holding + now.idle > MAX_IDLE_WORKERS);
    waited += 100
  ) {
    await new Promise((r) => setTimeout(r, 100));
    now = vcpuThreads();
  }
  return now;
}

/**
 * Figures of the call path that a median cannot show: syscalls per call (`strace -c -f` over a
 * fixed number of calls), CPU time per call (spinning costs CPU), the event loop's timer gaps
 * while a guest spins inside `call()`, and the cost of copying 1 MiB.
 */
import process from "node:process";
import type { Sandbox } from "../src/sandbox.ts";
import { TimeoutError } from "../src/errors.ts";

/** Syscalls per call of `mode`, from two strace runs (n calls and none); undefined without strace. */
export async function syscallsPerCall(
  mode: "async" | "sync" | "host",
  n = 2000,
): Promise<{ total: number; ioctl: number; futex: number } | undefined> {
  const count = async (calls: number) => {
    const log = await Deno.makeTempFile({ prefix: "hl-strace-" });
    try {
      const driver = new URL("./_syscall_driver.ts", import.meta.url).pathname;
      const out = await new Deno.Command("strace", {
        args: ["-c", "-f", "-o", log, Deno.execPath(), "run", "-A", driver, String(calls), mode],
        stdout: "null",
        stderr: "piped",
      }).output();
      if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
      const text = await Deno.readTextFile(log);
      const calls_ = (name: string) => {
        const line = text.split("\n").find((l) => l.trim().split(/\s+/).at(-1) === name);
        // % time, seconds, usecs/call, calls, [errors], syscall
        return line ? Number(line.trim().split(/\s+/)[3]) : 0;
      };
      return { total: calls_("total"), ioctl: calls_("ioctl"), futex: calls_("futex") };
    } finally {
      await Deno.remove(log).catch(() => {});
    }
  };
  try {
    const [base, loaded] = [await count(0), await count(n)];
    return {
      total: (loaded.total - base.total) / n,
      ioctl: (loaded.ioctl - base.ioctl) / n,
      futex: (loaded.futex - base.futex) / n,
    };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Process CPU time (user + system) per run of `op`, in µs. */
export async function cpuPerCall(op: () => unknown, n: number): Promise<number> {
  for (let i = 0; i < Math.min(n, 100); i++) await op();
  const before = process.cpuUsage();
  for (let i = 0; i < n; i++) await op();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / n;
}

/**
 * While `sb` runs a spinning guest function for `ms` (stopped by its timeout), a 1 ms interval
 * records the gaps between its ticks; returns the p50, p99 and largest gap in ms.
 */
export async function timerGapsDuringSpin(
  sb: Sandbox,
  fn: string,
  ms: number,
): Promise<{ p50: number; p99: number; max: number; ticks: number }> {
  const gaps: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
  }, 1);
  try {
    await sb.callWithOptions({ timeoutMs: ms }, fn).then(
      () => {
        throw new Error(`${fn} returned; it should spin until the timeout`);
      },
      (e) => {
        if (!(e instanceof TimeoutError)) throw e;
      },
    );
  } finally {
    clearInterval(timer);
  }
  gaps.sort((a, b) => a - b);
  const at = (q: number) => gaps[Math.min(gaps.length - 1, Math.floor(q * gaps.length))];
  return { p50: at(0.5), p99: at(0.99), max: gaps[gaps.length - 1], ticks: gaps.length };
}

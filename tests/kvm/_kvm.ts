/**
 * Registration of tests that need a usable /dev/kvm. Without one they are ignored (reported as
 * such by Deno), unless HL_REQUIRE_KVM=1, where each becomes a failing test: CI must never count
 * a KVM test that did not run.
 */

import { globalStats, teardownWait } from "../../src/ffi/vm.ts";

function kvmUsable(): boolean {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

export const KVM_USABLE: boolean = kvmUsable();
const REQUIRED = Deno.env.get("HL_REQUIRE_KVM") === "1";

/** Number of threads of this process, once every VM destroyed so far is freed. */
export function threadCount(): number {
  teardownWait();
  return [...Deno.readDirSync("/proc/self/task")].length;
}

/** Registers a KVM test. */
export function kvmTest(name: string, fn: (t: Deno.TestContext) => void | Promise<void>): void {
  if (KVM_USABLE) {
    Deno.test({ name, fn });
  } else if (REQUIRED) {
    Deno.test(name, () => {
      throw new Error(
        "HL_REQUIRE_KVM=1 but /dev/kvm is not usable here: run the tests through `deno task vm`",
      );
    });
  } else {
    Deno.test({ name: `${name} (needs /dev/kvm)`, ignore: true, fn });
  }
}

/**
 * Number of open file descriptors of this process, once every VM destroyed so far is freed
 * (`dispose` leaves that to the cdylib's background thread: `teardownWait`).
 */
export function openFdCount(): number {
  teardownWait();
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n;
}

/**
 * Number of mappings this library makes: guest memory (fresh memory is anonymous, named
 * `[anon:hl-guest-memory]` only where the kernel supports it, so the library's count of it is
 * used; memory based on a snapshot maps the memfd `hl-guest-memory-snapshot`, and so does a
 * snapshot's read-only view, one per snapshot from its first copy-back restore until it is freed)
 * and vCPU run structures (`anon_inode:kvm-vcpu`). Counting every mapping of the process would also count
 * thread stacks of Deno's blocking pool, which grows on demand.
 */
export function guestMappingCount(): number {
  teardownWait();
  return Deno.readTextFileSync("/proc/self/maps").split("\n")
    .filter((l) =>
      (l.includes("hl-guest-memory") && !l.includes("[anon:")) || l.includes("kvm-vcpu")
    ).length + globalStats().anonymousRegions;
}

/** The Wasm engines every Wasm test runs on (docs/wasm.md, "Engines"). */
export const WASM_ENGINES = ["wasmi", "wasmtime"] as const;

/** `kvmTest` with the engine's name in front. */
export function engineTest(
  engine: (typeof WASM_ENGINES)[number],
): (name: string, fn: (t: Deno.TestContext) => void | Promise<void>) => void {
  return (name, fn) => kvmTest(`[${engine}] ${name}`, fn);
}

/** Runs `deno <args>` in `cwd` (no stdin, no colours); resolves its exit code and output. */
export async function runDeno(
  args: string[],
  cwd?: string,
): Promise<{ code: number; out: string; err: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: o.code, out: decoder.decode(o.stdout), err: decoder.decode(o.stderr) };
}

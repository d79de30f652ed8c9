/**
 * The raw floor of KVM work: what a minimal C program pays for the same steps the sandbox takes,
 * with nothing between it and the ioctls. Benchmarks compare against it to see how much of their
 * time is the library's own.
 *
 * Builds `bench/floor/raw_kvm.c` into `target/bench/raw_kvm` (only when the binary is missing or
 * older than the source), runs it, and returns its figures.
 */

/** Median and spread of one measurement, in microseconds. */
export interface FloorStats {
  /** 50th percentile. */
  median: number;
  /** 10th percentile. */
  p10: number;
  /** 90th percentile. */
  p90: number;
  /** Every timing, sorted (only when asked for with `samples: true`). */
  samples?: number[];
}

/** What `raw_kvm` measured on this machine. */
export interface Floor {
  /**
   * One whole VM lifecycle: create VM, memory, vCPU, CPUID, registers, run to the first exit,
   * then tear it all down (with `/dev/kvm` kept open across iterations), in µs.
   */
  create_us: FloorStats;
  /** One exit round trip on a running VM: a `KVM_RUN` that returns one `KVM_EXIT_IO`, in µs. */
  exit_us: FloorStats;
  /** How many lifecycles were timed. */
  create_n: number;
  /** How many exits were timed. */
  exit_n: number;
}

const SOURCE = new URL("./floor/raw_kvm.c", import.meta.url);
const BIN_DIR = new URL("../target/bench/", import.meta.url);
const BINARY = new URL("raw_kvm", BIN_DIR);

function pathOf(url: URL): string {
  return decodeURIComponent(url.pathname);
}

async function mtimeOf(url: URL): Promise<number | undefined> {
  try {
    return (await Deno.stat(url)).mtime?.getTime();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Runs a program to completion; a clear error if it cannot be started or exits non-zero. */
async function runChecked(cmd: string, args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`measureFloor: '${cmd}' not found; a C compiler (cc) is needed`);
    }
    throw e;
  }
  const decoder = new TextDecoder();
  if (!out.success) {
    const stderr = decoder.decode(out.stderr).trim();
    throw new Error(`measureFloor: ${cmd} ${args.join(" ")} failed (exit ${out.code}): ${stderr}`);
  }
  return decoder.decode(out.stdout);
}

/** Compiles `raw_kvm` unless an up-to-date binary is already there. */
async function ensureBuilt(): Promise<void> {
  const source = await mtimeOf(SOURCE);
  if (source === undefined) throw new Error(`measureFloor: ${pathOf(SOURCE)} is missing`);
  const binary = await mtimeOf(BINARY);
  if (binary !== undefined && binary >= source) return;
  await Deno.mkdir(BIN_DIR, { recursive: true });
  // Build beside the target, then rename, so a concurrent run never sees a half-written binary.
  const tmp = `${pathOf(BINARY)}.${Deno.pid}.tmp`;
  try {
    await runChecked("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp, pathOf(SOURCE)]);
    await Deno.rename(tmp, BINARY);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

function isStats(v: unknown): v is FloorStats {
  if (typeof v !== "object" || v === null) return false;
  const s = v as Record<string, unknown>;
  return [s.median, s.p10, s.p90].every((x) => typeof x === "number") &&
    (s.samples === undefined ||
      (Array.isArray(s.samples) && s.samples.every((x) => typeof x === "number")));
}

function isFloor(v: unknown): v is Floor {
  if (typeof v !== "object" || v === null) return false;
  const f = v as Record<string, unknown>;
  return isStats(f.create_us) && isStats(f.exit_us) && typeof f.create_n === "number" &&
    typeof f.exit_n === "number";
}

/**
 * Measures the raw KVM floor on this machine (needs `/dev/kvm` and `cc`).
 *
 * @param opts.creates VM lifecycles to time (default 200).
 * @param opts.exits exit round trips to time (default 20000).
 * @param opts.samples also return every timing (`FloorStats.samples`).
 */
export async function measureFloor(
  opts: { creates?: number; exits?: number; samples?: boolean } = {},
): Promise<Floor> {
  const creates = opts.creates ?? 200;
  const exits = opts.exits ?? 20000;
  for (const [name, n] of [["creates", creates], ["exits", exits]] as const) {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new Error(`measureFloor: ${name} must be a positive integer, got ${n}`);
    }
  }
  await ensureBuilt();
  const args = [String(creates), String(exits)];
  if (opts.samples) args.push("samples");
  const stdout = await runChecked(pathOf(BINARY), args);
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new Error(`measureFloor: raw_kvm printed something other than JSON: ${stdout.trim()}`);
  }
  if (!isFloor(parsed)) {
    throw new Error(`measureFloor: raw_kvm printed unexpected JSON: ${stdout.trim()}`);
  }
  return parsed;
}

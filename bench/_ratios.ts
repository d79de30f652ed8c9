/**
 * Library figures as ratios to the raw KVM floor (`bench/floor/raw_kvm.c`, measured in the same
 * run): absolute times drift with the machine and its noise, the ratio to what raw ioctls cost on
 * the same machine at the same moment much less.
 */
import type { Floor } from "./_floor.ts";

/** One library figure: its median time, and which floor it is compared with. */
export interface Figure {
  /** What was measured. */
  label: string;
  /** Median time of one operation, in µs. */
  medianUs: number;
  /** The floor it is a multiple of: one whole VM lifecycle, or one exit round trip. */
  against: "create" | "exit";
  /** The goal, as text (e.g. "≤ 1.3×"), when an issue states one. */
  goal?: string;
}

/**
 * Times `op` `iterations` times, one at a time, after `warmup` untimed runs, and returns the
 * median in µs.
 */
export async function medianUs(
  op: () => unknown | Promise<unknown>,
  iterations: number,
  warmup = Math.min(20, iterations),
): Promise<number> {
  for (let i = 0; i < warmup; i++) await op();
  const times = new Float64Array(iterations);
  for (let i = 0; i < iterations; i++) {
    const start = performance.now();
    await op();
    times[i] = (performance.now() - start) * 1000;
  }
  times.sort();
  return times[Math.floor(iterations / 2)];
}

function fixed(n: number, digits: number): string {
  return n.toFixed(digits).padStart(9);
}

/** Prints the floor and each figure with its ratio to it. */
export function printRatios(title: string, floor: Floor, figures: readonly Figure[]): void {
  const base = { create: floor.create_us.median, exit: floor.exit_us.median };
  console.log(`${title}: ratios to the raw KVM floor (bench/floor/raw_kvm.c, this run)`);
  console.log(
    `  floor: create + first exit + destroy ${base.create.toFixed(1)} µs (p10 ` +
      `${floor.create_us.p10.toFixed(1)}, p90 ${floor.create_us.p90.toFixed(1)}), one exit ` +
      `${base.exit.toFixed(2)} µs (p10 ${floor.exit_us.p10.toFixed(2)}, p90 ` +
      `${floor.exit_us.p90.toFixed(2)})`,
  );
  const width = Math.max(...figures.map((f) => f.label.length));
  for (const f of figures) {
    const ratio = f.medianUs / base[f.against];
    const goal = f.goal ? `  goal ${f.goal}` : "";
    console.log(
      `  ${f.label.padEnd(width)} ${fixed(f.medianUs, 1)} µs ${fixed(ratio, 2)}× ${f.against}` +
        goal,
    );
  }
}

/** One workload timed in the sandbox and in a reference engine in the same run. */
export interface EngineFigure {
  /** What was measured. */
  label: string;
  /** Median time in the sandbox, in µs. */
  sandboxUs: number;
  /** Median time of the same work in the reference engine, in µs. */
  referenceUs: number;
}

/**
 * Prints each figure with its ratio to the reference engine (e.g. V8) measured in the same run:
 * like the KVM floor, the reference drifts with the machine together with the sandbox.
 */
export function printEngineRatios(
  title: string,
  reference: string,
  figures: readonly EngineFigure[],
): void {
  console.log(`${title}: ratios to ${reference} (same module, same run)`);
  const width = Math.max(...figures.map((f) => f.label.length));
  for (const f of figures) {
    console.log(
      `  ${f.label.padEnd(width)} ${fixed(f.sandboxUs / 1000, 1)} ms vs ${
        fixed(f.referenceUs / 1000, 1)
      } ms ${fixed(f.sandboxUs / f.referenceUs, 2)}× ${reference}`,
    );
  }
}

/**
 * Library figures as ratios to the raw KVM floor (`bench/floor/raw_kvm.c`, measured in the same
 * run): absolute times drift with the machine and its noise, the ratio to what raw ioctls cost on
 * the same machine at the same moment much less.
 */
import { type Floor, measureFloor } from "./_floor.ts";

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
  /**
   * The floor's median from rounds interleaved with this figure's (`interleavedFigure`); when
   * absent, the figure is compared with the floor passed to `printRatios`.
   */
  floorUs?: number;
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

/** Times `n` runs of `op`, one at a time, and returns every timing in µs. */
export async function samplesUs(
  op: () => unknown | Promise<unknown>,
  n: number,
): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await op();
    times.push((performance.now() - start) * 1000);
  }
  return times;
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Times a library operation in rounds that alternate with rounds of the raw floor (a `raw_kvm`
 * run of as many creates, or exits, as the round has operations) and pools each side's timings.
 * On a noisy 2-CPU host a floor measured once, minutes away from the figure, moved by up to 2× on
 * its own; interleaved, both sides see the same stretches of noise.
 *
 * @param sample times `n` operations and returns their timings in µs (e.g. with `samplesUs`).
 * @param opts.rounds how many rounds of each side (default 8).
 * @param opts.perRound operations per round (and floor creates or exits per floor round).
 * @param opts.warmup untimed operations before the first round (default `perRound`).
 * @param opts.settle called after each library round (e.g. `teardownWait`, so VMs the round
 *   disposed are not torn down during the floor's round); its time is spread over the round's
 *   operations, as the floor's own teardown is in its samples.
 */
export async function interleavedFigure(
  figure: { label: string; against: "create" | "exit"; goal?: string },
  sample: (n: number) => Promise<number[]>,
  opts: { rounds?: number; perRound: number; warmup?: number; settle?: () => unknown },
): Promise<Figure> {
  const rounds = opts.rounds ?? 8;
  await sample(opts.warmup ?? opts.perRound);
  await opts.settle?.();
  const library: number[] = [];
  const floor: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const f = await measureFloor({
      creates: figure.against === "create" ? opts.perRound : 1,
      exits: figure.against === "exit" ? opts.perRound : 1,
      samples: true,
    });
    floor.push(...(figure.against === "create" ? f.create_us : f.exit_us).samples!);
    const round = await sample(opts.perRound);
    // The floor times its teardown; what the library left to finish in the background is
    // charged to the round's operations, evenly.
    const start = performance.now();
    await opts.settle?.();
    const settleUs = (performance.now() - start) * 1000;
    library.push(...round.map((us) => us + settleUs / round.length));
  }
  return { ...figure, medianUs: median(library), floorUs: median(floor) };
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
    const ratio = f.medianUs / (f.floorUs ?? base[f.against]);
    const own = f.floorUs === undefined
      ? ""
      : `  (floor of interleaved rounds ${f.floorUs.toFixed(f.against === "exit" ? 2 : 1)} µs)`;
    const goal = (f.goal ? `  goal ${f.goal}` : "") + own;
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

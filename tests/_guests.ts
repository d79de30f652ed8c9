/** Paths of the built test guests (`deno task build` builds them). */

const root = new URL("../", import.meta.url);

/** The test guest ELF (guest/testguest). */
export const TESTGUEST: string =
  new URL("guest/target/x86_64-unknown-linux-gnu/release/testguest", root).pathname;

/** The stable text rendering of `echo_all` (documented in guest/README.md). */
export function renderEchoAll(
  a: number,
  b: number,
  c: bigint,
  d: bigint,
  e: number,
  f: number,
  g: boolean,
  s: string,
  bytes: Uint8Array,
): string {
  const f32 = new DataView(new ArrayBuffer(4));
  f32.setFloat32(0, e, true);
  const f64 = new DataView(new ArrayBuffer(8));
  f64.setFloat64(0, f, true);
  const hex = (n: bigint | number, width: number) => n.toString(16).padStart(width, "0");
  const sLen = new TextEncoder().encode(s).length;
  const head = [...bytes.subarray(0, 32)].map((x) => hex(x, 2)).join("");
  return `i32=${a} u32=${b} i64=${c} u64=${d} f32=0x${hex(f32.getUint32(0, true), 8)} ` +
    `f64=0x${hex(f64.getBigUint64(0, true), 16)} bool=${g} string=${sLen}:"${s}" ` +
    `bytes=${bytes.length}:${head}`;
}

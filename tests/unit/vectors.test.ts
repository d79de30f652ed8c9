// The TS codec agrees with tests/vectors/wire.json, the vectors the Rust guest tests against too.
import assert from "node:assert/strict";
import {
  ABI_VERSION,
  FRAME_KIND_NAMES,
  MAX_LOG_LEVEL,
  MAX_PARAMS,
  PebOffset,
  Port,
  VALUE_TYPES,
} from "../../src/abi.ts";
import { ProtocolError } from "../../src/errors.ts";
import { decodeFrame, encodeFrame } from "../../src/wire.ts";
import vectors from "../vectors/wire.json" with { type: "json" };
import {
  buildVectors,
  frameFromJson,
  frameToJson,
  fromHex,
  type JsonFrame,
  toHex,
} from "../../tools/gen_vectors.ts";

Deno.test("wire vectors", async (t) => {
  await t.step("the file is what tools/gen_vectors.ts generates", () => {
    assert.equal(vectors.abi_version, ABI_VERSION);
    assert.deepStrictEqual(buildVectors(), vectors);
  });

  await t.step("each valid frame decodes to its JSON form and re-encodes to its bytes", () => {
    const buffer = new Uint8Array(1 << 20);
    for (const v of vectors.frames) {
      const bytes = fromHex(v.hex);
      const frame = decodeFrame(bytes);
      assert.deepStrictEqual(frameToJson(frame), v.frame, v.name);
      assert.deepStrictEqual(frame, frameFromJson(v.frame as JsonFrame), v.name);
      const size = encodeFrame(frame, buffer);
      assert.equal(toHex(buffer.subarray(0, size)), v.hex, v.name);
    }
  });

  await t.step("each malformed frame is a ProtocolError", () => {
    for (const v of vectors.malformed) {
      assert.throws(() => decodeFrame(fromHex(v.hex)), ProtocolError, v.name);
    }
  });

  await t.step("the constants section is src/abi.ts's, and docs/abi.md agrees", async () => {
    const c = vectors.constants;
    assert.equal(c.abi_version, ABI_VERSION);
    assert.deepStrictEqual(c.ports, { ...Port });
    assert.deepStrictEqual(c.ports, vectors.ports);
    assert.equal(c.limits.max_params, MAX_PARAMS);
    assert.equal(c.limits.max_log_level, MAX_LOG_LEVEL);
    assert.equal(Object.keys(c.peb_offsets).length, Object.keys(PebOffset).length);
    const doc = await Deno.readTextFile(new URL("../../docs/abi.md", import.meta.url));
    const row = (...cells: string[]) => new RegExp(`^\\|\\s*${cells.join("\\s*\\|\\s*")}`, "m");
    const hex = (n: number, width: number) =>
      `0x${n.toString(16).toUpperCase().padStart(width, "0")}`;
    for (const [name, port] of Object.entries(c.ports)) {
      assert.match(doc, row(`\`${hex(port, 4)}\``, `\`${name}\``), `docs/abi.md port ${name}`);
    }
    for (const [name, kind] of Object.entries(c.frame_kinds)) {
      assert.match(doc, row(String(kind), `\`${name}\``), `docs/abi.md frame kind ${name}`);
    }
    for (const [name, tag] of Object.entries(c.value_tags)) {
      assert.match(doc, row(String(tag), name), `docs/abi.md value tag ${name}`);
    }
    for (const [name, offset] of Object.entries(c.peb_offsets)) {
      assert.match(
        doc,
        row(hex(offset, 2), "u(32|64)", `(magic|\`${name}\`)`),
        `docs/abi.md PEB field ${name}`,
      );
    }
    assert.match(doc, new RegExp(`ABI_VERSION = ${ABI_VERSION}\``));
    assert.match(doc, new RegExp(`\`abi_version\` \\(= ${ABI_VERSION}\\)`));
  });

  await t.step("they cover every frame kind and every value type", () => {
    const kinds = new Set(vectors.frames.map((v) => v.frame.kind));
    for (const kind of FRAME_KIND_NAMES.slice(1)) assert.ok(kinds.has(kind!), kind);
    const types = new Set<string>();
    for (const v of vectors.frames) {
      const value = (v.frame as { value?: { type: string } }).value;
      if (value) types.add(value.type);
    }
    for (const type of VALUE_TYPES) assert.ok(types.has(type), type);
    assert.ok(vectors.malformed.length >= 20);
  });
});

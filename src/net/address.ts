/**
 * IP addresses for the `net` policy: parsing IPv4/IPv6 text to bytes, and the classes of
 * addresses a guest may not reach through a name (loopback, private, link-local, CGNAT, cloud
 * metadata, multicast and other reserved ranges).
 *
 * @module
 */

/** Why an address is not public; `undefined` (from {@linkcode addressClass}) means public. */
export type AddressClass =
  | "loopback"
  | "private"
  | "link-local"
  | "cgnat"
  | "metadata"
  | "unspecified"
  | "multicast"
  | "reserved";

/** The 4 bytes of a dotted-quad IPv4 address, or `undefined` when `text` is not one. */
export function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i];
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/** The 16 bytes of an IPv6 address (brackets allowed, an IPv4 tail too), or `undefined`. */
export function parseIPv6(text: string): Uint8Array | undefined {
  let t = text;
  if (t.startsWith("[") && t.endsWith("]")) t = t.slice(1, -1);
  if (t.length === 0 || t.length > 45 || t.includes("%")) return undefined;
  const words: number[] = [];
  let tail: Uint8Array | undefined;
  const lastColon = t.lastIndexOf(":");
  if (lastColon >= 0 && t.slice(lastColon + 1).includes(".")) {
    tail = parseIPv4(t.slice(lastColon + 1));
    if (!tail) return undefined;
    t = t.slice(0, lastColon + 1) + "0:0"; // placeholder words, replaced below
  }
  const halves = t.split("::");
  if (halves.length > 2) return undefined;
  const parse = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    for (const w of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(w)) return undefined;
      out.push(parseInt(w, 16));
    }
    return out;
  };
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if (!head || !rest) return undefined;
  if (halves.length === 2) {
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return undefined;
    words.push(...head, ...new Array(fill).fill(0), ...rest);
  } else {
    if (head.length !== 8) return undefined;
    words.push(...head);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i] >> 8;
    out[2 * i + 1] = words[i] & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** The bytes of an IPv4 or IPv6 address text, or `undefined` for a name. */
export function parseIP(text: string): Uint8Array | undefined {
  return parseIPv4(text) ?? parseIPv6(text);
}

/** Canonical text of address bytes (dotted quad, or RFC 5952-ish lowercase IPv6). */
export function formatIP(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[2 * i] << 8) | bytes[2 * i + 1]);
  // Longest run of zero words (length ≥ 2) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

function inV4(b: Uint8Array, net: [number, number, number, number], bits: number): boolean {
  for (let i = 0; i < 4; i++) {
    const take = Math.max(0, Math.min(8, bits - 8 * i));
    if (take === 0) return true;
    const mask = (0xff << (8 - take)) & 0xff;
    if ((b[i] & mask) !== (net[i] & mask)) return false;
  }
  return true;
}

function classV4(b: Uint8Array): AddressClass | undefined {
  if (b[0] === 169 && b[1] === 254 && b[2] === 169 && b[3] === 254) return "metadata";
  if (inV4(b, [0, 0, 0, 0], 8)) return "unspecified";
  if (inV4(b, [127, 0, 0, 0], 8)) return "loopback";
  if (inV4(b, [10, 0, 0, 0], 8)) return "private";
  if (inV4(b, [172, 16, 0, 0], 12)) return "private";
  if (inV4(b, [192, 168, 0, 0], 16)) return "private";
  if (inV4(b, [100, 64, 0, 0], 10)) return "cgnat";
  if (inV4(b, [169, 254, 0, 0], 16)) return "link-local";
  if (inV4(b, [224, 0, 0, 0], 4)) return "multicast";
  if (
    inV4(b, [192, 0, 0, 0], 24) || inV4(b, [192, 0, 2, 0], 24) ||
    inV4(b, [198, 18, 0, 0], 15) || inV4(b, [198, 51, 100, 0], 24) ||
    inV4(b, [203, 0, 113, 0], 24) || inV4(b, [240, 0, 0, 0], 4) || inV4(b, [192, 88, 99, 0], 24)
  ) return "reserved";
  return undefined;
}

/**
 * Why `bytes` (4 or 16) may not be reached through a name, or `undefined` for a public address.
 * IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`, compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
 * is judged by its IPv4 address.
 */
export function addressClass(bytes: Uint8Array): AddressClass | undefined {
  if (bytes.length === 4) return classV4(bytes);
  const w = (i: number) => (bytes[2 * i] << 8) | bytes[2 * i + 1];
  const zeros = (from: number, to: number) => {
    for (let i = from; i < to; i++) if (w(i) !== 0) return false;
    return true;
  };
  if (zeros(0, 8)) return "unspecified";
  if (zeros(0, 7) && w(7) === 1) return "loopback";
  // fd00:ec2::254, AWS's IPv6 metadata address (inside fc00::/7 anyway).
  if (w(0) === 0xfd00 && w(1) === 0x0ec2 && zeros(2, 7) && w(7) === 0x254) return "metadata";
  if (zeros(0, 5) && (w(5) === 0xffff || w(5) === 0)) {
    return classV4(bytes.subarray(12)) ?? "reserved";
  }
  if (w(0) === 0x64 && w(1) === 0xff9b && zeros(2, 6)) return classV4(bytes.subarray(12));
  if (w(0) === 0x2002) return classV4(bytes.subarray(2, 6));
  if ((bytes[0] & 0xfe) === 0xfc) return "private";
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0x80) return "link-local";
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0xc0) return "private"; // site-local (deprecated)
  if (bytes[0] === 0xff) return "multicast";
  if (w(0) === 0x2001 && w(1) === 0x0db8) return "reserved"; // documentation
  if (w(0) === 0x0100 && zeros(1, 4)) return "reserved"; // discard-only
  if (w(0) === 0x2001 && w(1) === 0) return "reserved"; // Teredo (tunnels to an IPv4 address)
  return undefined;
}

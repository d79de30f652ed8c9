/**
 * Snapshots baked on disk for `hl serve` routes (docs/serve.md, "Baked snapshots"): `hl serve
 * --bake` starts each route that names a `snapshot` file once, cold, and saves its snapshot
 * there (the library's snapshot files, `snapshot.save(path)`), beside a key file
 * `<snapshot>.key` holding the SHA-256 of what shaped it (the module, script or guest bytes and
 * the route's options that go into the snapshot). A server then starts such a route from the
 * file instead of compiling and initialising. A file that is missing, whose key does not match
 * the route as configured now (a changed script), or that the library refuses (another library
 * version or CPU: `SnapshotFormatError`) is skipped with a log line and the route starts cold:
 * a baked snapshot can make a start faster, never wrong.
 *
 * @module
 */

/** What a route is started from, for the key: its code bytes and the options in its snapshot. */
export interface RouteIdentity {
  /** The module, script or guest bytes. */
  code: Uint8Array;
  /** The options that shape the snapshot (engine, limits, ...), as JSON-able values. */
  options: Record<string, unknown>;
}

/** The key of `identity`: hex SHA-256 of the code's SHA-256 and the options' canonical JSON. */
export async function routeKey(kind: string, identity: RouteIdentity): Promise<string> {
  const hex = (b: ArrayBuffer) =>
    [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
  const code = hex(await crypto.subtle.digest("SHA-256", new Uint8Array(identity.code)));
  const options = Object.keys(identity.options).sort().map((k) => [k, identity.options[k] ?? null]);
  const text = JSON.stringify({ v: 1, kind, code, options });
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** A log sink taking one event object. */
export type EventLog = (event: Record<string, unknown>) => void;

/**
 * Loads the route's baked snapshot when its key matches; `undefined` (and one log event saying
 * why) when there is none or it cannot be used.
 */
export async function loadBaked<S>(
  route: string,
  path: string,
  key: string,
  load: (path: string) => Promise<S>,
  log: EventLog,
): Promise<S | undefined> {
  let stored: string;
  try {
    stored = (await Deno.readTextFile(`${path}.key`)).trim();
  } catch {
    log({ event: "snapshot_skipped", route, path, reason: "no snapshot or key file" });
    return undefined;
  }
  if (stored !== key) {
    log({ event: "snapshot_skipped", route, path, reason: "stale: the route changed since" });
    return undefined;
  }
  try {
    const snap = await load(path);
    log({ event: "snapshot_loaded", route, path });
    return snap;
  } catch (e) {
    const reason = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    log({ event: "snapshot_skipped", route, path, reason });
    return undefined;
  }
}

/** Saves `snap` to `path` and its key beside it (the key last: a half-written pair never loads). */
export async function saveBaked(
  snap: { save(path: string): Promise<void> },
  path: string,
  key: string,
): Promise<void> {
  await Deno.remove(`${path}.key`).catch(() => {});
  await snap.save(path);
  await Deno.writeTextFile(`${path}.key`, `${key}\n`);
}

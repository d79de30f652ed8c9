/**
 * `hl serve --config <file.json>`: the HTTP function host (docs/serve.md). Listens until SIGTERM
 * or SIGINT, then drains: stops accepting, finishes the requests in flight, disposes the
 * sandboxes and exits 0.
 *
 * @module
 */

import { bakeServeSnapshots, serve as startServer } from "../serve/server.ts";
import { loadServeConfig } from "../serve/config.ts";
import { CliError, EXIT_USAGE, intOption, splitArgs, usage } from "./common.ts";

/** `hl serve --help`. */
export const SERVE_HELP = `Usage: hl serve --config <file.json> [options]

Serves HTTP requests with sandboxed functions: each route of the config maps a
path to a WASI command (WAGI), a Wasm export, a JavaScript function or a native
guest function, run in KVM micro-VMs (docs/serve.md has the config reference).

Options:
  --config FILE      the JSON config (required; relative paths in it are
                     relative to its folder)
  --port N           port to listen on (overrides the config; 0: any)
  --hostname H       address to listen on (overrides the config)
  --check            check the config and exit (0 when valid)
  --bake             save the snapshot of every route that names a "snapshot"
                     file there (started once, cold), then exit; a server
                     started later starts those routes from the files
  -h, --help         show this help

Endpoints beside the routes: /healthz, /readyz (200 once every route is warm),
/metrics (Prometheus text). SIGTERM or SIGINT drains: /readyz answers 503, after
the config's drainDelayMs no new connections, the requests in flight finish,
then exit 0. One JSON access-log line per request on
stdout.

Exit codes: 0 after a drain; 2 usage error or invalid config; 1 a route could not
start or any other failure (one line on stderr).`;

const SPECS = {
  config: { type: "string" },
  port: { type: "string" },
  hostname: { type: "string" },
  check: { type: "boolean" },
  bake: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** Runs `hl serve`; resolves the exit code once the server has drained. */
export async function serve(argv: readonly string[]): Promise<number> {
  const { values, rest } = splitArgs("serve", argv, SPECS, 0);
  if (values.help) {
    console.log(SERVE_HELP);
    return 0;
  }
  if (rest.length > 0) throw usage("serve", `unexpected operand "${rest[0]}"`);
  const path = values.config;
  if (typeof path !== "string") throw usage("serve", "--config FILE is required");
  const port = intOption("serve", "port", values.port);
  if (port !== undefined && port > 65535) throw usage("serve", "--port must be at most 65535");
  let config;
  try {
    config = await loadServeConfig(path);
  } catch (e) {
    throw new CliError(`${path}: ${(e as Error).message}`, EXIT_USAGE);
  }
  if (values.check) {
    console.log(`${path}: ${config.routes.length} routes, valid`);
    return 0;
  }
  if (values.bake) {
    await bakeServeSnapshots(config);
    return 0;
  }
  const server = await startServer(config, {
    port,
    hostname: values.hostname as string | undefined,
  });
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  const onSignal = () => void server.drain();
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  console.log(JSON.stringify({
    time: new Date().toISOString(),
    event: "listening",
    hostname: server.addr.hostname,
    port: server.addr.port,
  }));
  let failed: unknown;
  server.ready.catch(async (e) => {
    failed = e;
    await server.drain();
  });
  await server.finished;
  for (const s of signals) Deno.removeSignalListener(s, onSignal);
  if (failed !== undefined) throw failed;
  return 0;
}

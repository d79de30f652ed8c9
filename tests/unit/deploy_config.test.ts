// The serve config the image carries and the kustomize base mounts (deploy/k8s/base/config/) is a
// valid `hl serve` config whose files are all in the ConfigMap, and its route snapshots are where
// the image bakes them (docs/deploy.md). The Kubernetes side is deploy/validate's (go test).
import assert from "node:assert/strict";
import { loadServeConfig, ServeConfigError } from "../../src/serve/config.ts";

const BASE = new URL("../../deploy/k8s/base/", import.meta.url);
const CONFIG = new URL("config/serve.json", BASE);
const SNAPSHOTS = "/var/lib/hl/snapshots/";

/** The file names the base's configMapGenerator lists (`- config/<name>` lines). */
function generatorFiles(kustomization: string): string[] {
  return [...kustomization.matchAll(/^\s+- config\/(\S+)\s*$/gm)].map((m) => m[1]);
}

Deno.test("deploy config: a valid serve config, every file in the ConfigMap, snapshots baked", async () => {
  const config = await loadServeConfig(CONFIG.pathname);
  assert.ok(config.routes.length > 0);
  const dir = new URL("config/", BASE).pathname;
  const inConfigMap = generatorFiles(await Deno.readTextFile(new URL("kustomization.yaml", BASE)));
  const onDisk = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.deepEqual([...inConfigMap].sort(), onDisk, "configMapGenerator lists exactly config/");
  for (const route of config.routes) {
    if (route.kind === "js") {
      assert.ok(
        route.source.startsWith(dir),
        `${route.path}: ${route.source} is beside the config`,
      );
      assert.ok(inConfigMap.includes(route.source.slice(dir.length)), `${route.source} in the map`);
    }
    if ("snapshot" in route && route.snapshot !== undefined) {
      assert.ok(route.snapshot.startsWith(SNAPSHOTS), `${route.path}: snapshot under ${SNAPSHOTS}`);
    }
  }
  assert.ok(config.routes.some((r) => "snapshot" in r && r.snapshot), "a route is baked");
});

Deno.test("deploy config: the same file with an unknown field is refused", async () => {
  const raw = JSON.parse(await Deno.readTextFile(CONFIG));
  raw.routes[0].snapshotPath = raw.routes[0].snapshot;
  const tmp = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${tmp}/serve.json`, JSON.stringify(raw));
    await assert.rejects(loadServeConfig(`${tmp}/serve.json`), ServeConfigError);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

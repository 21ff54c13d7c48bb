// The discovery cache on HTTP alone: what the web frontend reads at start and in its panels is answered
// with no pod running, as the pod answered it, and survives a gateway restart (test/browser covers the UI).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { FRONTEND_FIXTURE, startStandIn, type StandIn } from "./standin";
import { get, startGateway, tmpDir, until } from "./helpers";

describe("gateway discovery cache: the frontend's read-only routes with no pod", function () {
  this.timeout(120_000);
  const root = tmpDir("gw-discovery-");
  let pod: StandIn | undefined;
  let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
  const MODELS = { checkpoints: ["a.safetensors", "b.ckpt"], loras: ["l.safetensors"] };
  // What the frontend reads besides its files (frontend 1.27.10 api.ts), bare or under /api as it asks.
  const ROUTES = [
    "/api/object_info", "/api/embeddings", "/api/extensions", "/api/system_stats", "/api/i18n", "/api/workflow_templates",
    "/api/experiment/models", "/api/experiment/models/checkpoints", "/api/experiment/models/loras", "/models/checkpoints",
    "/internal/folder_paths", "/templates/index.json", "/templates/default.json",
  ];
  const pods = async () => (await get(gw!.adminUrl, "/gateway/pods")).json.ready as number;
  const fromPod: Record<string, { status: number; buf: Buffer }> = {};

  before(async () => {
    pod = await startStandIn({ frontendRoot: FRONTEND_FIXTURE, dataDir: path.join(root, "pod"), models: MODELS });
    for (const r of ROUTES) fromPod[r] = await get(pod.url, r);
    gw = await startGateway([pod.url], [], path.join(root, "gateway"));
    await until(async () => (await pods()) === 1);
    await gw.gateway.services.discovery.settled();
    await pod.close();
    pod = undefined;
    await until(async () => (await pods()) === 0);
  });
  after(async () => {
    await gw?.close();
    await pod?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const experimentJson = (b: Buffer) => (JSON.parse(b.toString("utf8")) as { name: string; pathIndex: number; size: number }[]).map(({ name, pathIndex, size }) => ({ name, pathIndex, size }));

  it("answers every route as the pod did, and the frontend's files byte for byte with their types", async () => {
    for (const r of ROUTES) {
      const g = await get(gw!.url, r);
      assert.equal(g.status, 200, r);
      assert.equal(fromPod[r].status, 200, r);
      if (r === "/api/extensions") assert.deepEqual(g.json.filter((e: string) => !e.startsWith("/extensions/comfyui-gateway/")), JSON.parse(fromPod[r].buf.toString("utf8")), r);
      else if (r === "/api/system_stats") assert.equal(g.json.system.comfyui_version, "0.3.64");
      else assert.deepEqual(g.json, JSON.parse(fromPod[r].buf.toString("utf8")), r);
    }
    assert.deepEqual(experimentJson((await get(gw!.url, "/api/experiment/models/checkpoints")).buf), [{ name: "a.safetensors", pathIndex: 0, size: 0 }, { name: "b.ckpt", pathIndex: 0, size: 0 }]);
    const assets = fs.readdirSync(path.join(FRONTEND_FIXTURE, "assets"));
    for (const f of ["index.html", `assets/${assets.find((a) => a.endsWith(".css"))}`, "assets/lib/primevue/index.mjs", `assets/${assets.find((a) => a.endsWith(".woff2"))}`]) {
      const r = await fetch(`${gw!.url}/${f === "index.html" ? "" : f}`);
      assert.equal(r.status, 200, f);
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), fs.readFileSync(path.join(FRONTEND_FIXTURE, f)), f);
      if (f.endsWith(".mjs")) assert.equal(r.headers.get("content-type"), "text/javascript", "a module script must stay JavaScript");
    }
    const index = await fetch(`${gw!.url}/templates/index.json`);
    assert.match(index.headers.get("content-type") ?? "", /application\/json/, "the frontend keeps the templates index only as JSON");
    assert.equal((await get(gw!.url, "/templates/default-1.webp")).status, 200);
  });

  it("answers ComfyUI's 404s: unknown model folder, a model without metadata, a missing file", async () => {
    assert.equal((await get(gw!.url, "/api/experiment/models/nope")).status, 404);
    assert.equal((await get(gw!.url, "/models/nope")).status, 404);
    assert.equal((await get(gw!.url, "/api/view_metadata/checkpoints?filename=a.safetensors")).status, 404);
    assert.equal((await get(gw!.url, "/assets/not-a-file.js")).status, 404);
  });

  it("keeps a static answer per query string", async () => {
    // The crawl stored /templates/index.json without a query; the same path with one was never read.
    assert.equal((await get(gw!.url, "/templates/index.json")).status, 200);
    assert.equal((await get(gw!.url, "/templates/index.json?v=2")).status, 404);
  });

  it("serves the same after a gateway restart on the same data, still with no pod", async () => {
    await gw!.close();
    gw = await startGateway(["http://127.0.0.1:9"], [], path.join(root, "gateway"));
    assert.equal(await pods(), 0);
    for (const r of ["/api/i18n", "/api/experiment/models/loras", "/internal/folder_paths", "/templates/index.json", "/"]) assert.equal((await get(gw.url, r)).status, 200, r);
    assert.deepEqual(experimentJson((await get(gw.url, "/api/experiment/models/loras")).buf).map((m) => m.name), ["l.safetensors"]);
  });
});

/**
 * Issue 19's last two pieces on the gateway's side: the model cache's figures in the leader's minute snapshot
 * (the agents' counters as differences between reads, a restart taken as a restart; model loads avoided at
 * placement), and the pods' deletion cost with a cache part (scale-in removes, among pods of equal load, the one
 * whose node holds least of what waiting prompts need). Unit tests of the bookkeeping, then one gateway over two
 * stand-ins whose model agents are fakes the test steers (their counters, what their nodes hold).
 */
import { strict as assert } from "node:assert";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { AgentMetrics } from "../../contracts/modelsAgent";
import { loadConfig } from "../../workload/gateway/config";
import { startLocal, type Running } from "../../workload/gateway/main";
import { CacheStats, FIRST_ROUND_MS, FORGET_AGENT_MS } from "../../workload/gateway/models/cacheStats";
import { cacheParts, deletionCost, DeletionCosts } from "../../workload/gateway/models/deletionCost";
import type { ModelRouter } from "../../workload/gateway/models/routing";
import { NO_METRICS } from "../../workload/gateway/telemetry";
import { parseEmfLine } from "../observability/emfParse";
import { startStandIn, type StandIn } from "./standin";
import { get, post, quiet, t2i, tmpDir, until } from "./helpers";

const counters = (fetches: number, fetchesFailed: number, bytesFetched: number, hits: number, misses: number, evictions: number): AgentMetrics =>
  ({ fetches, fetchesCompleted: fetches - fetchesFailed, fetchesFailed, bytesFetched, hits, misses, evictions, evictedBytes: evictions * 10, applied: 0, appliedChanges: 0 });
const NONE = { fetches: 0, fetchesFailed: 0, bytesFetched: 0, hits: 0, misses: 0, evictions: 0, loadsAvoided: 0 };

describe("model cache figures: the agents' counters as differences between reads", () => {
  const T0 = 1_800_000_000_000;
  const late = T0 + FIRST_ROUND_MS + 1;

  it("sums what each agent counted since the previous read over the agents, and starts again from zero after each take", () => {
    const s = new CacheStats(T0);
    s.observe("http://a", counters(10, 1, 5000, 20, 10, 4), T0 + 1000);
    s.observe("http://b", counters(7, 0, 900, 3, 7, 0), T0 + 1000);
    assert.deepEqual(s.take(T0 + 1500), NONE, "what the agents counted before this leadership was reported by the one before");
    s.observe("http://a", counters(13, 2, 8000, 25, 13, 5), T0 + 3000);
    s.observe("http://b", counters(8, 0, 1900, 3, 8, 0), T0 + 3000);
    s.observe("http://a", counters(14, 2, 9000, 27, 14, 5), T0 + 5000);
    s.loadAvoided();
    s.loadAvoided();
    assert.deepEqual(s.take(T0 + 6000), { fetches: 5, fetchesFailed: 1, bytesFetched: 5000, hits: 7, misses: 5, evictions: 1, loadsAvoided: 2 });
    assert.deepEqual(s.take(T0 + 7000), NONE, "taken once");
    s.observe("http://a", counters(14, 2, 9000, 27, 14, 5), T0 + 8000);
    assert.deepEqual(s.take(T0 + 9000), NONE, "an unchanged read adds nothing");
  });

  it("a counter that went down is a restart: what the agent counted since is new, never a negative difference", () => {
    const s = new CacheStats(T0);
    s.observe("http://a", counters(10, 1, 5000, 20, 10, 4), T0 + 1000);
    // The restarted agent has already passed its old hit count: still a restart (its fetches went down), not +2 hits.
    s.observe("http://a", counters(2, 0, 700, 22, 1, 0), T0 + 3000);
    assert.deepEqual(s.take(T0 + 4000), { fetches: 2, fetchesFailed: 0, bytesFetched: 700, hits: 22, misses: 1, evictions: 0, loadsAvoided: 0 });
    s.observe("http://a", counters(3, 0, 800, 22, 2, 0), T0 + 5000);
    assert.deepEqual(s.take(T0 + 6000), { fetches: 1, fetchesFailed: 0, bytesFetched: 100, hits: 0, misses: 1, evictions: 0, loadsAvoided: 0 }, "then differences again");
  });

  it("an agent first read after the first round started since this leadership: everything it counted is new (its prefetches included)", () => {
    const s = new CacheStats(T0);
    s.observe("http://new-node", counters(3, 0, 6.9e9, 0, 3, 0), late);
    assert.deepEqual(s.take(late + 1), { fetches: 3, fetchesFailed: 0, bytesFetched: 6.9e9, hits: 0, misses: 3, evictions: 0, loadsAvoided: 0 });
  });

  it("a read that started before the one taken last is dropped when it answers late, not taken for a restart", () => {
    const s = new CacheStats(T0);
    s.observe("http://a", counters(10, 0, 1000, 10, 10, 0), T0 + 1000);
    // Two pods on one node read its agent; the later read answers first.
    s.observe("http://a", counters(12, 0, 1200, 11, 12, 0), T0 + 2001);
    s.observe("http://a", counters(11, 0, 1100, 10, 11, 0), T0 + 2000);
    s.observe("http://a", counters(11, 0, 1100, 10, 11, 0), T0 + 2001);
    assert.deepEqual(s.take(T0 + 3000), { fetches: 2, fetchesFailed: 0, bytesFetched: 200, hits: 1, misses: 2, evictions: 0, loadsAvoided: 0 });
  });

  it("an answer without the counters is ignored (neither counted nor a baseline); an agent not read for hours is forgotten", () => {
    const s = new CacheStats(T0);
    s.observe("http://a", undefined, T0 + 1000);
    s.observe("http://a", { ...counters(1, 0, 1, 1, 1, 1), hits: Number.NaN }, T0 + 1100);
    s.observe("http://a", { ...counters(1, 0, 1, 1, 1, 1), misses: -1 }, T0 + 1200);
    assert.deepEqual(s.take(T0 + 1300), NONE);
    s.observe("http://a", counters(5, 0, 50, 5, 5, 0), late);
    assert.deepEqual(s.take(late + 1), { fetches: 5, fetchesFailed: 0, bytesFetched: 50, hits: 5, misses: 5, evictions: 0, loadsAvoided: 0 }, "the first good read, after the first round");
    s.observe("http://a", counters(6, 0, 60, 5, 6, 0), late + 1000);
    s.take(late + 1000 + FORGET_AGENT_MS + 1);
    s.observe("http://a", counters(6, 0, 60, 5, 6, 0), late + 1000 + FORGET_AGENT_MS + 2);
    assert.equal(s.take(late + 1000 + FORGET_AGENT_MS + 3).fetches, 6, "forgotten: read again, it is an agent first read after the first round");
  });
});

describe("pod-deletion-cost: 1000 per prompt in the pod's queue plus a cache part", () => {
  it("the load dominates; the cache part stays within 0-999", () => {
    assert.equal(deletionCost(0, 0), 0);
    assert.equal(deletionCost(1, 0), 1000);
    assert.equal(deletionCost(2, 999), 2999);
    assert.equal(deletionCost(1, 5000), 1999, "clamped below one prompt's worth");
    assert.equal(deletionCost(0, -3), 0);
    assert.ok(deletionCost(0, 999) < deletionCost(1, 0), "an idle pod goes before a busy one whatever its cache");
  });

  it("the cache part: the node's bytes for waiting prompts as a share of the largest, in ten levels; 0 with nothing waiting", () => {
    const parts = cacheParts([
      { pod: "a", bytesForWaiting: 6e9 },
      { pod: "b", bytesForWaiting: 3e9 },
      { pod: "c", bytesForWaiting: 0 },
      { pod: "d", bytesForWaiting: 5.5e9 },
      { pod: "e", bytesForWaiting: 5.9e9 },
    ]);
    assert.deepEqual(Object.fromEntries(parts), { a: 999, b: 555, c: 0, d: 888, e: 999 }, "e is within a ninth of a: tied, the ReplicaSet's order decides");
    assert.deepEqual(Object.fromEntries(cacheParts([{ pod: "a", bytesForWaiting: 0 }, { pod: "b", bytesForWaiting: 0 }])), { a: 0, b: 0 });
    assert.equal(cacheParts([]).size, 0);
  });

  it("each pod's cost goes out when it changes only: loads at once, cache parts at a refresh; gone pods are forgotten; a new leadership writes every pod once", () => {
    const out: string[] = [];
    const costs = new DeletionCosts((pod, cost) => void out.push(`${pod}=${cost}`));
    costs.load("a", 1);
    costs.load("a", 1);
    costs.load("b", 0);
    assert.deepEqual(out.splice(0), ["a=1000", "b=0"]);
    costs.refresh(["a", "b", "c"], new Map([["a", 555], ["b", 999]]));
    assert.deepEqual(out.splice(0), ["a=1555", "b=999", "c=0"]);
    costs.refresh(["a", "b", "c"], new Map([["a", 555], ["b", 999]]));
    costs.load("b", 0);
    assert.deepEqual(out.splice(0), [], "nothing changed, nothing sent");
    costs.load("b", 2);
    assert.deepEqual(out.splice(0), ["b=2999"], "a load change at once, with the cache part it has");
    costs.refresh(["a", "c"], new Map([["a", 555], ["b", 999]]));
    assert.deepEqual(out.splice(0), [], "b left; its part is dropped with it");
    assert.equal(costs.current("b"), undefined);
    costs.refresh(["a", "b", "c"], new Map());
    assert.deepEqual(out.splice(0), ["a=1000", "b=0"], "b is back with load 0 (a new worker starts empty)");
    const next = new DeletionCosts((pod, cost) => void out.push(`${pod}=${cost}`));
    next.refresh(["a", "b"], new Map());
    assert.deepEqual(out.splice(0), ["a=0", "b=0"]);
  });
});

// ---- one gateway, two stand-ins, two fake model agents ------------------------------------------------------------

const V15 = "checkpoints/v1-5-pruned-emaonly.safetensors";
const SDXL = "checkpoints/sd_xl_base_1.0.safetensors";
const LIBRARY: Record<string, number> = { [V15]: 2.1e9, [SDXL]: 6.9e9 };

interface FakeAgent { url: string; files: Map<string, number>; metrics: AgentMetrics; reads: number; close(): Promise<void> }

/** A model agent that answers the inventory from what the test sets, and ensures by noting the files as present. */
async function fakeAgent(files: string[], metrics: AgentMetrics): Promise<FakeAgent> {
  const a = { files: new Map(files.map((f) => [f, LIBRARY[f]])), metrics, reads: 0 } as FakeAgent;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const json = (code: number, body: unknown): void => void res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "GET" && req.url === "/v1/inventory") {
        a.reads++;
        const list = [...a.files].map(([path, bytes]) => ({ path, bytes, verified: "size", pinned: false, held: false, lastUsed: 0 }));
        return json(200, { files: list, usedBytes: list.reduce((s, f) => s + f.bytes, 0), quotaBytes: 1e12, capacityBytes: 1e12, freeBytes: 1e12, fetching: [], pins: [], holds: [], metrics: a.metrics });
      }
      if (req.method === "POST" && req.url === "/v1/ensure") {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { files: string[] };
        for (const f of body.files) a.files.set(f, LIBRARY[f]);
        return json(200, { files: body.files.map((path) => ({ path, status: "present", bytes: LIBRARY[path] })) });
      }
      if (req.url?.startsWith("/v1/holds/")) return json(200, {});
      return json(404, { error: { code: "bad_request", message: "not here", retryable: false } });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  a.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  a.close = () => new Promise<void>((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });
  return a;
}

describe("gateway: the model cache on the dashboard and in the deletion cost (fake agents)", function () {
  this.timeout(120_000);
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const standIns: StandIn[] = [];
  const agents: FakeAgent[] = [];
  let g: Running | undefined;

  after(async () => {
    release();
    await g?.close();
    for (const s of standIns) await s.close();
    for (const a of agents) await a.close();
  });

  it("the snapshot carries the agents' counter differences and the loads avoided; the pod whose node holds what waits costs more to delete", async () => {
    // Every prompt holds its pod until the test lets it go: placements stay where the router put them.
    for (let i = 0; i < 2; i++) standIns.push(await startStandIn({ stepMs: 1, beforeStep: () => gate }));
    // Node a holds the SDXL checkpoint; node b nothing. Both agents have counted before this gateway leads.
    agents.push(await fakeAgent([SDXL], counters(10, 1, 5e9, 20, 10, 4)));
    agents.push(await fakeAgent([], counters(7, 2, 9e9, 30, 7, 3)));
    const lines: object[] = [];
    const costs: { pod: string; cost: number }[] = [];
    const argv = ["--port", "0", "--data-dir", tmpDir("gw-cache-"), "--models-bucket", "models", "--model-affinity", "0"];
    for (let i = 0; i < 2; i++) argv.push("--comfyui", standIns[i].url, "--models-agent", agents[i].url);
    g = await startLocal(loadConfig(argv, { AWS_REGION: "us-east-1", GATEWAY_METRICS_SECONDS: "1" }), quiet, {
      modelsLister: { list: async () => Object.entries(LIBRARY).map(([key, bytes]) => ({ key, bytes, modified: 0 })) },
      metrics: { ...NO_METRICS, put: (d) => void lines.push(d) },
      onPodCost: (pod, cost) => void costs.push({ pod, cost }),
    });
    const gw = g;
    const router = (gw.gateway.services.dispatcher as unknown as { o: { models: { router: ModelRouter } } }).o.models.router;
    const sum = (name: string) => lines.map((l) => JSON.stringify(l)).flatMap((m) => parseEmfLine(m)).filter((m) => m.name === name).reduce((s, m) => s + m.values.reduce((a, b) => a + b, 0), 0);
    const snapshots = () => lines.filter((l) => JSON.stringify(l).includes('"GpuPodsReady"')).length;

    // The first reads are the baseline; then a's agent counts on, b's restarts (its counters start again).
    await until(async () => agents.every((a) => a.reads >= 2), 30_000);
    agents[0].metrics = counters(13, 2, 5e9 + 3000, 25, 13, 5);
    agents[1].metrics = counters(2, 0, 1000, 1, 2, 0);
    const want = { ModelFetches: 5, ModelFetchesFailed: 1, ModelBytesFetched: 4000, ModelCacheHits: 6, ModelCacheMisses: 5, ModelEvictions: 1 };
    const got = () => Object.fromEntries(Object.keys(want).map((n) => [n, sum(n)]));
    await until(async () => JSON.stringify(got()) === JSON.stringify(want) && agents.every((a) => a.reads >= 4), 30_000);
    const seen = snapshots();
    await until(async () => snapshots() >= seen + 2, 30_000);
    assert.deepEqual(got(), want, "later reads of unchanged counters add nothing");
    assert.equal(sum("ModelLoadsAvoided"), 0);

    // Four prompts of one checkpoint over two pods of two slots: the second on each pod finds it loaded.
    await router.refreshInputs();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await post(gw.url, "/prompt", { prompt: t2i(500 + i, "v1-5-pruned-emaonly.safetensors"), client_id: "cache" });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.prompt_id);
    }
    await until(async () => sum("ModelLoadsAvoided") === 2, 30_000);
    const pods = [...gw.gateway.services.dispatcher!.workers.values()];
    assert.deepEqual(pods.map((w) => w.load), [2, 2]);

    // Two SDXL prompts wait (no free slot): a's node holds their checkpoint, b's does not.
    for (let i = 0; i < 2; i++) {
      const r = await post(gw.url, "/prompt", { prompt: t2i(600 + i, "sd_xl_base_1.0.safetensors"), client_id: "cache" });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.prompt_id);
    }
    const podA = standIns[0].url;
    const podB = standIns[1].url;
    const last = (pod: string) => costs.filter((c) => c.pod === pod).at(-1)?.cost;
    await until(async () => last(podA) === 2999 && last(podB) === 2000, 30_000);
    const view = (await get(gw.adminUrl, "/gateway/pods")).json;
    assert.deepEqual(view.scaleIn.map((h: { pod: string; bytesForWaiting: number; deletionCost: number }) => [h.pod, h.bytesForWaiting, h.deletionCost]), [[podB, 0, 2000], [podA, 6.9e9, 2999]]);

    release();
    for (const id of ids) {
      const status = await until(async () => (await get(gw.url, `/history/${id}`)).json[id]?.status?.status_str as string | undefined, 60_000);
      assert.equal(status, "success");
    }
    // Nothing open: the loads and the cache parts go back to 0.
    await until(async () => last(podA) === 0 && last(podB) === 0, 30_000);
    for (const pod of [podA, podB]) {
      const seq = costs.filter((c) => c.pod === pod).map((c) => c.cost);
      assert.ok(seq.every((c, i) => i === 0 || c !== seq[i - 1]), `${pod} patched only on a change: ${seq.join(" ")}`);
    }
    assert.equal(sum("ModelFetches"), 5, "still counted once");
  });
});

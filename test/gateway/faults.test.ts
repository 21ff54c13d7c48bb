// The gateway's fault paths (issue 16, points 7–11), each reproduced with the gateway in local mode in
// front of stand-ins: a hung pod, a claim another writer won, a replica that loses the lead with clients
// connected, an output copy that fails, a buffered prompt that is cancelled.
import { strict as assert } from "node:assert";
import * as http from "node:http";
import { buildApp } from "../../workload/gateway/app";
import { loadConfig } from "../../workload/gateway/config";
import { LocalObjectStore, MemoryStore, PrefixedStore, type ObjectStore } from "../../workload/gateway/store";
import { get, openWs, post, quiet, startGateway, t2i, tmpDir, until } from "./helpers";
import { startStandIn } from "./standin";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("gateway fault paths", function () {
  this.timeout(60000);
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
  });
  const standIn = async (o: Parameters<typeof startStandIn>[0]) => {
    const s = await startStandIn(o);
    cleanup.push(() => s.close());
    return s;
  };

  it("a hung pod (socket and HTTP up, no progress): its running and buffered prompts run elsewhere within the stall time + 10 s, and it gets no work until it answers again", async () => {
    const hung = await standIn({ stepMs: 20, fault: { kind: "hang", afterSteps: 2 } });
    const ok = await standIn({ stepMs: 5 });
    const gw = await startGateway([hung.url], ["--stall-seconds", "1.5"]);
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
    const p1 = (await post(gw.url, "/prompt", { prompt: t2i(1, undefined, 20) })).json.prompt_id;
    const p2 = (await post(gw.url, "/prompt", { prompt: t2i(2, undefined, 20) })).json.prompt_id;
    await until(async () => hung.executed().includes(p1));
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.pods[0].prompts.length === 2);
    const hungAt = Date.now();
    gw.gateway.setPods([hung.url, ok.url].map((url) => ({ key: url, url, ready: true, terminating: false })));
    for (const id of [p1, p2]) {
      const e = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
      assert.equal(e.status.status_str, "success", id);
    }
    assert.ok(Date.now() - hungAt < 1500 + 10000, `both ran elsewhere ${Date.now() - hungAt} ms after the pod hung`);
    assert.deepEqual(hung.executed(), [p1], "the buffered prompt was taken off the hung pod before it started");
    assert.deepEqual(ok.executed().sort(), [p1, p2].sort());
    const pods = (await get(gw.adminUrl, "/gateway/pods")).json;
    const h = pods.pods.find((p: { pod: string }) => p.pod === hung.url);
    assert.match(h.suspect, /no progress/);
    assert.equal(h.ready, false);
    // While it is hung, nothing more goes there.
    const more = [];
    for (let i = 0; i < 4; i++) more.push((await post(gw.url, "/prompt", { prompt: t2i(10 + i) })).json.prompt_id);
    for (const id of more) await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
    assert.deepEqual(hung.executed(), [p1], "no new prompt was placed on the hung pod");
    // It answers again (its stuck prompt gave up): back in rotation.
    hung.recover();
    hung.setFault(undefined);
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.pods.find((p: { pod: string }) => p.pod === hung.url).ready, 10000);
    const late = [];
    for (let i = 0; i < 4; i++) late.push((await post(gw.url, "/prompt", { prompt: t2i(20 + i) })).json.prompt_id);
    for (const id of late) await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
    assert.ok(hung.executed().length > 1, "it gets work again");
  });

  it("a claim another writer won, for a pod this leader holds, is adopted there — not run again elsewhere after the orphan window", async () => {
    const a = await standIn({ stepMs: 30 });
    const b = await standIn({ stepMs: 5 });
    const gw = await startGateway([a.url, b.url], ["--orphan-seconds", "0.5"]);
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
    const store = gw.gateway.services.store;
    // Another writer (a leader that has not noticed it lost) claims the prompt first and submits it to pod a.
    const claim = store.claim.bind(store);
    let raced = false;
    store.claim = async (id, attempt, pod, podClient, now, fence) => {
      if (!raced) {
        raced = true;
        const r = (await claim(id, attempt, a.url, "gateway-other-writer", now, fence))!;
        await fetch(a.url + "/prompt", { method: "POST", body: JSON.stringify({ prompt: r.prompt, client_id: "gateway-other-writer", prompt_id: id }) });
      }
      return claim(id, attempt, pod, podClient, now, fence);
    };
    const sock = await openWs(gw.url, "artist");
    cleanup.push(() => sock.close());
    const id = (await post(gw.url, "/prompt", { prompt: t2i(5, undefined, 40), client_id: "artist" })).json.prompt_id;
    const e = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
    assert.equal(e.status.status_str, "success");
    await sleep(1000); // past the orphan window
    assert.deepEqual([...a.executed(), ...b.executed()].filter((x) => x === id), [id], "ran once, on the pod the other writer chose");
    assert.ok(sock.messages.some((m) => m.type === "progress" && m.data.prompt_id === id), "its events reached the client (heard under the other writer's client id)");
  });

  it("a replica that loses the lead keeps its clients: the new leader's events reach them through the link", async () => {
    const pod = await standIn({ stepMs: 40 });
    const store = new MemoryStore();
    const root = tmpDir();
    const objects: ObjectStore = new LocalObjectStore(root);
    const cfg = loadConfig(["--comfyui", pod.url, "--port", "0"], { GATEWAY_INTERNAL_TOKEN: "shared-by-the-replicas" });
    const deps = { store, objects, inputs: new PrefixedStore(objects, "inputs/"), users: new PrefixedStore(objects, "users/"), log: quiet };
    const a = await buildApp(cfg, deps);
    const b = await buildApp(cfg, deps);
    cleanup.push(() => a.close(), () => b.close());
    const [aUrl, aAdmin, bAdmin] = [await a.app.listen({ port: 0, host: "127.0.0.1" }), await a.admin.listen({ port: 0, host: "127.0.0.1" }), await b.admin.listen({ port: 0, host: "127.0.0.1" })];
    const pods = [{ key: pod.url, url: pod.url, ready: true, terminating: false }];
    await a.lead({ epoch: await store.takeEpoch() });
    a.setPods(pods);
    b.setPods(pods);
    b.follow(aAdmin);
    await until(async () => a.services.readyWorker() !== undefined);
    // The link and the leader's routes carry everyone's events and act for anyone: replicas only.
    assert.equal((await fetch(aAdmin + "/gateway/leader/queue")).status, 401);
    assert.equal((await fetch(aAdmin + "/gateway/leader/queue", { headers: { "x-gateway-token": "guess" } })).status, 401);
    await until(async () => b.services.link?.up === true);
    const sock = await openWs(aUrl, "artist");
    cleanup.push(() => sock.close());
    const id = (await post(aUrl, "/prompt", { prompt: t2i(6, undefined, 100), client_id: "artist" })).json.prompt_id;
    await until(async () => sock.messages.some((m) => m.type === "execution_start" && m.data.prompt_id === id));
    // a loses the Lease to b.
    await a.standDown();
    await b.lead({ epoch: await store.takeEpoch() });
    a.follow(bAdmin);
    const before = sock.messages.filter((m) => m.type === "progress").length;
    await until(async () => sock.messages.some((m) => m.type === "execution_success" && m.data.prompt_id === id), 30000);
    assert.ok(sock.messages.filter((m) => m.type === "progress").length > before, "progress kept coming to a's client from b");
    assert.equal(sock.ws.readyState, 1, "the client stayed connected");
    assert.equal((await get(aUrl, `/history/${id}`)).json[id].status.status_str, "success");
  });

  it("an output that cannot be copied ends the prompt once, as an error naming the file; never a success first", async () => {
    const pod = await standIn({ stepMs: 5 });
    const dir = tmpDir();
    const real = new LocalObjectStore(`${dir}/objects/gateway`);
    let failed = 0;
    // The outputs store refuses every output file (as S3 would when denied or unreachable).
    const objects: ObjectStore = Object.assign(Object.create(real) as ObjectStore, {
      put: async (key: string, body: Buffer) => {
        if (key.startsWith("output/")) {
          failed++;
          throw new Error("AccessDenied");
        }
        return real.put(key, body);
      },
    });
    const gw = await startGateway([pod.url], [], dir, { objects });
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    const sock = await openWs(gw.url, "artist");
    cleanup.push(() => sock.close());
    const id = (await post(gw.url, "/prompt", { prompt: t2i(7), client_id: "artist" })).json.prompt_id;
    const e = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
    await sleep(1500);
    assert.equal(e.status.status_str, "error");
    const err = e.status.messages.find(([t]: [string]) => t === "execution_error")[1];
    assert.match(err.exception_message, /outputs not saved: ComfyUI_\d+_\.png: AccessDenied/);
    assert.deepEqual(e.outputs["9"].images, [], "history points at no file that is not there");
    const mine = sock.messages.filter((m) => m.data?.prompt_id === id);
    assert.equal(mine.filter((m) => m.type === "execution_success").length, 0, "never told success");
    assert.equal(mine.filter((m) => m.type === "execution_error").length, 1, "told the error once");
    assert.equal(mine.filter((m) => m.type === "executing" && m.data.node === null).length, 1);
    assert.equal(failed, 3, "three tries, then it gave up");
    assert.deepEqual(pod.executed(), [id], "ran once");
  });

  it("the drain hook: only from the pod it names; the drain ends when the pod answers again", async () => {
    // The stand-in on 127.0.0.2: its address is the pod's; 127.0.0.3 is some other pod of the cluster.
    const pod = await standIn({ stepMs: 5, host: "127.0.0.2" });
    const gw = await startGateway([pod.url]);
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    const drain = (from: string, method = "POST") => new Promise<number>((resolve, reject) => {
      const u = new URL(`${gw.adminUrl}/gateway/drain?pod=${encodeURIComponent(pod.url)}`);
      const r = http.request(u, { method, localAddress: from, agent: false }, (res) => (res.resume(), resolve(res.statusCode!)));
      r.on("error", reject).end();
    });
    assert.equal(await drain("127.0.0.3"), 403, "another pod cannot drain it");
    assert.equal((await get(gw.adminUrl, "/gateway/pods")).json.ready, 1);
    assert.equal(await drain("127.0.0.2"), 200, "the pod itself can");
    assert.equal((await get(gw.adminUrl, "/gateway/pods")).json.ready, 0, "drained: no work for it");
    // Its endpoint goes not ready (the pod restarts) and comes back: it answers again, the drain is over.
    gw.gateway.setPods([{ key: pod.url, url: pod.url, ready: false, terminating: false }]);
    gw.gateway.setPods([{ key: pod.url, url: pod.url, ready: true, terminating: false }]);
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1, 5000);
    assert.equal(await drain("127.0.0.2"), 200);
    assert.equal(await drain("127.0.0.2", "DELETE"), 200, "or the pod undoes it");
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1, 5000);
  });

  it("a prompt buffered on a pod is listed as pending and can be deleted: it leaves the pod's queue and never runs", async () => {
    const pod = await standIn({ stepMs: 20 });
    const gw = await startGateway([pod.url]);
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    const p1 = (await post(gw.url, "/prompt", { prompt: t2i(1, undefined, 60) })).json.prompt_id;
    const p2 = (await post(gw.url, "/prompt", { prompt: t2i(2, undefined, 60) })).json.prompt_id;
    await until(async () => pod.executed().includes(p1));
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.pods[0].prompts.includes(p2));
    const q = (await get(gw.url, "/queue")).json;
    assert.deepEqual(q.queue_running.map((i: unknown[]) => i[1]), [p1]);
    assert.deepEqual(q.queue_pending.map((i: unknown[]) => i[1]), [p2], "buffered = not started = pending, as in ComfyUI");
    assert.equal((await post(gw.url, "/queue", { delete: [p2] })).status, 200);
    assert.deepEqual((await get(gw.url, "/queue")).json.queue_pending, []);
    const podQueue = await (await fetch(pod.url + "/queue")).json() as { queue_pending: unknown[][] };
    assert.deepEqual(podQueue.queue_pending, [], "taken off the pod's queue");
    await until(async () => (await get(gw.url, `/history/${p1}`)).json[p1], 20000, 100);
    await sleep(300);
    assert.deepEqual(pod.executed(), [p1], "the deleted prompt never ran");
    assert.deepEqual((await get(gw.url, `/history/${p2}`)).json, {}, "and has no history (ComfyUI's delete)");
  });
});

// Dispatch edge cases found while building the chaos test: a slow submit must not look like a lost prompt,
// a new gateway process takes over prompts the previous one placed, and a prompt left on a pod that is no
// longer listed runs again elsewhere.
import { strict as assert } from "node:assert";
import * as net from "node:net";
import { startStandIn } from "./standin";
import { get, openWs, post, startGateway, t2i, tmpDir, until } from "./helpers";

/** A TCP proxy to `target` that holds back every chunk starting a `POST /prompt` request by `delayMs`. */
async function slowSubmitProxy(target: number, delayMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    sockets.add(client).add(upstream);
    let chain = Promise.resolve();
    client.on("data", (d: Buffer) => {
      const hold = d.subarray(0, 13).toString("latin1") === "POST /prompt ";
      chain = chain.then(() => new Promise<void>((r) => setTimeout(r, hold ? delayMs : 0))).then(() => void upstream.write(d));
    });
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

describe("gateway take-over and reconcile", function () {
  this.timeout(60000);
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) {
      const t = Date.now();
      await c();
      if (process.env.CLEANUP_DEBUG) console.log(`cleanup ${c.toString().slice(0, 60)} ${Date.now() - t} ms`);
    }
  });

  it("a prompt whose submit to the pod is still in flight is not taken for lost and never runs twice", async () => {
    const slow = await startStandIn({ stepMs: 5 });
    const other = await startStandIn({ stepMs: 5 });
    cleanup.push(() => slow.close(), () => other.close());
    // Longer than the 1 s reconcile tick: the tick asks the pod's /queue while the prompt is not there yet.
    const proxy = await slowSubmitProxy(slow.port, 2500);
    cleanup.push(() => proxy.close());
    const gw = await startGateway([proxy.url, other.url]);
    cleanup.push(() => gw.close());
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
    // Two prompts: the empty-pod-first placement puts one on each, so one submit goes through the slow proxy.
    const ids = [(await post(gw.url, "/prompt", { prompt: t2i(1) })).json.prompt_id, (await post(gw.url, "/prompt", { prompt: t2i(2) })).json.prompt_id];
    for (const id of ids) {
      const e = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 20000, 100);
      assert.equal(e.status.status_str, "success");
    }
    await new Promise((r) => setTimeout(r, 500));
    const runs = [...slow.executed(), ...other.executed()];
    for (const id of ids) assert.equal(runs.filter((x) => x === id).length, 1, `${id} ran once: ${runs}`);
    assert.equal(slow.executed().length, 1, "the slow pod kept its prompt");
  });

  it("a new gateway process on the same data dir takes over the prompt the previous one left running", async () => {
    const pod = await startStandIn({ stepMs: 150 });
    cleanup.push(() => pod.close());
    const dir = tmpDir();
    const first = await startGateway([pod.url], [], dir);
    await until(async () => (await get(first.url, "/object_info/KSampler")).json.KSampler);
    const id = (await post(first.url, "/prompt", { prompt: t2i(3, undefined, 12), client_id: "artist" })).json.prompt_id;
    await until(async () => pod.executed().includes(id));
    await first.close();
    const second = await startGateway([pod.url], [], dir);
    cleanup.push(() => second.close());
    const sock = await openWs(second.url, "artist");
    cleanup.push(() => sock.close());
    assert.deepEqual((await get(second.url, "/queue")).json.queue_running.map((i: unknown[]) => i[1]), [id], "still running after the hand-over");
    await until(async () => sock.messages.find((m) => m.type === "executing" && m.data.node === null && m.data.prompt_id === id), 20000);
    assert.ok(sock.messages.some((m) => m.type === "progress" && m.data.prompt_id === id), "the running prompt's events reach its client through the new process");
    const e = (await get(second.url, `/history/${id}`)).json[id];
    assert.equal(e.status.status_str, "success");
    const img = e.outputs["9"].images[0];
    assert.equal((await get(second.url, `/view?filename=${img.filename}&subfolder=${img.subfolder}`)).status, 200);
    assert.deepEqual(pod.executed().filter((x) => x === id), [id], "ran once: taken over, not re-run");
  });

  it("a prompt left on a pod that is no longer listed runs again on another pod after the orphan window", async () => {
    const gone = await startStandIn({ stepMs: 200 });
    const dir = tmpDir();
    const first = await startGateway([gone.url], [], dir);
    await until(async () => (await get(first.url, "/object_info/KSampler")).json.KSampler);
    const id = (await post(first.url, "/prompt", { prompt: t2i(4, undefined, 50) })).json.prompt_id;
    await until(async () => gone.executed().includes(id));
    await first.close();
    await gone.close();
    const next = await startStandIn({ stepMs: 5 });
    cleanup.push(() => next.close());
    const second = await startGateway([next.url], ["--orphan-seconds", "1.5"], dir);
    cleanup.push(() => second.close());
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual((await get(second.url, `/history/${id}`)).json, {}, "not before the orphan window");
    assert.deepEqual(next.executed(), []);
    const e = await until(async () => (await get(second.url, `/history/${id}`)).json[id], 10000, 100);
    assert.equal(e.status.status_str, "success");
    assert.deepEqual(next.executed(), [id]);
  });
});

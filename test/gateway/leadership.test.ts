// Leadership that cannot overlap: two electors on one fake API server, each driving a Dispatcher over one
// shared store and one stand-in. The first leader's start-up reads the store slowly (longer than the
// Lease), later it is cut off from the API server; at no instant may both place prompts, and the old
// leader's writes carry a stale epoch the store refuses.
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { Dispatcher } from "../../workload/gateway/dispatch/dispatcher";
import { KubeClient } from "../../workload/gateway/kube/client";
import { LeaseElector } from "../../workload/gateway/kube/lease";
import { LocalObjectStore } from "../../workload/gateway/store/objects";
import { MemoryStore } from "../../workload/gateway/store/memory";
import type { Fence, PromptRecord } from "../../workload/gateway/store/types";
import { startFakeKube } from "./fakeKube";
import { quiet, t2i, tmpDir, until } from "./helpers";
import { startStandIn } from "./standin";

/** A pass-through to the API server that can be cut: requests then hang, as on a partitioned node. */
async function cuttableProxy(target: string) {
  let cut = false;
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (cut) {
      held.push(res);
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const r = await fetch(target + req.url, { method: req.method, headers: req.headers as Record<string, string>, body: chunks.length ? Buffer.concat(chunks) : undefined });
      res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "application/json" }).end(Buffer.from(await r.arrayBuffer()));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: () => (cut = true),
    close: () => new Promise<void>((r) => {
      for (const h of held) h.destroy();
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

describe("gateway leadership: one dispatcher at a time", function () {
  this.timeout(60000);

  it("a slow store load never lets the Lease lapse; a leader cut off stops placing before the next one starts; its stale writes are refused", async () => {
    const kube = await startFakeKube("comfy");
    const proxyA = await cuttableProxy(kube.url);
    const pod = await startStandIn({ stepMs: 5 });
    const store = new MemoryStore();
    // The take-over reads the store for longer than the whole Lease lasts.
    let slowLoads = true;
    const listOpen = store.listOpen.bind(store);
    store.listOpen = async (o) => {
      if (slowLoads) await new Promise((r) => setTimeout(r, 2500));
      return listOpen(o);
    };
    // Every claim, with the epoch that made it and when.
    const claims: { epoch: number; at: number }[] = [];
    const claim = store.claim.bind(store);
    store.claim = async (id, a, p, pc, now, fence) => {
      claims.push({ epoch: fence.epoch, at: Date.now() });
      return claim(id, a, p, pc, now, fence);
    };
    const files = { output: new LocalObjectStore(tmpDir()), temp: new LocalObjectStore(tmpDir()), input: new LocalObjectStore(tmpDir()) };
    const timeline: { who: string; what: "lead" | "lose"; at: number }[] = [];
    const dispatchers: Dispatcher[] = [];
    const timings = { durationSeconds: 1.5, renewDeadlineMs: 1000, retryMs: 200, requestTimeoutMs: 5000 };

    const replica = (who: string, api: string) => {
      let d: Dispatcher | undefined;
      let fence: Fence | undefined;
      const e: LeaseElector = new LeaseElector(new KubeClient(api), "comfy", "gw", who, {
        // The start-up's promise is returned: an elector that awaited it would stop renewing meanwhile.
        onLead: () => {
          timeline.push({ who, what: "lead", at: Date.now() });
          return (async () => {
            fence = { epoch: await store.takeEpoch() };
            d = new Dispatcher({
              store, fence, files, sink: { toClient() {}, queueChanged() {} }, log: quiet, maxAttempts: 3, startupDeadlineMs: 60000, stallMs: 60000,
              historyTtlSeconds: 60, pushInputs: false, orphanMs: 60000, isLeader: () => e.isLeader(), sweepMs: 100,
            });
            dispatchers.push(d);
            await d.start();
            d.setPods([{ key: "pod-1", url: pod.url, ready: true, terminating: false }]);
          })();
        },
        onLose: () => {
          timeline.push({ who, what: "lose", at: Date.now() });
          void d?.stop();
        },
      }, quiet, timings);
      return { e, fenceOf: () => fence };
    };

    const a = replica("a", proxyA.url);
    const b = replica("b", kube.url);
    const submit = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const rec: PromptRecord = { id: randomUUID(), number: i, seq: Date.now() * 1000 + i, clientId: "c", owner: "u", prompt: t2i(i), extraData: {}, outputs: ["9"], state: "queued", attempt: 0, createdAt: Date.now() };
        await store.create(rec);
      }
    };
    try {
      await submit(5);
      a.e.start();
      await until(async () => timeline.some((t) => t.who === "a" && t.what === "lead"));
      b.e.start();
      // a loads for 2.5 s (> the 1.5 s Lease): its renewals go on meanwhile, so b never takes over.
      await until(async () => (await store.counts()).waiting === 0 && (await store.counts()).running === 0, 20000);
      assert.ok(!timeline.some((t) => t.who === "b"), `b never led while a was loading: ${JSON.stringify(timeline)}`);
      assert.ok(claims.length >= 5 && claims.every((c) => c.epoch === a.fenceOf()!.epoch));

      // a is cut off from the API server: its renewals hang; it must stop before b may start.
      slowLoads = false;
      proxyA.cut();
      await until(async () => timeline.some((t) => t.who === "b" && t.what === "lead"), 20000);
      await submit(5);
      await until(async () => (await store.counts()).waiting === 0 && (await store.counts()).running === 0, 20000);
      const aLost = timeline.find((t) => t.who === "a" && t.what === "lose")!;
      const bLead = timeline.find((t) => t.who === "b" && t.what === "lead")!;
      assert.ok(aLost && aLost.at <= bLead.at, `a stood down (${aLost?.at}) before b took the lead (${bLead.at})`);
      const eA = a.fenceOf()!.epoch;
      const eB = b.fenceOf()!.epoch;
      assert.ok(eB > eA, "the new leader's epoch is higher");
      assert.ok(claims.filter((c) => c.epoch === eA).every((c) => c.at <= aLost.at), "a placed nothing after it stood down");
      assert.ok(claims.filter((c) => c.epoch === eB).every((c) => c.at >= bLead.at), "b placed nothing before it led");

      // A write of the old epoch on a prompt the new leader holds is refused.
      const rec: PromptRecord = { id: randomUUID(), number: 0, seq: 1, clientId: "c", owner: "u", prompt: t2i(9), extraData: {}, outputs: ["9"], state: "queued", attempt: 0, createdAt: Date.now() };
      await store.create(rec);
      assert.ok(await claim(rec.id, 0, "pod-1", "x", Date.now(), { epoch: eB }));
      assert.equal(await store.requeue(rec.id, 1, "stale", true, { epoch: eA }), false);
      assert.equal(await store.complete(rec.id, 1, { prompt: [], outputs: {}, status: { status_str: "success", completed: true, messages: [] }, meta: {} }, Date.now(), 60, { epoch: eA }), false);
    } finally {
      (a.e as unknown as { stopped: boolean }).stopped = true;
      await b.e.release();
      await Promise.all(dispatchers.map((d) => d.stop()));
      await proxyA.close();
      await kube.close();
      await pod.close();
    }
  });
});

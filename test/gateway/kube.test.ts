import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import * as http from "node:http";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { KubeClient } from "../../workload/gateway/kube/client";
import { LeaseElector } from "../../workload/gateway/kube/lease";
import { BOOT_AT_LABEL, EndpointSliceSource, patchDeletionCost, podImageId, podNodeStart } from "../../workload/gateway/kube/pods";
import { cacheParts, DeletionCosts } from "../../workload/gateway/models/deletionCost";
import type { PodInfo } from "../../workload/gateway/dispatch/dispatcher";
import { quiet, until } from "./helpers";

interface Seen { method: string; url: string; body: any; contentType?: string }

/** A fake Kubernetes API server on loopback that records every request. */
async function fakeApi(handler: (req: Seen, res: http.ServerResponse) => void) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString();
      const s = { method: req.method!, url: req.url!, body: text ? JSON.parse(text) : undefined, contentType: req.headers["content-type"] };
      seen.push(s);
      handler(s, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

const slice = (name: string, rv: string, endpoints: any[]) => ({ metadata: { name, resourceVersion: rv }, ports: [{ name: "http", port: 8848 }, { name: "other", port: 1 }], endpoints });
const ep = (pod: string, ip: string, c: Record<string, boolean>) => ({ addresses: [ip], conditions: c, targetRef: { kind: "Pod", name: pod } });

describe("gateway Kubernetes adapters (fake API server)", function () {
  this.timeout(20000);

  it("EndpointSlices: lists by service-name label, watches from the list's resourceVersion, maps ready/terminating", async () => {
    let watchRes: http.ServerResponse | undefined;
    const api = await fakeApi((req, res) => {
      if (req.url.includes("watch=true")) {
        res.writeHead(200, { "content-type": "application/json" });
        watchRes = res;
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ metadata: { resourceVersion: "100" }, items: [slice("s1", "99", [ep("comfyui-a", "10.0.0.1", { ready: true }), ep("comfyui-b", "10.0.0.2", { ready: false })])] }));
    });
    const updates: PodInfo[][] = [];
    const src = new EndpointSliceSource(new KubeClient(api.url), "comfy", "comfyui-queue", "http", (p) => updates.push(p), quiet);
    try {
      await src.start();
      assert.equal(api.seen[0].method, "GET");
      assert.equal(api.seen[0].url, "/apis/discovery.k8s.io/v1/namespaces/comfy/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dcomfyui-queue");
      assert.deepEqual(updates[0], [
        { key: "comfyui-a", url: "http://10.0.0.1:8848", ready: true, terminating: false },
        { key: "comfyui-b", url: "http://10.0.0.2:8848", ready: false, terminating: false },
      ]);
      await until(async () => watchRes);
      const w = api.seen.find((s) => s.url.includes("watch=true"))!;
      assert.match(w.url, /&watch=true&allowWatchBookmarks=true&resourceVersion=100$/);
      watchRes!.write(JSON.stringify({ type: "MODIFIED", object: slice("s1", "101", [ep("comfyui-a", "10.0.0.1", { ready: false, terminating: true })]) }) + "\n");
      await until(async () => updates.length === 2);
      assert.deepEqual(updates[1], [{ key: "comfyui-a", url: "http://10.0.0.1:8848", ready: false, terminating: true }]);
    } finally {
      src.stop();
      await api.close();
    }
  });

  it("pod-deletion-cost is a merge patch of one annotation; image id from the comfyui container; errors are reported", async () => {
    const api = await fakeApi((req, res) => {
      if (req.url.endsWith("/pods/missing")) {
        res.writeHead(404).end("{}");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ status: { containerStatuses: [{ name: "uploader", imageID: "x@sha256:1" }, { name: "comfyui", imageID: "ecr/comfy@sha256:abc" }] } }));
    });
    const kube = new KubeClient(api.url);
    try {
      await patchDeletionCost(kube, "comfy", "comfyui-a", 2999);
      assert.deepEqual(api.seen[0], { method: "PATCH", url: "/api/v1/namespaces/comfy/pods/comfyui-a", contentType: "application/merge-patch+json", body: { metadata: { annotations: { "controller.kubernetes.io/pod-deletion-cost": "2999" } } } });
      assert.equal(await podImageId(kube, "comfy", "comfyui-a"), "ecr/comfy@sha256:abc");
      await assert.rejects(patchDeletionCost(kube, "comfy", "missing", 0), /answered 404/);
      // The API server takes an int32 only; such a value is refused here, not sent.
      const sent = api.seen.length;
      await assert.rejects(patchDeletionCost(kube, "comfy", "comfyui-a", 1.5), /not an int32/);
      await assert.rejects(patchDeletionCost(kube, "comfy", "comfyui-a", 2 ** 31), /not an int32/);
      assert.equal(api.seen.length, sent);
    } finally {
      await api.close();
    }
  });

  it("the leader's deletion costs reach the pods as patches that carry the cache part, once per change; a failed patch is sent again", async () => {
    let failB = true;
    const api = await fakeApi((req, res) => {
      if (failB && req.url.endsWith("/pods/comfyui-b") && req.body.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"] === "1333") {
        failB = false;
        res.writeHead(500).end("{}");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
    const kube = new KubeClient(api.url);
    const pending: Promise<unknown>[] = [];
    const costs = new DeletionCosts((pod, cost) => {
      const p = patchDeletionCost(kube, "comfy", pod, cost);
      pending.push(p.catch(() => undefined));
      return p;
    });
    const annotations = () => api.seen.map((s) => `${s.url.split("/").pop()}=${s.body.metadata.annotations["controller.kubernetes.io/pod-deletion-cost"]}`);
    const settle = async () => {
      while (pending.length) await Promise.all(pending.splice(0));
    };
    try {
      costs.load("comfyui-a", 1);
      costs.load("comfyui-b", 1);
      await settle();
      // Both busy with one prompt; waiting prompts need 6 GB that a's node holds and 2 GB that b's holds.
      const parts = cacheParts([{ pod: "comfyui-a", bytesForWaiting: 6e9 }, { pod: "comfyui-b", bytesForWaiting: 2e9 }]);
      costs.refresh(["comfyui-a", "comfyui-b"], parts);
      await settle();
      costs.refresh(["comfyui-a", "comfyui-b"], parts); // unchanged: a's not patched again; b's failed patch (500) is
      await settle();
      costs.refresh(["comfyui-a", "comfyui-b"], parts); // nothing changed, nothing failed: no patch
      await settle();
      assert.deepEqual(annotations(), ["comfyui-a=1000", "comfyui-b=1000", "comfyui-a=1999", "comfyui-b=1333", "comfyui-b=1333"]);
      assert.equal(costs.current("comfyui-b"), 1333);
    } finally {
      await api.close();
    }
  });

  it("Lease: creates when absent, renews its own, respects another holder until expiry, releases on stop", async () => {
    let lease: any;
    let rv = 1;
    const api = await fakeApi((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "GET") return lease ? send(200, lease) : send(404, { kind: "Status", code: 404 });
      if (req.method === "POST") {
        lease = { ...req.body, metadata: { ...req.body.metadata, resourceVersion: String(++rv) } };
        return send(201, lease);
      }
      if (req.method === "PUT") {
        if (req.body.metadata.resourceVersion !== lease.metadata.resourceVersion) return send(409, { code: 409 });
        lease = { ...req.body, metadata: { ...req.body.metadata, resourceVersion: String(++rv) } };
        return send(200, lease);
      }
      return send(405, {});
    });
    const kube = new KubeClient(api.url);
    let t = 0;
    const clock = { mono: () => t, wall: () => new Date(Date.parse("2026-01-01T00:00:00Z") + t) };
    const cb = { onLead() {}, onLose() {} };
    const a = new LeaseElector(kube, "comfy", "comfyui-gateway", "gw-a", cb, quiet, {}, "http://10.0.0.1:8189", clock);
    const b = new LeaseElector(kube, "comfy", "comfyui-gateway", "gw-b", cb, quiet, {}, "http://10.0.0.2:8189", clock);
    try {
      assert.equal(await a.tryOnce(), true);
      const create = api.seen.find((s) => s.method === "POST")!;
      assert.equal(create.url, "/apis/coordination.k8s.io/v1/namespaces/comfy/leases");
      assert.equal(create.body.spec.holderIdentity, "gw-a");
      assert.equal(create.body.spec.leaseDurationSeconds, 15);
      assert.equal(create.body.metadata.annotations["comfyui.studio/gateway-address"], "http://10.0.0.1:8189", "followers find the leader on the Lease");
      assert.equal(a.isLeader(), true);
      assert.equal(await b.tryOnce(), false, "a live holder keeps it");
      t += 5000;
      assert.equal(await a.tryOnce(), true, "renewal");
      assert.equal(lease.spec.leaseTransitions, 0);
      t += 9000;
      assert.equal(await b.tryOnce(), false, "b saw the record change 9 s ago: not expired");
      t += 1500;
      assert.equal(a.isLeader(), false, "a stops leading 10 s after its last renewal began, before anyone may take over");
      t += 13000;
      assert.equal(await b.tryOnce(), false, "b first saw the renewed record 14.5 s ago");
      t += 1000;
      assert.equal(await b.tryOnce(), true, "unchanged for 15 s on b's own clock since it saw it change: taken over");
      assert.equal(lease.spec.holderIdentity, "gw-b");
      assert.equal(lease.spec.leaseTransitions, 1);
      assert.equal(lease.metadata.annotations["comfyui.studio/gateway-address"], "http://10.0.0.2:8189");
      assert.equal(await a.tryOnce(), false);
      (b as any).leading = true;
      await b.release();
      assert.equal(lease.spec.holderIdentity, "");
      assert.equal(await a.tryOnce(), true, "released: taken at once");
    } finally {
      await api.close();
    }
  });

  it("Lease: the holder's record is judged by when the candidate saw it change, never by comparing clocks", async () => {
    // The holder's wall clock runs an hour behind: its renewTime looks long expired to anyone comparing clocks.
    let lease: any;
    let rv = 1;
    const api = await fakeApi((req, res) => {
      const send = (code: number, body: unknown) => res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "GET") return lease ? send(200, lease) : send(404, { kind: "Status", code: 404 });
      if (req.method === "POST" || req.method === "PUT") {
        if (req.method === "PUT" && req.body.metadata.resourceVersion !== lease.metadata.resourceVersion) return send(409, { code: 409 });
        lease = { ...req.body, metadata: { ...req.body.metadata, resourceVersion: String(++rv) } };
        return send(req.method === "POST" ? 201 : 200, lease);
      }
      return send(405, {});
    });
    let t = 0;
    const kube = new KubeClient(api.url);
    const slow = new LeaseElector(kube, "comfy", "l", "slow", { onLead() {}, onLose() {} }, quiet, {}, undefined, { mono: () => t, wall: () => new Date(Date.parse("2026-01-01T00:00:00Z") + t - 3600_000) });
    const fast = new LeaseElector(kube, "comfy", "l", "fast", { onLead() {}, onLose() {} }, quiet, {}, undefined, { mono: () => t, wall: () => new Date(Date.parse("2026-01-01T00:00:00Z") + t) });
    try {
      assert.equal(await slow.tryOnce(), true);
      assert.equal(await fast.tryOnce(), false, "first sight of the record: valid for 15 s from now");
      t += 2000;
      assert.equal(await slow.tryOnce(), true);
      t += 2000;
      assert.equal(await fast.tryOnce(), false, "the record changed since: still valid");
    } finally {
      await api.close();
    }
  });

  it("Lease: a leader whose renewals hang stands down at its deadline, while the request is still in flight", async () => {
    let hang = false;
    let lease: any;
    let rv = 1;
    const held: http.ServerResponse[] = [];
    const api = await fakeApi((req, res) => {
      if (hang) {
        held.push(res);
        return;
      }
      const send = (code: number, body: unknown) => res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
      if (req.method === "GET") return lease ? send(200, lease) : send(404, {});
      lease = { ...req.body, metadata: { ...req.body.metadata, resourceVersion: String(++rv) } };
      return send(req.method === "POST" ? 201 : 200, lease);
    });
    const events: string[] = [];
    const e = new LeaseElector(new KubeClient(api.url), "comfy", "l", "a", { onLead: () => events.push("lead"), onLose: () => events.push("lose") }, quiet,
      { durationSeconds: 1.5, renewDeadlineMs: 1000, retryMs: 200, requestTimeoutMs: 5000 });
    try {
      e.start();
      await until(async () => events.includes("lead"));
      hang = true;
      await until(async () => events.includes("lose"), 20000, 10);
      assert.ok(held.length > 0, "the renewal request was still hanging when leadership ended: the deadline does not wait for it");
      assert.equal(e.isLeader(), false);
    } finally {
      hang = false;
      for (const r of held) r.destroy();
      (e as any).stopped = true;
      await api.close();
    }
  });

  it("a Ready pod's node: registration from the Node's creation, kernel start from the boot-at label the node tool writes", async () => {
    const objects: Record<string, object> = {
      "/api/v1/namespaces/comfy/pods/comfyui-a": { spec: { nodeName: "ip-10-0-1-5" }, status: { conditions: [{ type: "PodScheduled", status: "True", lastTransitionTime: "2026-12-01T10:00:00Z" }, { type: "Ready", status: "True", lastTransitionTime: "2026-12-01T10:03:10Z" }] } },
      "/api/v1/namespaces/comfy/pods/comfyui-b": { spec: { nodeName: "ip-10-0-1-6" }, status: { conditions: [{ type: "Ready", status: "False", lastTransitionTime: "2026-12-01T10:03:10Z" }] } },
      "/api/v1/nodes/ip-10-0-1-5": { metadata: { creationTimestamp: "2026-12-01T10:01:40Z", labels: { [BOOT_AT_LABEL]: String(Date.parse("2026-12-01T10:00:20Z") / 1000), "node.kubernetes.io/instance-type": "g5.2xlarge", "karpenter.sh/capacity-type": "spot" } } },
    };
    const api = await fakeApi((req, res) => {
      const o = objects[req.url];
      res.writeHead(o ? 200 : 404, { "content-type": "application/json" });
      res.end(JSON.stringify(o ?? { kind: "Status", code: 404 }));
    });
    try {
      const kube = new KubeClient(api.url);
      assert.deepEqual(await podNodeStart(kube, "comfy", "comfyui-a"), {
        node: "ip-10-0-1-5", instanceType: "g5.2xlarge", capacityType: "spot",
        bootAt: Date.parse("2026-12-01T10:00:20Z"), registeredAt: Date.parse("2026-12-01T10:01:40Z"), readyAt: Date.parse("2026-12-01T10:03:10Z"),
      });
      assert.equal(await podNodeStart(kube, "comfy", "comfyui-b"), undefined, "not Ready");
      assert.equal(await podNodeStart(kube, "comfy", "gone"), undefined);
      assert.deepEqual(api.seen.map((x) => x.method), ["GET", "GET", "GET", "GET"]);
    } finally {
      await api.close();
    }
    // The node tool writes the same label (karpenter/userdata/comfyui-models.sh).
    const tool = readFileSync(join(__dirname, "..", "..", "karpenter", "userdata", "comfyui-models.sh"), "utf8");
    assert.ok(tool.includes(`${BOOT_AT_LABEL}=`), "the node tool sets the label the gateway reads");
  });
});

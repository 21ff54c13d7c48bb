// A fake Kubernetes API server on loopback for gateway processes in Kubernetes mode: the calls the
// gateway's Role allows (coordination.k8s.io Leases with resourceVersion conflicts, discovery.k8s.io
// EndpointSlices with list + watch, pods get/patch, nodes get), kept in memory.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeEndpoint { pod: string; ip: string; port: number; ready: boolean; terminating?: boolean }

export interface FakeKube {
  url: string;
  /** The Lease objects by name. */
  leases: Map<string, any>;
  /** Replaces the ComfyUI endpoints (one EndpointSlice per endpoint: each stand-in has its own port); watchers hear it. */
  setEndpoints(service: string, eps: FakeEndpoint[]): void;
  /** Pod patches seen (deletion cost). */
  patches: { pod: string; body: any }[];
  close(): Promise<void>;
}

export async function startFakeKube(namespace: string): Promise<FakeKube> {
  const leases = new Map<string, any>();
  const slices = new Map<string, any>(); // name → slice
  const watchers = new Set<{ service: string; res: http.ServerResponse }>();
  const patches: { pod: string; body: any }[] = [];
  let rv = 100;
  const json = (res: http.ServerResponse, code: number, body: unknown) => res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
      const url = new URL(req.url!, "http://x");
      const p = url.pathname;
      const leaseBase = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`;
      if (p.startsWith(leaseBase)) {
        const name = decodeURIComponent(p.slice(leaseBase.length + 1));
        if (req.method === "GET") return leases.has(name) ? json(res, 200, leases.get(name)) : json(res, 404, { kind: "Status", code: 404 });
        if (req.method === "POST") {
          if (leases.has(body.metadata.name)) return json(res, 409, { kind: "Status", code: 409 });
          const l = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
          leases.set(body.metadata.name, l);
          return json(res, 201, l);
        }
        if (req.method === "PUT") {
          const cur = leases.get(name);
          if (!cur || cur.metadata.resourceVersion !== body.metadata.resourceVersion) return json(res, 409, { kind: "Status", code: 409 });
          const l = { ...body, metadata: { ...body.metadata, resourceVersion: String(++rv) } };
          leases.set(name, l);
          return json(res, 200, l);
        }
        return json(res, 405, {});
      }
      if (p === `/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`) {
        const service = /kubernetes.io\/service-name=(.*)$/.exec(url.searchParams.get("labelSelector") ?? "")?.[1] ?? "";
        if (url.searchParams.get("watch") === "true") {
          res.writeHead(200, { "content-type": "application/json" });
          const w = { service, res };
          watchers.add(w);
          res.on("close", () => watchers.delete(w));
          return;
        }
        const items = [...slices.values()].filter((s) => s.metadata.labels["kubernetes.io/service-name"] === service);
        return json(res, 200, { metadata: { resourceVersion: String(rv) }, items });
      }
      const pod = new RegExp(`^/api/v1/namespaces/${namespace}/pods/([^/]+)$`).exec(p);
      if (pod && req.method === "PATCH") {
        patches.push({ pod: decodeURIComponent(pod[1]), body });
        return json(res, 200, { metadata: { name: pod[1] } });
      }
      return json(res, 404, { kind: "Status", code: 404 });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    leases,
    patches,
    setEndpoints(service, eps) {
      const next = new Map<string, any>();
      for (const e of eps) {
        const name = `${service}-${e.pod}`;
        next.set(name, {
          metadata: { name, namespace, labels: { "kubernetes.io/service-name": service }, resourceVersion: String(++rv) },
          ports: [{ name: "http", port: e.port }],
          endpoints: [{ addresses: [e.ip], conditions: { ready: e.ready, terminating: e.terminating === true }, targetRef: { kind: "Pod", name: e.pod } }],
        });
      }
      const events: { type: string; object: any }[] = [];
      for (const [name, s] of slices) if (!next.has(name) && s.metadata.labels["kubernetes.io/service-name"] === service) events.push({ type: "DELETED", object: s });
      for (const [name, s] of next) events.push({ type: slices.has(name) ? "MODIFIED" : "ADDED", object: s });
      for (const [name, s] of slices) if (!next.has(name) && s.metadata.labels["kubernetes.io/service-name"] === service) slices.delete(name);
      for (const [name, s] of next) slices.set(name, s);
      for (const w of watchers) if (w.service === service) for (const ev of events) w.res.write(JSON.stringify(ev) + "\n");
    },
    close: () =>
      new Promise<void>((r) => {
        for (const w of watchers) w.res.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

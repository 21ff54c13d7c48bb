/**
 * The gateway's own endpoints, on the internal port only (the Ingress never routes it): probes, KEDA's
 * figure, the pod view, the drain hook, and the leader's side of the replica link (replicas/link.ts).
 */
import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import { timingSafeEqual } from "node:crypto";
import type { Dispatcher } from "../dispatch/dispatcher";
import { GatewayError } from "../protocol/errors";
import { PATHS } from "../../../contracts/gateway";
import { LINK_PATH, type LinkHub } from "../replicas/link";
import type { PromptRecord } from "../store/types";

export const ADMIN = PATHS;

export interface AdminDeps {
  linkHub: LinkHub;
  /** The replicas' shared secret: required on the link and the leader's routes. */
  internalToken: string;
  /** KEDA's figure (never an error status). */
  scaling(): Promise<{ prompts: number; waiting: number; running: number }>;
  /** Pods and the cold-start estimate, as the leader sees them. */
  pods(): unknown;
  /** Serving? (not closing, store answering) — undefined when yes, else the reason. */
  notReady(): Promise<string | undefined>;
  /** The longest the event loop was held up in the last window (timer lateness), in ms. */
  loopDelayMs(): number;
}

const idList = { type: "array", items: { type: "string", maxLength: 128 }, maxItems: 10000 } as const;

export function adminRoutes(deps: AdminDeps): FastifyPluginAsync {
  return async (app) => {
    const gw = app.gw;
    const leader = (): Dispatcher => {
      if (!gw.dispatcher) throw new GatewayError("GW_ERR_NOT_LEADER");
      return gw.dispatcher;
    };

    // Liveness; also says how long the event loop was last held up (a blocked loop delays every answer and renewal).
    app.get(ADMIN.health, async () => ({ ok: true, eventLoopDelayMaxMs: deps.loopDelayMs() }));
    // The link and the leader's routes carry every user's events and act for any user: replicas only.
    const expected = Buffer.from(deps.internalToken);
    app.addHook("onRequest", async (req, reply) => {
      if (!req.url.startsWith("/gateway/leader/") && !req.url.startsWith(LINK_PATH)) return;
      const got = Buffer.from(String(req.headers["x-gateway-token"] ?? ""));
      if (got.length !== expected.length || !timingSafeEqual(got, expected)) return reply.code(401).send({ error: "replicas only" });
    });
    // Ready = serving clients: every replica, leader or not (leadership only decides who dispatches).
    app.get(ADMIN.ready, async (_req, reply) => {
      const why = await deps.notReady();
      if (why) return reply.code(503).send({ ready: false, reason: why, role: gw.role });
      return { ready: true, role: gw.role };
    });
    app.get(ADMIN.scaling, async () => deps.scaling());
    app.get(ADMIN.pods, async () => (gw.dispatcher ? deps.pods() : gw.requireLeader("GET", ADMIN.pods)));
    // The drain hook: from the pod it names (or this pod's own loopback: an operator's port-forward).
    // It ends when the pod is gone or answers again (its endpoint not ready, then ready), or by DELETE.
    const drainQuery = { schema: { querystring: { type: "object", required: ["pod"], properties: { pod: { type: "string", minLength: 1, maxLength: 253 } } } } };
    const ipOf = (req: FastifyRequest) => (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    const fromNamedPod = (ip: string, pod: string) => {
      if (ip === "127.0.0.1" || ip === "::1") return true;
      const w = gw.dispatcher?.workers.get(pod);
      return w !== undefined && new URL(w.url).hostname.replace(/^\[|\]$/g, "") === ip;
    };
    app.post(ADMIN.drain, drainQuery, async (req, reply) => {
      const { pod } = req.query as { pod: string };
      // A follower passes the caller's address on, over the token-protected leader route.
      if (!gw.dispatcher) return gw.requireLeader("POST", "/gateway/leader/drain", { pod, from: ipOf(req) });
      if (!fromNamedPod(ipOf(req), pod)) return reply.code(403).send({ error: "a pod may drain itself only" });
      return { running: await gw.dispatcher.drain(pod) };
    });
    app.post("/gateway/leader/drain", { schema: { body: { type: "object", required: ["pod", "from"], properties: { pod: { type: "string" }, from: { type: "string" } } } } }, async (req, reply) => {
      const { pod, from } = req.body as { pod: string; from: string };
      if (!fromNamedPod(from, pod)) return reply.code(403).send({ error: "a pod may drain itself only" });
      return { running: await leader().drain(pod) };
    });
    app.delete(ADMIN.drain, drainQuery, async (req, reply) => {
      const { pod } = req.query as { pod: string };
      if (!gw.dispatcher) return reply.code(503).send({ error: "not the leader" });
      if (!fromNamedPod(ipOf(req), pod)) return reply.code(403).send({ error: "a pod may undo its own drain only" });
      return { undrained: gw.dispatcher.undrain(pod) };
    });

    // ---- the leader's side of the replica link ----
    app.get(LINK_PATH, { websocket: true }, (socket) => {
      if (!gw.dispatcher) {
        socket.close(1013, "not the leader");
        return;
      }
      deps.linkHub.attach(socket);
    });
    app.post("/gateway/leader/submitted", { schema: { body: { type: "object", required: ["id", "state"], properties: { id: { type: "string" }, state: { type: "string" } } } } }, async (req) => {
      leader().submitted(req.body as PromptRecord);
      return { ok: true };
    });
    app.get("/gateway/leader/queue", { schema: { querystring: { type: "object", properties: { owner: { type: "string", maxLength: 256 } } } } }, async (req) => {
      leader();
      return gw.queue((req.query as { owner?: string }).owner);
    });
    app.post("/gateway/leader/queue", { schema: { body: { type: "object", properties: { deleted: idList, cancel: { anyOf: [idList, { const: "all" }] }, owner: { type: "string", maxLength: 256 } } } } }, async (req) => {
      const d = leader();
      const body = req.body as { deleted?: string[]; cancel?: string[] | "all"; owner?: string };
      d.deleted(body.deleted ?? []);
      const cancel = (body.cancel === "all" ? [...d.open.keys()] : body.cancel ?? []).filter((id) => body.owner === undefined || d.open.get(id)?.owner === body.owner);
      return { cancelled: cancel.length ? await d.cancel(cancel) : [] };
    });
    app.post("/gateway/leader/interrupt", { schema: { body: { type: "object", properties: { ids: idList, clientId: { type: "string", maxLength: 256 }, owner: { type: "string", maxLength: 256 } } } } }, async (req) => {
      leader();
      await gw.interrupt(req.body as { ids?: string[]; clientId?: string; owner?: string });
      return { ok: true };
    });
    app.post("/gateway/leader/free", async (req) => {
      leader();
      await gw.free(req.body);
      return { ok: true };
    });
    // A discovery answer or frontend file a follower has not cached: read from one of the leader's pods.
    app.get("/gateway/leader/passthrough", { schema: { querystring: { type: "object", required: ["path"], properties: { path: { type: "string", pattern: "^/" }, cache: { type: "string" } } } } }, async (req) => {
      leader();
      const { path, cache } = req.query as { path: string; cache?: string };
      const w = gw.readyWorker();
      if (!w) throw new GatewayError("GW_ERR_NO_POD", path);
      const r = await w.client.request("GET", path);
      const type = r.headers.get("content-type") ?? "application/octet-stream";
      if (r.status === 200 && cache) {
        await gw.discovery.put(cache, r.body).catch(() => undefined);
        await gw.discovery.put(`${cache}.type`, Buffer.from(type)).catch(() => undefined);
      }
      return { status: r.status, type, body: r.body.toString("base64") };
    });
  };
}

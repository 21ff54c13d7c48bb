import fastifyWebsocket from "@fastify/websocket";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { GatewayContext } from "./context";
import { Dispatcher, type PodInfo } from "./dispatch/dispatcher";
import { Discovery } from "./discovery";
import { GatewayError } from "./protocol/errors";
import { discoveryRoutes } from "./routes/discovery";
import { fileRoutes } from "./routes/files";
import { promptRoutes } from "./routes/prompt";
import { userRoutes } from "./routes/userdata";
import { Hub, wsRoutes } from "./routes/ws";
import type { ObjectStore } from "./store/objects";
import { PrefixedStore } from "./store/objects";
import type { Store } from "./store/types";
import type { GatewayConfig } from "./config";
import { ColdStarts, NO_METRICS, Telemetry, type MetricsSink, type NodeStart } from "./telemetry";

const GATEWAY_READY = "/gateway/ready";
const GATEWAY_HEALTH = "/gateway/health";

export interface GatewayDeps {
  store: Store;
  /** One object store; the gateway uses the prefixes output/, temp/, cache/ in it. */
  objects: ObjectStore;
  /** The inputs every pod sees. */
  inputs: ObjectStore;
  /** User state (versioned bucket in AWS). */
  users: ObjectStore;
  log: Logger;
  /** Called by the gateway with the pod's image id cache key; kubernetes sets Worker.imageId through it. */
  onPodLoad?: (podKey: string, load: number) => void;
  imageIdOf?: (podKey: string) => Promise<string | undefined>;
  /** Where the metric lines go. @defaultValue none */
  metrics?: MetricsSink;
  /** Kubernetes: the node of a pod that just turned Ready, for the per-node cold-start figures. */
  nodeStartOf?: (podKey: string) => Promise<NodeStart | undefined>;
}

export interface Gateway {
  app: FastifyInstance;
  ctx: GatewayContext;
  hub: Hub;
  telemetry: Telemetry;
  /** Become the active replica: load the open prompts and start dispatching. */
  lead(): Promise<void>;
  /** Stop dispatching (lost the Lease, or shutting down). */
  standDown(): Promise<void>;
  setPods(pods: PodInfo[]): void;
  close(): Promise<void>;
}

/** buildApp(config, deps): the HTTP + WebSocket server with every route; no I/O until lead()/listen. */
export async function buildApp(config: GatewayConfig, deps: GatewayDeps): Promise<Gateway> {
  const log = deps.log;
  const files = {
    output: new PrefixedStore(deps.objects, "output/"),
    temp: new PrefixedStore(deps.objects, "temp/"),
    input: deps.inputs,
    user: new PrefixedStore(deps.users, "user/"),
  };
  const discovery = new Discovery(new PrefixedStore(deps.objects, "cache/"), log.child({ component: "discovery" }));
  const ctx = new GatewayContext(deps.store, files, discovery, log, config.maxUploadMb * 1024 * 1024);
  const hub = new Hub({ pingMs: config.wsPingSeconds * 1000, keepaliveMs: config.wsKeepaliveSeconds * 1000, maxUploadBytes: ctx.maxUploadBytes, queueRemaining: () => ctx.dispatcher?.queueRemaining() ?? 0 });
  let pods: PodInfo[] = [];
  let lastScaling = { prompts: 0, waiting: 0, running: 0 };
  const metrics = deps.metrics ?? NO_METRICS;
  const coldStarts = new ColdStarts(new PrefixedStore(deps.objects, "metrics/"), config.coldStartBudgetSeconds, log.child({ component: "cold-starts" }));
  const telemetry = new Telemetry({ clusterName: config.clusterName, sink: metrics, coldStarts, log: log.child({ component: "telemetry" }) });
  let snapshotTimer: NodeJS.Timeout | undefined;
  const snapshot = async () => {
    const d = ctx.dispatcher;
    if (!d) return;
    try {
      const c = await deps.store.counts();
      telemetry.snapshot({ waiting: c.waiting, running: c.running, websocketClients: hub.count(), readyPods: [...d.workers.values()].filter((w) => w.ready).map((w) => w.key) });
    } catch (err: unknown) {
      log.warn({ err: (err as Error).message }, "metrics snapshot skipped: the store did not answer");
    }
  };

  const app: FastifyInstance = Fastify({ loggerInstance: log as unknown as FastifyBaseLogger, bodyLimit: ctx.maxUploadBytes, return503OnClosing: true });
  await app.register(fastifyWebsocket, { options: { maxPayload: 1024 * 1024 } });
  // ComfyUI parses bodies itself whatever the Content-Type says (the saintno SDK sends none).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: unknown, req, reply) => {
    if (err instanceof GatewayError) {
      req.log.info({ code: err.code }, err.message);
      return reply.code(err.status).send(err.body());
    }
    const e = err as { code?: string; statusCode?: number; message?: string };
    if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE" || e.statusCode === 413) return reply.code(413).send({ error: { type: "request_too_large", message: `Request body larger than ${config.maxUploadMb} MB`, details: "", extra_info: {} }, node_errors: {} });
    if (e.code === "GW_ERR_PROMPT_TOO_LARGE") return reply.code(413).send(new GatewayError("GW_ERR_PROMPT_TOO_LARGE", e.message).body());
    if (typeof e.statusCode === "number" && e.statusCode < 500) return reply.code(e.statusCode).send({ error: e.message });
    req.log.error({ err }, "request failed");
    return reply.code(500).send({ error: "internal error" });
  });

  // Probes are not answers to clients: a standby's 503 on /gateway/ready is how it stays out of the ALB.
  app.addHook("onResponse", async (req, reply) => {
    if (req.url !== GATEWAY_READY && req.url !== GATEWAY_HEALTH) telemetry.response(reply.statusCode);
  });
  app.get(GATEWAY_HEALTH, async () => ({ ok: true }));
  app.get(GATEWAY_READY, async (_req, reply) => {
    if (ctx.closing) return reply.code(503).send({ ready: false, reason: "shutting down" });
    if (!ctx.leader) return reply.code(503).send({ ready: false, reason: "standby" });
    try {
      await deps.store.getMeta("podReadyAt");
    } catch (err: unknown) {
      return reply.code(503).send({ ready: false, reason: `store: ${(err as Error).message}` });
    }
    return { ready: true, leader: true };
  });
  // KEDA's figure: from the store so every replica answers the same; never an error status.
  app.get("/gateway/scaling", async () => {
    try {
      const c = await deps.store.counts();
      lastScaling = { prompts: c.waiting + c.running, waiting: c.waiting, running: c.running };
    } catch (err: unknown) {
      log.warn({ err: (err as Error).message }, "scaling figure from the store failed; answering the last one");
    }
    return lastScaling;
  });
  app.get("/gateway/pods", async () => {
    const ws = [...(ctx.dispatcher?.workers.values() ?? [])];
    return {
      ready: ws.filter((w) => w.ready).length,
      pods: ws.map((w) => ({ pod: w.key, ready: w.ready, terminating: w.terminating, prompts: [...w.slots.keys()] })),
      coldStart: coldStarts.estimate(Date.now()),
    };
  });
  app.post("/gateway/drain", async (req) => {
    ctx.requireLeader();
    const pod = (req.query as Record<string, string>).pod;
    if (!pod) throw new GatewayError("GW_ERR_NOT_FOUND", "pod query parameter required");
    return { running: await ctx.dispatcher!.drain(pod) };
  });

  ctx.onAccepted = () => telemetry.promptAccepted();
  promptRoutes(app, ctx);
  fileRoutes(app, ctx);
  userRoutes(app, ctx);
  discoveryRoutes(app, ctx);
  wsRoutes(app, hub);

  let closing: Promise<void> | undefined;
  const gw: Gateway = {
    app,
    ctx,
    hub,
    telemetry,
    async lead() {
      if (ctx.dispatcher) return;
      await discovery.load();
      await coldStarts.load();
      telemetry.resetCounters(); // a former standby's counts are not the leader's figures
      const d = new Dispatcher({
        store: deps.store, files, sink: hub, log: log.child({ component: "dispatch" }), maxAttempts: config.maxAttempts,
        startupDeadlineMs: config.startupDeadlineSeconds * 1000, stallMs: config.stallSeconds * 1000, historyTtlSeconds: config.historyTtlDays * 86400,
        pushInputs: config.mode === "local", onPodLoad: deps.onPodLoad,
        orphanMs: config.orphanSeconds * 1000,
        observer: telemetry,
        onPodReady: (w) => {
          void (async () => {
            if (deps.imageIdOf) w.imageId = await deps.imageIdOf(w.key).catch(() => undefined);
            await discovery.refresh(w);
          })();
          if (deps.nodeStartOf) {
            deps.nodeStartOf(w.key).then(
              (n) => n && telemetry.nodeStarted(n, w.key),
              (err: unknown) => log.warn({ pod: w.key, err: (err as Error).message }, "node start times not read"),
            );
          }
        },
      });
      await d.start();
      ctx.dispatcher = d;
      ctx.leader = true;
      d.setPods(pods);
      hub.queueChanged(d.queueRemaining());
      snapshotTimer = setInterval(() => void snapshot(), config.metricsIntervalSeconds * 1000);
      snapshotTimer.unref();
    },
    async standDown() {
      if (snapshotTimer) clearInterval(snapshotTimer);
      snapshotTimer = undefined;
      ctx.leader = false;
      const d = ctx.dispatcher;
      ctx.dispatcher = undefined;
      await d?.stop();
    },
    setPods(p) {
      pods = p;
      ctx.dispatcher?.setPods(p);
    },
    close() {
      closing ??= (async () => {
        ctx.closing = true;
        await gw.standDown();
        hub.close();
        await app.close();
        await metrics.close();
      })();
      return closing;
    },
  };
  hub.start();
  return gw;
}

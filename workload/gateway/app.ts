import fastifyCompress, { type FastifyCompressOptions } from "@fastify/compress";
import fastifyMultipart from "@fastify/multipart";
import fastifyWebsocket from "@fastify/websocket";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from "fastify";
import { randomBytes } from "node:crypto";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Logger } from "pino";
import type { GatewayConfig } from "./config";
import { PATHS } from "../../contracts/gateway";
import { NO_AUDIT, type Audit } from "./audit";
import { Auth, type AuthStore } from "./auth";
import { MemoryAuthStore } from "./auth/stores";
import { Dispatcher, type PodInfo } from "./dispatch/dispatcher";
import { Discovery } from "./discovery";
import { ModelLibrary, type Lister } from "./models/library";
import { ModelRouter } from "./models/routing";
import { CACHE_PART_REFRESH_MS, cacheParts, DeletionCosts } from "./models/deletionCost";
import type { AgentInfo } from "./models/prefetch";
import { GatewayError } from "./protocol/errors";
import { fanOut, LeaderLink, LinkHub } from "./replicas/link";
import { ADMIN, adminRoutes } from "./routes/admin";
import { discoveryRoutes, staticRoutes } from "./routes/discovery";
import { fileRoutes } from "./routes/files";
import { jobRoutes } from "./routes/jobs";
import { promptRoutes } from "./routes/prompt";
import { userRoutes } from "./routes/userdata";
import { Hub, wsRoutes } from "./routes/ws";
import { Services } from "./services";
import type { ObjectStore } from "./store/objects";
import { PrefixedStore } from "./store/objects";
import type { Fence, Store } from "./store/types";
import { ColdStarts, NO_METRICS, Telemetry, type MetricsSink, type NodeStart } from "./telemetry";

/**
 * Responses compressed for clients that accept it (ComfyUI's `--enable-compress-response-body` gzips JSON
 * and text/plain, server.py `compress_body` at v0.3.64 and v0.38-era; the gateway always does, which ComfyUI's flag cannot do through
 * it): JSON, text and JavaScript (the frontend's bundles) of 1 KiB and more, as br, gzip or deflate, with
 * `Vary: Accept-Encoding`. Never media (images, video and audio are compressed already), never `/view`'s
 * octet-stream downloads, never a WebSocket (hijacked: no reply to encode). Request bodies are not
 * decompressed (a small gzip body must not become a large one past the body limit).
 */
export const COMPRESSION: FastifyCompressOptions = {
  encodings: ["br", "gzip", "deflate"],
  customTypes: /^text\/(?!event-stream)|^application\/(?:[\w.-]+\+)?json(?:;|$)|^application\/(?:x-)?javascript(?:;|$)/,
  threshold: 1024,
  globalDecompression: false,
};

/** The ALB's health check path on the public port. */
export const PUBLIC_HEALTH_PATH = PATHS.publicHealth;
/** Longest a replica serves without a reachable leader (a hand-over is at most the Lease's 15 s). */
export const NO_LEADER_GRACE_MS = 30_000;

export interface GatewayDeps {
  store: Store;
  /** Sessions, API keys and tickets. @defaultValue in memory (nothing survives the process) */
  auth?: AuthStore;
  /** One object store; the gateway uses the prefixes output/, temp/, cache/, metrics/ in it. */
  objects: ObjectStore;
  /** The inputs every pod sees. */
  inputs: ObjectStore;
  /** User state (versioned bucket in AWS). */
  users: ObjectStore;
  log: Logger;
  /**
   * Called with a pod's controller.kubernetes.io/pod-deletion-cost when it changes (Kubernetes patches the
   * annotation): 1000 per prompt in its queue, plus 0-999 for what its node's model cache holds of what
   * waiting prompts need (models/deletionCost.ts). A rejected promise: the cost is sent again at the next refresh.
   */
  onPodCost?: (podKey: string, cost: number) => void | Promise<void>;
  imageIdOf?: (podKey: string) => Promise<string | undefined>;
  /** Where the metric lines go. @defaultValue none */
  metrics?: MetricsSink;
  /** Kubernetes: the node of a pod that just turned Ready, for the per-node cold-start figures. */
  nodeStartOf?: (podKey: string) => Promise<NodeStart | undefined>;
  /** Where the audit trail goes. @defaultValue none */
  audit?: Audit;
  /** Lists the models bucket (GATEWAY_MODELS_BUCKET): the model library. @defaultValue none: the pods' own model lists */
  modelsLister?: Lister;
}

export interface Gateway {
  /** ComfyUI's protocol: what the ALB (and local clients) reach. */
  app: FastifyInstance;
  /** The internal port: probes, KEDA's figure, the drain hook, the replica link. */
  admin: FastifyInstance;
  services: Services;
  hub: Hub;
  telemetry: Telemetry;
  /**
   * Become the leader with this fencing token: load the open prompts (stamping them) and dispatch while
   * `isLeader()` holds. Resolves once dispatching, or early when leadership was lost meanwhile.
   */
  lead(fence: Fence, isLeader?: () => boolean): Promise<void>;
  /** Stop dispatching (lost the Lease, fenced out, shutting down); clients stay connected. */
  standDown(): Promise<void>;
  /** Follow the leader at this internal URL (undefined: none known); ignored while leading. */
  follow(leaderUrl: string | undefined): void;
  setPods(pods: PodInfo[]): void;
  /** The model agents by node (Kubernetes); one whose node has no Ready pod fetches a waiting prompt's files ahead. */
  setAgents(agents: AgentInfo[]): void;
  /** The models bucket's index (undefined without GATEWAY_MODELS_BUCKET); `start()` lists it, then keeps listing. */
  library: ModelLibrary | undefined;
  close(): Promise<void>;
}

/** buildApp(config, deps): the public and internal HTTP + WebSocket servers; no I/O until lead()/listen. */
export async function buildApp(config: GatewayConfig, deps: GatewayDeps): Promise<Gateway> {
  const log = deps.log;
  const files = {
    output: new PrefixedStore(deps.objects, "output/"),
    temp: new PrefixedStore(deps.objects, "temp/"),
    input: deps.inputs,
    user: new PrefixedStore(deps.users, "user/"),
  };
  const library = deps.modelsLister && config.modelsBucket ? new ModelLibrary(deps.modelsLister, log.child({ component: "models" }), config.modelsListSeconds * 1000) : undefined;
  const discovery = new Discovery(new PrefixedStore(deps.objects, "cache/"), log.child({ component: "discovery" }), library);
  const gw = new Services(deps.store, files, discovery, log, config.maxUploadMb * 1024 * 1024);
  const hub = new Hub({
    pingMs: config.wsPingSeconds * 1000, keepaliveMs: config.wsKeepaliveSeconds * 1000, maxUploadBytes: gw.maxUploadBytes,
    queueRemaining: () => gw.dispatcher?.queueRemaining() ?? gw.remaining ?? 0,
  });
  const linkHub = new LinkHub();
  // One process (local mode) has no other replica to share it with: a random one keeps its link closed.
  const internalToken = config.internalToken ?? randomBytes(32).toString("base64url");
  gw.link = new LeaderLink(
    {
      event: (c, m, b) => hub.toClient(c, m, { broadcastIfNoClient: b }),
      queue: (n) => {
        gw.remaining = n;
        hub.queueChanged(n);
      },
      discovery: (v) => discovery.useVersion(v, true),
    },
    log.child({ component: "link" }),
    internalToken,
  );
  discovery.onVersion = (v) => linkHub.discoveryChanged(v);
  let pods: PodInfo[] = [];
  let agents: AgentInfo[] = [];
  let router: ModelRouter | undefined;
  let lastScaling = { prompts: 0, waiting: 0, running: 0 };
  const metrics = deps.metrics ?? NO_METRICS;
  const coldStarts = new ColdStarts(new PrefixedStore(deps.objects, "metrics/"), config.coldStartBudgetSeconds, log.child({ component: "cold-starts" }));
  const telemetry = new Telemetry({ clusterName: config.clusterName, sink: metrics, coldStarts, log: log.child({ component: "telemetry" }) });
  let snapshotTimer: NodeJS.Timeout | undefined;
  // The pods' deletion costs (Kubernetes): the load part at every change, the cache part recomputed on a
  // timer, at most every CACHE_PART_REFRESH_MS, not on every placement or inventory read.
  let costs: DeletionCosts | undefined;
  let costTimer: NodeJS.Timeout | undefined;
  const refreshCosts = () => {
    const d = gw.dispatcher;
    if (!d || !costs) return;
    const ws = [...d.workers.values()];
    const waiting = router ? [...d.open.values()].filter((r) => r.state === "queued") : [];
    costs.refresh(ws.map((w) => w.key), router ? cacheParts(router.scaleInHint(ws, waiting)) : new Map());
  };
  const snapshot = async () => {
    const d = gw.dispatcher;
    if (!d) return;
    try {
      const c = await deps.store.counts();
      // The cache figures only with a model library (the router reads the agents); taken once the line is sure to be written.
      const modelCache = router?.cache.take(Date.now());
      telemetry.snapshot({ waiting: c.waiting, running: c.running, websocketClients: hub.count(), readyPods: [...d.workers.values()].filter((w) => w.ready).map((w) => w.key), ...(modelCache ? { modelCache } : {}) });
    } catch (err: unknown) {
      log.warn({ err: (err as Error).message }, "metrics snapshot skipped: the store did not answer");
    }
  };
  const podsView = () => {
    const ws = [...(gw.dispatcher?.workers.values() ?? [])];
    return {
      ready: ws.filter((w) => w.ready).length,
      pods: ws.map((w) => ({ pod: w.key, ready: w.ready, terminating: w.terminating, ...(w.suspect ? { suspect: w.suspect } : {}), prompts: [...w.slots.keys()] })),
      coldStart: coldStarts.estimate(Date.now()),
      // Which pods' node caches hold the least of what waiting prompts need, with the deletion cost that tells the ReplicaSet.
      ...(router && gw.dispatcher
        ? { scaleIn: router.scaleInHint(ws, [...gw.dispatcher.open.values()].filter((r) => r.state === "queued")).map((h) => {
          const cost = costs?.current(h.pod);
          return cost === undefined ? h : { ...h, deletionCost: cost };
        }) }
        : {}),
    };
  };
  gw.gpuStatus = async () => {
    if (gw.dispatcher) return podsView();
    const v = await gw.askLeader<ReturnType<typeof podsView>>("GET", ADMIN.pods);
    return v ?? { ready: 0, pods: [], coldStart: coldStarts.estimate(Date.now()) };
  };

  const errorHandler = (app: FastifyInstance) =>
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

  /**
   * Serving = not closing, the store answers, and either leading, following a leader, or without one for
   * less than NO_LEADER_GRACE_MS (a hand-over takes at most the Lease's 15 s). Past that, this replica's
   * clients could wait forever for events: it reports not ready and closes their sockets with 1012
   * (service restart) so they reconnect through the load balancer to a replica that serves.
   */
  let noLeaderSince: number | undefined = Date.now();
  const notReady = async (): Promise<string | undefined> => {
    if (gw.closing) return "shutting down";
    if (noLeaderSince !== undefined && Date.now() - noLeaderSince > NO_LEADER_GRACE_MS) return `no gateway leader for ${Math.round((Date.now() - noLeaderSince) / 1000)} s`;
    try {
      await deps.store.getMeta("podReadyAt");
    } catch (err: unknown) {
      return `store: ${(err as Error).message}`;
    }
    return undefined;
  };
  let clientsClosed = false;
  const leaderWatch = setInterval(() => {
    if (gw.dispatcher || gw.link?.up) {
      noLeaderSince = undefined;
      clientsClosed = false;
      return;
    }
    noLeaderSince ??= Date.now();
    if (!clientsClosed && Date.now() - noLeaderSince > NO_LEADER_GRACE_MS) {
      clientsClosed = true;
      log.warn({ seconds: Math.round((Date.now() - noLeaderSince) / 1000) }, "no gateway leader reachable: closing client sockets so they reconnect elsewhere");
      hub.disconnectAll(1012);
    }
  }, 1000);
  leaderWatch.unref();

  // ---- the public server: ComfyUI's protocol ----
  const app: FastifyInstance = Fastify({ loggerInstance: log as unknown as FastifyBaseLogger, bodyLimit: gw.maxUploadBytes, return503OnClosing: true });
  app.decorate("gw", gw);
  await app.register(fastifyWebsocket, { options: { maxPayload: 1024 * 1024 }, preClose: closeSocketsPromptly });
  // ComfyUI parses bodies itself whatever the Content-Type says (the saintno SDK sends none); multipart is streamed.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));
  await app.register(fastifyMultipart);
  await app.register(fastifyCompress, COMPRESSION);
  errorHandler(app);
  app.addHook("onResponse", async (_req, reply) => telemetry.response(reply.statusCode));
  // Sign-in and the same-origin rule before any route (auth/index.ts).
  const auth = new Auth(
    {
      mode: config.auth as "none" | "keys" | "oidc",
      ...(config.oidcIssuer && config.oidcClientId && config.publicUrl
        ? { oidc: { issuer: config.oidcIssuer, clientId: config.oidcClientId, clientSecret: config.oidcClientSecret, publicUrl: config.publicUrl, scopes: config.oidcScopes, groupsClaim: config.oidcGroupsClaim, adminGroup: config.oidcAdminGroup } }
        : {}),
      ...(config.oidcFile ? { oidcFile: config.oidcFile } : {}),
      sessionIdleMinutes: config.sessionIdleMinutes, sessionMaxHours: config.sessionMaxHours, refreshMinutes: config.sessionRefreshMinutes,
    },
    deps.auth ?? new MemoryAuthStore(),
    log.child({ component: "auth" }),
  );
  await auth.start();
  const audit = deps.audit ?? NO_AUDIT;
  const from = (req: FastifyRequest) => [req.socket.remoteAddress, req.headers["x-forwarded-for"]].filter(Boolean).join(" via ");
  auth.register(app, {
    onEvent: (req, action, user, detail) => audit.record({ user, via: "session", action, from: from(req), ...(detail ? { detail } : {}) }),
    onDenied: (req, why, caller) => audit.record({ user: caller?.userId ?? "-", via: caller?.kind ?? "-", action: `${req.method} ${req.url.split("?")[0]}`, from: from(req), status: 403, detail: { refused: why } }),
  });
  // The audit trail: one line per state change a caller made (what routes call a target, or the route's params).
  app.decorateRequest("auditTarget", undefined as unknown as string);
  app.addHook("onResponse", async (req, reply) => {
    if (!req.caller || !(["POST", "PUT", "PATCH", "DELETE"] as string[]).includes(req.method) || reply.statusCode >= 400) return;
    const params = req.params as Record<string, string> | undefined;
    const target = req.auditTarget ?? (params && Object.keys(params).length ? Object.values(params).join(" → ") : undefined);
    audit.record({ user: req.caller.userId, via: req.caller.kind, action: `${req.method} ${req.routeOptions.url ?? req.url.split("?")[0]}`, ...(target ? { target } : {}), from: from(req), status: reply.statusCode });
  });
  // Every ComfyUI route bare and under /api (protocol §1).
  for (const prefix of ["", "/api"]) {
    await app.register(async (scope) => {
      await scope.register(promptRoutes);
      await scope.register(fileRoutes);
      await scope.register(userRoutes);
      await scope.register(discoveryRoutes);
      await scope.register(wsRoutes(hub));
    }, { prefix });
  }
  // ComfyUI's jobs API is declared with its /api prefix (no bare /jobs): served once, studio-wide.
  await app.register(jobRoutes);
  // The ALB's health check (the traffic port; /gateway/* is internal): 200 while this replica serves.
  app.get(PUBLIC_HEALTH_PATH, async (_req, reply) => {
    const why = await notReady();
    return why ? reply.code(503).send({ ok: false }) : { ok: true };
  });
  staticRoutes(app);

  // ---- the internal server ----
  const admin: FastifyInstance = Fastify({ loggerInstance: log.child({ port: "internal" }) as unknown as FastifyBaseLogger, bodyLimit: 16 * 1024 * 1024, return503OnClosing: true });
  admin.decorate("gw", gw);
  await admin.register(fastifyWebsocket, { options: { maxPayload: 1024 * 1024 }, preClose: closeSocketsPromptly });
  errorHandler(admin);
  // The event loop's lateness over 10 s windows (the previous window's maximum is what /gateway/health says).
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let lastWindowMaxMs = 0;
  const loopWindow = setInterval(() => {
    lastWindowMaxMs = loop.max / 1e6;
    loop.reset();
  }, 10_000);
  loopWindow.unref();
  await admin.register(adminRoutes({
    linkHub,
    internalToken,
    loopDelayMs: () => Math.round(Math.max(lastWindowMaxMs, loop.max / 1e6)),
    pods: podsView,
    // KEDA's figure: from the store so every replica answers the same; never an error status.
    scaling: async () => {
      try {
        const c = await deps.store.counts();
        lastScaling = { prompts: c.waiting + c.running, waiting: c.waiting, running: c.running };
      } catch (err: unknown) {
        log.warn({ err: (err as Error).message }, "scaling figure from the store failed; answering the last one");
      }
      return lastScaling;
    },
    notReady,
  }));

  gw.onAccepted = () => telemetry.promptAccepted();
  let leadership = 0;
  let closing: Promise<void> | undefined;
  const g: Gateway = {
    app,
    admin,
    services: gw,
    hub,
    telemetry,
    async lead(fence, isLeader = () => true) {
      if (gw.dispatcher) return;
      const mine = ++leadership;
      gw.link?.follow(undefined);
      // Caches only: a failed read leaves them empty (the next pod refresh fills them), leading goes on.
      await discovery.load().catch((err: unknown) => log.warn({ err: (err as Error).message }, "discovery cache not loaded"));
      await coldStarts.load().catch((err: unknown) => log.warn({ err: (err as Error).message }, "cold-start history not loaded"));
      if (mine !== leadership || !isLeader()) return;
      telemetry.resetCounters(); // a former follower's counts are not the leader's figures
      router = library ? new ModelRouter({ library, inputs: () => discovery.modelInputs(), affinityMs: config.modelAffinitySeconds * 1000, routing: config.modelRouting === "on", log: log.child({ component: "models" }) }) : undefined;
      const podCosts = deps.onPodCost ? new DeletionCosts(deps.onPodCost) : undefined;
      costs = podCosts;
      const d = new Dispatcher({
        models: router ? { router, agentToken: config.modelsAgentToken } : undefined,
        store: deps.store, fence, files, sink: fanOut(hub, linkHub), log: log.child({ component: "dispatch", epoch: fence.epoch }), maxAttempts: config.maxAttempts,
        startupDeadlineMs: config.startupDeadlineSeconds * 1000, stallMs: config.stallSeconds * 1000, historyTtlSeconds: config.historyTtlDays * 86400,
        pushInputs: config.mode === "local", onPodLoad: podCosts ? (pod, load) => podCosts.load(pod, load) : undefined, orphanMs: config.orphanSeconds * 1000,
        // Metrics, and the audit line of every ending: whose prompt, how it ended, the GPU-seconds it used.
        observer: {
          queueState: (st) => telemetry.queueState(st),
          started: (r, now) => telemetry.started(r, now),
          finished: (r, history, startedAt, now) => {
            telemetry.finished(r, history, startedAt, now);
            const gpuSeconds = startedAt !== undefined ? Math.round((now - startedAt) / 100) / 10 : 0;
            audit.record({ user: r.owner, via: "gateway", action: "prompt finished", target: r.id, detail: { outcome: history.status.status_str, gpuSeconds, attempt: r.attempt } });
          },
        },
        bodyCacheBytes: config.promptCacheMb * 1024 * 1024,
        isLeader,
        onFencedOut: () => void g.standDown(),
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
      // Set before the (slow) load, so a stand-down while loading stops this dispatcher.
      gw.dispatcher = d;
      try {
        await d.start();
      } catch (err: unknown) {
        if (gw.dispatcher === d) gw.dispatcher = undefined;
        await d.stop();
        throw err;
      }
      if (gw.dispatcher !== d) return;
      d.setPods(pods);
      d.setAgents(agents);
      hub.queueChanged(d.queueRemaining());
      linkHub.queueChanged(d.queueRemaining());
      snapshotTimer = setInterval(() => void snapshot(), config.metricsIntervalSeconds * 1000);
      snapshotTimer.unref();
      if (podCosts) {
        costTimer = setInterval(refreshCosts, CACHE_PART_REFRESH_MS);
        costTimer.unref();
      }
      log.info({ epoch: fence.epoch, open: d.queueRemaining() }, "leading: dispatching");
    },
    async standDown() {
      leadership++;
      if (snapshotTimer) clearInterval(snapshotTimer);
      snapshotTimer = undefined;
      if (costTimer) clearInterval(costTimer);
      costTimer = undefined;
      costs = undefined;
      const d = gw.dispatcher;
      gw.dispatcher = undefined;
      // Followers reconnect to whoever leads next; this replica's own clients stay.
      linkHub.close();
      await d?.stop();
    },
    follow(url) {
      if (!gw.dispatcher) gw.link?.follow(url);
    },
    setPods(p) {
      pods = p;
      gw.dispatcher?.setPods(p);
    },
    setAgents(a) {
      agents = a;
      gw.dispatcher?.setAgents(a);
    },
    library,
    close() {
      closing ??= (async () => {
        gw.closing = true;
        auth.stop();
        library?.stop();
        clearInterval(leaderWatch);
        clearInterval(loopWindow);
        loop.disable();
        await g.standDown();
        gw.link?.stop();
        hub.close();
        await Promise.all([closeWithin(app, HTTP_CLOSE_GRACE_MS), closeWithin(admin, HTTP_CLOSE_GRACE_MS)]);
        await metrics.close();
        await audit.close();
      })();
      return closing;
    },
  };
  hub.start();
  return g;
}

/**
 * How long a closing gateway lets HTTP responses in flight finish before it cuts their connections.
 * The HTTP server's close waits for every connection with a request in flight, and a response whose
 * client stopped reading (a large /view to a stalled or vanished browser tab, an SDK that never
 * consumes a body) never finishes: without a bound one such client holds the shutdown until the pod
 * is killed (terminationGracePeriodSeconds 30, gatewayDeployment.ts), and was seen holding a test's
 * gateway past a minute under load. Five seconds lets a response that is moving finish; new
 * requests are already answered 503 (return503OnClosing) and go to the other replica.
 */
export const HTTP_CLOSE_GRACE_MS = 5000;

/** Fastify's close, with the connections still open after `graceMs` cut (in-flight responses end there). */
async function closeWithin(server: FastifyInstance, graceMs: number): Promise<void> {
  const cut = setTimeout(() => server.server.closeAllConnections(), graceMs);
  cut.unref();
  try {
    await server.close();
  } finally {
    clearTimeout(cut);
  }
}

/**
 * Closing the server: every WebSocket client is told (1001, unless the hub already sent its 1012) and
 * cut a second later if it has not answered. The plugin's default only starts the close handshake, and
 * the HTTP server's close then waits for each socket, which ws ends only after its 30 s close timeout
 * for a client that does not answer (one that stopped reading, or a busy process): seen holding a
 * gateway's shutdown past a minute under load.
 */
function closeSocketsPromptly(this: FastifyInstance, done: () => void): void {
  const server = this.websocketServer;
  for (const client of server.clients) {
    client.close(1001, "gateway shutting down");
    setTimeout(() => client.terminate(), 1000).unref();
  }
  server.close(() => done());
}

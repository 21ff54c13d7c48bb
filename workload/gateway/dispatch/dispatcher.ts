import type { Logger } from "pino";
import type WebSocket from "ws";
import type { ObjectStore } from "../store/objects";
import type { Fence, HistoryEntry, PromptBody, PromptMeta, PromptRecord, Store } from "../store/types";
import { fileRefs, ownerPrefix, rewriteOutput, rewriteOutputs, storeKey, type FileRef } from "../protocol/outputs";
import { Ledger } from "./ledger";
import { podClientId } from "./podClient";
import { clientKey, fairOrder, pickNext } from "./scheduler";
import { Worker, type Slot, type WorkerEvents } from "./worker";
import { AgentClient, AgentUnreachable, EnsureFailed } from "../models/agentClient";
import type { ModelRouter } from "../models/routing";
import { Prefetcher, type AgentInfo } from "../models/prefetch";

/** Whose sockets an event is for: the prompt's owner, and the client id it was submitted with (null: every socket of the owner). */
export interface Recipient { owner: string; clientId: string | null }

/** Where client-facing events go (the WebSocket hub, and through the replica link every other replica's). */
export interface EventSink {
  toClient(to: Recipient, message: string | Buffer, opts?: { broadcastIfNoClient?: boolean }): void;
  queueChanged(remaining: number): void;
}

const to = (r: PromptMeta): Recipient => ({ owner: r.owner, clientId: r.clientId });

export interface PodInfo {
  key: string;
  url: string;
  ready: boolean;
  terminating: boolean;
  /** The model agent of the pod's node (local mode: `--models-agent`; kubernetes: the agent on the pod's node). */
  agentUrl?: string;
  /** The node it runs on (kubernetes: the EndpointSlice endpoint's nodeName). */
  node?: string;
}

/** A prompt's hold on its model files lasts this long unless renewed (a crashed leader cannot pin a cache for long). */
export const HOLD_TTL_SECONDS = 900;
/** Holds of running and buffered prompts are renewed this often. */
const HOLD_RENEW_MS = 300_000;
/** A prompt whose fetch failed for a reason that may pass (no space yet, S3 hiccup) is placed again after this. */
const FETCH_RETRY_MS = 2000;

/** What the leader's telemetry hears from the dispatcher (metrics and cold starts); every call is fire-and-forget. */
export interface DispatchObserver {
  /** Each second and on every new prompt: is any pod ready, since when does the oldest prompt wait, how many are open. */
  queueState(s: { anyReady: boolean; oldestQueuedAt: number | undefined; open: number }, now: number): void;
  /** A prompt's run began on a pod (execution_start, or found running there). */
  started(r: PromptMeta, now: number): void;
  /** A prompt's completion was written; `startedAt` is the start of the run that ended it, when it ran. */
  finished(r: PromptMeta, history: HistoryEntry, startedAt: number | undefined, now: number): void;
}

export interface DispatcherOptions {
  store: Store;
  /** This leadership's fencing token (every store write carries it). */
  fence: Fence;
  /** outputs, temp previews and inputs, by their type names. */
  files: { output: ObjectStore; temp: ObjectStore; input: ObjectStore };
  sink: EventSink;
  log: Logger;
  maxAttempts: number;
  startupDeadlineMs: number;
  /** No sign of progress from a pod holding prompts for this long: it is hung (see Worker.suspect). */
  stallMs: number;
  historyTtlSeconds: number;
  /** Local mode: copy the prompt's input files to the pod before dispatch (no shared input bucket). */
  pushInputs: boolean;
  /** A dispatched prompt whose pod is not among the pods for this long runs again elsewhere. */
  orphanMs: number;
  /** Called when a pod's load changes (pod-deletion-cost). */
  onPodLoad?: (podKey: string, load: number) => void;
  onPodReady?: (w: Worker) => void;
  observer?: DispatchObserver;
  /** Still the leader (the Lease's renew deadline not passed)? Checked before every placement. @defaultValue always */
  isLeader?: () => boolean;
  /** A record carries a newer leader's epoch: stand down. */
  onFencedOut?: () => void;
  /** Byte budget of the open prompts' bodies in memory. @defaultValue 64 MiB */
  bodyCacheBytes?: number;
  /** Dispatch by model and fetch before run (a models bucket is configured). */
  models?: { router: ModelRouter; agentToken?: string };
  /** Attempts to copy one output file from its pod before the prompt ends naming it. @defaultValue 3 */
  copyAttempts?: number;
  /** How often prompts accepted by other replicas are looked up in the store (their notification may be lost). @defaultValue 5000 */
  sweepMs?: number;
  now?: () => number;
}

const j = (type: string, data: unknown) => JSON.stringify({ type, data });
const TERMINAL = new Set(["execution_success", "execution_error", "execution_interrupted"]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The leader's engine: places open prompts on ready pods (one running + one buffered each, fair across
 * clients, without waiting for each other), relays each pod's events to the submitting client, copies
 * outputs into the store and ends each prompt once. Every state change goes through the Ledger.
 */
export class Dispatcher implements WorkerEvents {
  readonly ledger: Ledger;
  readonly workers = new Map<string, Worker>();
  private readonly chains = new Map<Worker, Promise<void>>();
  /** When each user and each client was last served (fair share); pruned to those with open prompts. */
  private readonly lastServed = { users: new Map<string, number>(), clients: new Map<string, number>() };
  /** Dispatched prompts no worker holds (their pod is not among the pods), since when. */
  private readonly orphanSince = new Map<string, number>();
  /** Prompts whose claim is in flight. */
  private readonly claiming = new Set<string>();
  /** Pods drained by the hook, and whether their endpoint has gone not ready since (then ready again = undrained). */
  private readonly drained = new Map<string, boolean>();
  /** Pods with a periodic check (reconcile, stall, probe) queued or running. */
  private readonly checking = new Set<Worker>();
  private readonly o: DispatcherOptions;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private stopped = false;
  private lastPodReadyAt = 0;
  private lastSweepAt = 0;
  private sweepFrom = 0;
  /** When the current run of each open prompt began (for its run time). */
  private readonly startedAt = new Map<string, number>();
  private readonly now: () => number;
  /** The last pod and model-agent lists (the cold-start prefetch looks for agents whose node has no Ready pod). */
  private pods: PodInfo[] = [];
  private agents: AgentInfo[] = [];
  private readonly prefetcher = new Prefetcher();

  constructor(opts: DispatcherOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.ledger = new Ledger({
      store: opts.store, fence: opts.fence, log: opts.log, historyTtlSeconds: opts.historyTtlSeconds, bodyCacheBytes: opts.bodyCacheBytes, now: this.now,
      onFencedOut: (id, epoch) => {
        opts.log.warn({ promptId: id, epoch, mine: opts.fence.epoch }, "a newer leader holds a prompt: standing down");
        opts.onFencedOut?.();
      },
    });
  }

  get open(): Map<string, PromptMeta> {
    return this.ledger.open;
  }

  private get leading(): boolean {
    return !this.stopped && (this.o.isLeader?.() ?? true);
  }

  async start(): Promise<void> {
    this.sweepFrom = this.now() - 60_000;
    await this.ledger.load();
    if (this.stopped) return;
    this.lastPodReadyAt = (await this.o.store.getMeta("podReadyAt")) ?? 0;
    this.timer = setInterval(() => void this.tick(), 1000);
    this.timer.unref();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all([...this.workers.values()].map((w) => w.close()));
    await Promise.all([...this.chains.values()]);
    this.workers.clear();
  }

  queueRemaining(): number {
    return this.ledger.open.size;
  }

  /** The pod set from the pod source (EndpointSlices or --comfyui URLs). */
  setPods(pods: PodInfo[]): void {
    if (this.stopped) return;
    this.pods = pods;
    const seen = new Set<string>();
    for (const p of pods) {
      seen.add(p.key);
      let w = this.workers.get(p.key);
      if (w && w.url !== p.url) {
        this.removeWorker(w, "pod address changed");
        w = undefined;
      }
      if (!w) {
        if (!p.ready && !p.terminating) continue;
        w = new Worker(p.key, p.url, podClientId(p.key, this.o.fence.epoch), this, this.o.log, this.now());
        this.workers.set(p.key, w);
        this.adopt(w);
        w.start();
      }
      if (this.o.models && (w.agent?.baseUrl ?? undefined) !== p.agentUrl) {
        w.agent = p.agentUrl ? new AgentClient(p.agentUrl.replace(/\/$/, ""), this.o.models.agentToken) : undefined;
        this.o.models.router.nodes.delete(w.key);
        if (w.agent) {
          // A pod starting on a node whose agent fetched ahead: placed by those files before its inventory is read.
          if (p.node) this.o.models.router.expect(w.key, this.prefetcher.filesOn(p.node));
          this.o.models.router.pollInventories([w], this.now());
        }
      }
      if (p.terminating && !w.terminating) {
        w.terminating = true;
        this.serial(w, () => this.unbuffer(w!));
      }
      // An explicit drain ends when the pod answers again: its endpoint went not ready (a restart) and came back.
      if (this.drained.has(w.key)) {
        if (!p.ready || p.terminating) this.drained.set(w.key, true);
        else if (this.drained.get(w.key)) this.undrain(w.key);
      }
    }
    for (const w of [...this.workers.values()]) {
      if (seen.has(w.key)) continue;
      this.drained.delete(w.key);
      this.removeWorker(w, "pod removed");
    }
  }

  /**
   * Prompts the store says run on this pod but no worker of this process placed (a gateway restart or
   * hand-over): the reconcile on connect reads what the pod runs, and a listening socket under the client
   * id they were submitted with hears their events.
   */
  private adopt(w: Worker): void {
    for (const r of this.ledger.open.values()) {
      if (r.state !== "dispatched" || r.pod !== w.key || this.workerOf(r.id)) continue;
      const podClient = r.podClient ?? w.clientId;
      w.slots.set(r.id, { id: r.id, attempt: r.attempt, podClient, started: false, lastEventAt: this.now(), submitted: true, adopted: true });
      w.listenAs(podClient);
      this.orphanSince.delete(r.id);
    }
    if (w.slots.size) this.o.onPodLoad?.(w.key, w.load);
  }

  private removeWorker(w: Worker, reason: string): void {
    this.workers.delete(w.key);
    void w.close();
    // Counted: with the pod out of sight, nothing shows that its buffered prompt did not start.
    this.serial(w, async () => {
      for (const s of [...w.slots.values()]) await this.takeBack(w, s, reason, true);
    });
  }

  /** The model agents by node (Kubernetes: their EndpointSlices); an agent whose node has no Ready pod may fetch ahead. */
  setAgents(agents: AgentInfo[]): void {
    if (this.stopped) return;
    this.agents = agents;
    this.prefetch(this.now());
  }

  /**
   * Cold-start prefetch (models/prefetch.ts): agents whose node has no Ready ComfyUI pod fetch the files of
   * the first waiting prompts, in the order fair share will place them.
   */
  private prefetch(now: number): void {
    const models = this.o.models;
    if (!models || !this.leading || this.agents.length === 0) return;
    const router = models.router;
    const open = this.ledger.open;
    const lastServed = this.lastServed;
    // Read only when some agent is cold (a generator's body runs at the first next()): most ticks have none.
    const queue = (function* () {
      const queued = [...open.values()].filter((r) => r.state === "queued");
      const users = new Map<string, number>();
      const clients = new Map<string, number>();
      for (const r of open.values()) {
        if (r.state === "queued") continue;
        users.set(r.owner, (users.get(r.owner) ?? 0) + 1);
        clients.set(clientKey(r), (clients.get(clientKey(r)) ?? 0) + 1);
      }
      yield* fairOrder(queued, { running: users, lastServed: lastServed.users }, { running: clients, lastServed: lastServed.clients });
    })();
    const ready = [...this.workers.values()].filter((w) => w.ready);
    const actions = this.prefetcher.plan({
      agents: this.agents,
      pods: this.pods,
      queue,
      needsOf: (id) => router.needsOf(id),
      whereIs: (id) => {
        const r = open.get(id);
        return r === undefined ? null : r.state === "queued" ? undefined : (r.pod ?? undefined);
      },
      heldByReady: (needs) => ready.some((w) => router.missingBytes(needs, w.key, true) === 0),
      now,
    });
    for (const a of actions) {
      const agent = new AgentClient(a.url.replace(/\/$/, ""), models.agentToken);
      const log = this.o.log.child({ promptId: a.promptId, node: a.node });
      if (a.kind === "release") {
        void agent.release(a.holdId).catch(() => undefined);
        continue;
      }
      agent.prefetch(a.files, a.holdId, a.ttlSeconds).then(
        (res) => log.info({ files: res.files.map((f) => `${f.path}: ${f.status}`) }, "fetching a waiting prompt's models ahead on a node whose ComfyUI is starting"),
        (err: unknown) => {
          log.warn({ err: (err as Error).message }, "fetch ahead refused; asking again later");
          this.prefetcher.failed(a.node, this.now());
        },
      );
    }
  }

  /** A new prompt was stored (by this or another replica): place it. */
  submitted(r: PromptRecord): void {
    if (!this.ledger.add(r)) return;
    this.o.models?.router.learn(r.id, r.prompt);
    this.o.sink.queueChanged(this.ledger.open.size);
    this.observe(this.now());
    this.kick();
  }

  /** Queued prompts a client deleted (the store write is done). */
  deleted(ids: readonly string[]): void {
    const known = ids.filter((id) => this.ledger.open.has(id));
    this.ledger.forget(known);
    for (const id of known) this.startedAt.delete(id);
    if (known.length) this.o.sink.queueChanged(this.ledger.open.size);
  }

  workerOf(promptId: string): Worker | undefined {
    for (const w of this.workers.values()) if (w.slots.has(promptId)) return w;
    return undefined;
  }

  /** ComfyUI's /queue: the running prompts, and the pending ones (a prompt buffered on a pod has not started: it is pending). */
  async queueView(): Promise<{ running: PromptMeta[]; pending: PromptMeta[]; bodies: Map<string, PromptBody> }> {
    const running: PromptMeta[] = [];
    const buffered: PromptMeta[] = [];
    const queued: PromptMeta[] = [];
    for (const m of this.ledger.open.values()) {
      if (m.state === "queued") queued.push(m);
      else {
        const slot = this.workerOf(m.id)?.slots.get(m.id);
        (slot && !slot.started && !slot.adopted ? buffered : running).push(m);
      }
    }
    queued.sort((a, b) => a.number - b.number || a.seq - b.seq);
    const pending = [...buffered, ...queued];
    return { running, pending, bodies: await this.ledger.bodiesOf([...running, ...pending].map((m) => m.id)) };
  }

  // ---- placement ---------------------------------------------------------------------------------

  /**
   * Places every prompt that has a free slot, now: each placement reserves its slot at once and its
   * claim and submit run on their own, so one slow pod or store call holds back no other placement.
   */
  kick(): void {
    const router = this.o.models?.router;
    // Prompts waiting (bounded) for a busy pod that has their model loaded: the next in fair-share order goes meanwhile.
    const waiting = new Set<string>();
    // Prompts whose model no pod has loaded, in fair-share order: they let prompts that need no model switch
    // take the free pods first; when none is left, the fairest of them switches a pod (never an idle GPU).
    const switchers: PromptMeta[] = [];
    const nowMs = this.now();
    for (;;) {
      if (!this.leading) return;
      // Prefer an empty pod so a batch spreads over every GPU before any pod gets a buffered prompt.
      let w: Worker | undefined;
      const free: Worker[] = [];
      for (const c of this.workers.values()) {
        if (c.free <= 0) continue;
        free.push(c);
        if (!w || c.load < w.load) w = c;
      }
      if (!w) return;
      const queued: PromptMeta[] = [];
      const users = new Map<string, number>();
      const clients = new Map<string, number>();
      for (const r of this.ledger.open.values()) {
        if (r.state === "queued" && !this.claiming.has(r.id)) {
          if (!waiting.has(r.id) && !router?.deferred(r.id, nowMs)) queued.push(r);
        } else {
          users.set(r.owner, (users.get(r.owner) ?? 0) + 1);
          clients.set(clientKey(r), (clients.get(clientKey(r)) ?? 0) + 1);
        }
      }
      let next = pickNext(queued, { running: users, lastServed: this.lastServed.users }, { running: clients, lastServed: this.lastServed.clients });
      let force = false;
      if (!next) {
        // The fairest switcher whose files a free pod's node holds (fetched ahead while its pod started) goes
        // first: it fetches nothing. One whose model is being fetched ahead on a node whose pod is still
        // starting waits for that pod rather than take a busy pod's second slot (at most SWITCH_PATIENCE
        // affinity bounds, as every switcher); an idle pod takes the fairest switcher regardless.
        let i = router ? switchers.findIndex((s) => router.fetchFree(s.id, free)) : 0;
        if (i < 0) i = free.some((c) => c.load === 0) ? 0 : switchers.findIndex((s) => this.prefetcher.aheadFor(router?.needsOf(s.id)) === undefined);
        if (i < 0) return;
        next = switchers.splice(i, 1)[0];
        if (!next) return;
        force = true;
      }
      if (router) {
        const c = router.choose(next, free, this.workers.values(), nowMs, router.demand(queued), force);
        if ("wait" in c || "switch" in c) {
          waiting.add(next.id);
          if ("switch" in c) switchers.push(next);
          continue;
        }
        w = c.pod;
        router.placed(next.id, w.key);
      }
      const now = this.now();
      this.claiming.add(next.id);
      this.lastServed.users.set(next.owner, now);
      this.lastServed.clients.set(clientKey(next), now);
      const slot: Slot = { id: next.id, attempt: next.attempt + 1, podClient: w.clientId, started: false, lastEventAt: now, submitted: false };
      w.slots.set(next.id, slot);
      void this.dispatch(w, slot);
    }
  }

  private async dispatch(w: Worker, slot: Slot): Promise<void> {
    // A deletion asked while this placement was in flight is answered only once it is settled: taken off
    // the pod (once it has accepted the prompt), or not placed at all (the asker then deletes it from the queue).
    let cancelScheduled = false;
    try {
      cancelScheduled = await this.place(w, slot);
    } finally {
      if (!cancelScheduled) settleCancel(slot, false);
    }
  }

  /** Claims and submits; true when a deletion asked meanwhile was scheduled to take it back off the pod. */
  private async place(w: Worker, slot: Slot): Promise<boolean> {
    const claimed = await this.ledger.claim(slot.id, w.key, w.clientId);
    this.claiming.delete(slot.id);
    if (!claimed.ok) {
      w.slots.delete(slot.id);
      // Another writer placed it: if that is a pod we hold, its worker adopts it.
      const now = claimed.now;
      if (now?.state === "dispatched" && now.pod) {
        const owner = this.workers.get(now.pod);
        if (owner && !owner.slots.has(now.id) && (await this.ledger.adopt(now.id))) this.adopt(owner);
      }
      this.kick();
      return false;
    }
    const r = claimed.value;
    slot.attempt = r.attempt;
    this.o.onPodLoad?.(w.key, w.load);
    const log = this.o.log.child({ promptId: r.id, pod: w.key, attempt: r.attempt });
    try {
      if (this.o.pushInputs) await this.pushInputs(w, r);
      if (this.o.models && w.agent && !(await this.fetchModels(w, slot, r))) return false;
      if (w.slots.get(r.id) !== slot) return false; // taken back meanwhile (pod removed)
      const extra: Record<string, unknown> = { ...r.extraData, client_id: w.clientId };
      const body: Record<string, unknown> = { prompt: r.prompt, client_id: w.clientId, prompt_id: r.id, extra_data: extra };
      if (r.extraData.__partial_execution_targets) body.partial_execution_targets = r.extraData.__partial_execution_targets;
      delete extra.__partial_execution_targets;
      const res = await w.client.json<Record<string, unknown>>("POST", "/prompt", body);
      if (w.slots.get(r.id) !== slot) return false; // taken back meanwhile (pod removed)
      if (res.status !== 200) {
        log.info({ status: res.status }, "pod refused the prompt");
        w.release(r.id);
        this.o.onPodLoad?.(w.key, w.load);
        await this.end(r, slot.attempt, this.ledger.errorEntry(r.id, `ComfyUI pod refused the prompt: ${JSON.stringify(res.json)}`));
        return false;
      }
      // A buffered prompt does not restart the stall clock of a pod that is already working on one.
      if (![...w.slots.values()].some((s) => s !== slot && s.submitted)) w.lastSignAt = this.now();
      slot.submitted = true;
      log.debug("dispatched");
      if (slot.cancelRequested) {
        this.serial(w, async () => {
          let ok = false;
          try {
            ok = await this.cancelOn(w, slot);
          } finally {
            settleCancel(slot, ok);
          }
        });
        return true;
      }
      return false;
    } catch (err: unknown) {
      log.warn({ err: (err as Error).message }, "dispatch failed; prompt goes back to the queue");
      await this.takeBack(w, slot, `dispatch to ${w.key} failed: ${(err as Error).message}`, false);
      return false;
    }
  }

  /**
   * Fetch before run: the prompt's model files are made present on the pod's node and held for it (the LRU
   * evicts no file a running or buffered prompt needs) before ComfyUI sees the prompt. The client is told,
   * in ComfyUI's own messages, which model is being fetched (a `progress_text` frame on the loader node and
   * `progress` in MB). True: go on and submit; false: the prompt was ended or taken back here.
   */
  private async fetchModels(w: Worker, slot: Slot, r: PromptRecord): Promise<boolean> {
    const router = this.o.models!.router;
    const agent = w.agent!;
    const needs = await router.needsFor(r.id, r.prompt);
    if (!needs || needs.files.length === 0) return true;
    const files = needs.files.map((f) => f.key);
    const missing = router.missing(needs, w.key);
    const log = this.o.log.child({ promptId: r.id, pod: w.key });
    let poller: NodeJS.Timeout | undefined;
    if (missing.length) {
      const total = missing.reduce((s, f) => s + f.bytes, 0);
      for (const f of missing) {
        this.o.sink.toClient(to(r), progressText(needs.nodeOf[f.key] ?? "", `fetching model ${f.key} (${formatBytes(f.bytes)}) onto this GPU node`), { broadcastIfNoClient: true });
      }
      const node = needs.nodeOf[missing[0].key] ?? null;
      const tell = (received: number) => this.o.sink.toClient(to(r), j("progress", { value: Math.round(received / 1e6), max: Math.max(1, Math.round(total / 1e6)), prompt_id: r.id, node }), { broadcastIfNoClient: true });
      tell(0);
      // The agent's inventory lists each download in flight with the bytes received so far.
      poller = setInterval(() => {
        agent.inventory().then((inv) => {
          const wanted = new Set(missing.map((f) => f.key));
          const present = inv.files.filter((f) => wanted.has(f.path)).reduce((s, f) => s + f.bytes, 0);
          tell(present + inv.fetching.filter((f) => wanted.has(f.path)).reduce((s, f) => s + f.received, 0));
        }, () => undefined);
      }, 1000);
      poller.unref();
      log.info({ files: missing.map((f) => f.key), bytes: total }, "fetching models before the prompt runs");
    }
    slot.held = { files, at: this.now() };
    try {
      const res = await agent.ensure(files, r.id, HOLD_TTL_SECONDS);
      router.present(w.key, res.files.flatMap((f) => (f.status === "present" || f.status === "fetched" ? [{ key: f.path, bytes: f.bytes }] : [])));
      if (missing.length) this.o.sink.toClient(to(r), progressText(needs.nodeOf[missing[0].key] ?? "", `models ready: ${missing.map((f) => f.key).join(", ")}`), { broadcastIfNoClient: true });
      return true;
    } catch (err: unknown) {
      if (w.slots.get(r.id) !== slot) return false; // taken back meanwhile (pod removed)
      if (err instanceof EnsureFailed && !err.retryable) {
        // A missing object, a denied one, a file larger than the node's cache: no other node does better.
        const reason = `model ${err.path ?? files.join(", ")} cannot be fetched: ${err.message} (${err.code})`;
        log.info({ code: err.code }, reason);
        w.release(r.id);
        this.o.onPodLoad?.(w.key, w.load);
        await this.end(r, slot.attempt, this.ledger.errorEntry(r.id, reason));
        return false;
      }
      // The node went away mid-fetch, or a reason that may pass (no space while other prompts hold the cache,
      // S3 hiccup): back to the queue without counting a run; it goes to another pod or here again shortly.
      const reason = err instanceof AgentUnreachable ? `model agent of ${w.key} lost during the fetch: ${err.message}` : `model fetch on ${w.key} failed: ${(err as Error).message}`;
      log.warn({ err: (err as Error).message }, "model fetch failed; the prompt goes back to the queue");
      if (err instanceof AgentUnreachable) router.nodes.delete(w.key);
      router.backOff(r.id, this.now() + FETCH_RETRY_MS);
      await this.takeBack(w, slot, reason, false);
      return false;
    } finally {
      if (poller) clearInterval(poller);
    }
  }

  private async pushInputs(w: Worker, r: PromptRecord): Promise<void> {
    for (const node of Object.values(r.prompt) as { inputs?: Record<string, unknown> }[]) {
      for (const v of Object.values(node?.inputs ?? {})) {
        if (typeof v !== "string" || v.length > 512) continue;
        const name = v.replace(/ \[input\]$/, "");
        if (name.includes("..") || name.startsWith("/")) continue;
        let data: Buffer | undefined;
        try {
          data = await this.o.files.input.get(name);
        } catch {
          continue;
        }
        if (!data) continue;
        const i = name.lastIndexOf("/");
        const form = new FormData();
        form.append("image", new Blob([new Uint8Array(data)]), i >= 0 ? name.slice(i + 1) : name);
        form.append("overwrite", "true");
        form.append("subfolder", i >= 0 ? name.slice(0, i) : "");
        const res = await w.client.request("POST", "/upload/image", form);
        if (res.status !== 200) throw new Error(`input upload of ${name} answered ${res.status}`);
      }
    }
  }

  /** The prompt leaves this pod unfinished: back to the queue (or failed past the attempt limit). */
  private async takeBack(w: Worker, slot: Slot, reason: string, countAttempt: boolean): Promise<void> {
    if (w.slots.get(slot.id) === slot) w.release(slot.id);
    this.o.onPodLoad?.(w.key, w.load);
    const r = this.ledger.open.get(slot.id);
    if (!r || r.attempt !== slot.attempt || r.state !== "dispatched") return;
    this.startedAt.delete(r.id);
    if (countAttempt && r.attempt >= this.o.maxAttempts) {
      await this.end(r, slot.attempt, this.ledger.errorEntry(r.id, `prompt failed after ${r.attempt} attempts; last: ${reason}`));
      return;
    }
    const res = await this.ledger.requeue(r.id, slot.attempt, reason, countAttempt);
    if (res.ok) this.o.log.info({ promptId: r.id, pod: w.key, reason }, "prompt queued again");
    this.kick();
  }

  /** Takes a submitted, unstarted prompt off the pod's queue; false when the pod already runs it. */
  private async removeFromPod(w: Worker, slot: Slot): Promise<boolean> {
    w.takenBack.add(slot.id);
    try {
      await w.client.request("POST", "/queue", { delete: [slot.id] }, 3000);
      const q = await w.client.json<{ queue_running: unknown[][] }>("GET", "/queue");
      if (q.json.queue_running.some((i) => i[1] === slot.id)) {
        w.takenBack.delete(slot.id);
        slot.started = true;
        return false;
      }
    } catch {
      // unreachable: it is going anyway
    }
    return true;
  }

  /** Terminating pod: its buffered prompt goes back to the queue; the running one may finish. */
  private async unbuffer(w: Worker): Promise<void> {
    for (const s of [...w.slots.values()]) {
      if (s.started || !s.submitted) continue;
      if (await this.removeFromPod(w, s)) await this.takeBack(w, s, `pod ${w.key} is terminating`, false);
    }
  }

  /** Explicit drain (POST /gateway/drain): stop dispatching, take the buffered prompt back. */
  async drain(podKey: string): Promise<string[]> {
    const w = this.workers.get(podKey);
    if (!w) return [];
    w.terminating = true;
    this.drained.set(podKey, false);
    await new Promise<void>((resolve) => this.serial(w, async () => {
      await this.unbuffer(w);
      resolve();
    }));
    return [...w.slots.keys()];
  }

  /** A drained pod that answers again (its endpoint is ready, not terminating) is back in rotation. */
  undrain(podKey: string): boolean {
    const w = this.workers.get(podKey);
    this.drained.delete(podKey);
    if (!w || !w.terminating) return false;
    w.terminating = false;
    this.kick();
    return true;
  }

  /** Queue delete of prompts that are buffered on a pod (not started): taken off the pod, then removed. */
  async cancel(ids: readonly string[]): Promise<string[]> {
    const done: string[] = [];
    await Promise.all(ids.map(async (id) => {
      const w = this.workerOf(id);
      const slot = w?.slots.get(id);
      if (!w || !slot || slot.started) return;
      if (!slot.submitted) {
        // Its claim or submit is in flight: answer once that settles (dispatch), so the queue the client
        // reads next no longer lists it.
        slot.cancelRequested = true;
        if (await new Promise<boolean>((r) => (slot.cancelWaiters ??= []).push(r))) done.push(id);
        return;
      }
      await new Promise<void>((resolve) => this.serial(w, async () => {
        if (await this.cancelOn(w, slot)) done.push(id);
        resolve();
      }));
    }));
    return done;
  }

  private async cancelOn(w: Worker, slot: Slot): Promise<boolean> {
    if (w.slots.get(slot.id) !== slot || slot.started) return false;
    if (!(await this.removeFromPod(w, slot))) return false;
    w.release(slot.id);
    this.o.onPodLoad?.(w.key, w.load);
    const res = await this.ledger.cancel(slot.id, slot.attempt);
    this.o.sink.queueChanged(this.ledger.open.size);
    this.kick();
    return res.ok;
  }

  /** /interrupt: only a prompt a pod is running (ComfyUI ignores an interrupt for one that is pending). */
  async interrupt(ids: readonly string[]): Promise<void> {
    await Promise.all(ids.map(async (id) => {
      const w = this.workerOf(id);
      if (!w || !w.slots.get(id)?.started) return;
      await w.client.request("POST", "/interrupt", { prompt_id: id }, 5000).catch((err: unknown) => this.o.log.warn({ promptId: id, err: (err as Error).message }, "interrupt failed"));
    }));
  }

  // ---- pod events ------------------------------------------------------------------------------------

  onReady(w: Worker): void {
    const now = this.now();
    this.lastPodReadyAt = now;
    void this.o.store.setMetaMax("podReadyAt", now).catch(() => undefined);
    this.o.onPodReady?.(w);
    this.kick();
  }

  onConnected(w: Worker): void {
    this.serial(w, () => this.reconcile(w));
  }

  onLost(w: Worker, reason: string): void {
    this.serial(w, async () => {
      for (const s of [...w.slots.values()]) await this.takeBack(w, s, `${reason} (${w.key})`, true);
    });
  }

  onMessage(w: Worker, data: WebSocket.RawData, isBinary: boolean): void {
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    this.serial(w, () => this.handle(w, buf, isBinary));
  }

  /**
   * Per-pod event order is kept by running each pod's handlers one after the other. Once stopped, what is
   * still queued is skipped: stopping waits only for the step in flight (each bounded by its timeouts).
   */
  private serial(w: Worker, fn: () => Promise<void>): void {
    const prev = this.chains.get(w) ?? Promise.resolve();
    const next = prev.then(() => (this.stopped ? undefined : fn())).catch((err: unknown) => this.o.log.error({ err, pod: w.key }, "pod event handling failed"));
    this.chains.set(w, next);
    void next.then(() => {
      if (this.chains.get(w) === next) this.chains.delete(w);
    });
  }

  private async handle(w: Worker, buf: Buffer, isBinary: boolean): Promise<void> {
    if (isBinary) {
      const type = buf.length >= 4 ? buf.readUInt32BE(0) : 0;
      let pid = w.runningId;
      if (type === 4 && buf.length >= 8) {
        try {
          const meta = JSON.parse(buf.subarray(8, 8 + buf.readUInt32BE(4)).toString("utf8")) as { prompt_id?: string };
          pid = meta.prompt_id ?? pid;
        } catch {
          /* keep running id */
        }
      }
      if (!pid || !w.slots.has(pid)) return;
      w.lastSignAt = this.now();
      // Only types clients understand (protocol §3.2); type 4 needs negotiation, so it goes out as-is only to
      // the prompt's client (the hub drops it for sockets that did not negotiate).
      const r = this.ledger.open.get(pid);
      if (r && (type === 1 || type === 3 || type === 4)) this.o.sink.toClient(to(r), buf, { broadcastIfNoClient: true });
      return;
    }
    let msg: { type?: string; data?: Record<string, unknown> };
    try {
      msg = JSON.parse(buf.toString("utf8"));
    } catch {
      return;
    }
    const type = msg.type ?? "";
    const data = msg.data ?? {};
    const pid = typeof data.prompt_id === "string" ? data.prompt_id : undefined;
    if (type === "status" || type === "feature_flags" || type === "logs") return; // the gateway's own status is studio-wide
    if (!pid) return;
    const slot = w.slots.get(pid);
    const r = this.ledger.open.get(pid);
    if (!slot || !r || r.attempt !== slot.attempt || w.takenBack.has(pid)) return;
    const now = this.now();
    slot.lastEventAt = now;
    w.lastSignAt = now;
    if (type === "execution_start") {
      slot.started = true;
      w.runningId = pid;
      this.startedAt.delete(pid); // a new run (attempt) of this prompt
      this.runStarted(r, now);
    }
    // The ending is told once, from what was written (see end()): never a success the store then refuses.
    if (TERMINAL.has(type)) return;
    if (type === "executed") {
      const copied = await this.copyFiles(w, pid, fileRefs(data.output), slot);
      const out = { ...data, output: rewriteOutput(pid, data.output, (f) => copied.has(storeKey(pid, f))) };
      this.o.sink.toClient(to(r), j(type, out));
      return;
    }
    if (type === "executing" && data.node === null) {
      // The pod is done with it: its place in the pod's queue is free now; reading its history and files
      // (and writing the ending) go on meanwhile, so the next prompt need not wait for them.
      slot.finishing = true;
      this.o.onPodLoad?.(w.key, w.load);
      this.kick();
      await this.completeFromPod(w, slot);
      return;
    }
    const broadcast = type === "progress" || type === "progress_state";
    this.o.sink.toClient(to(r), j(type, data), { broadcastIfNoClient: broadcast });
  }

  private runStarted(r: PromptMeta, now: number): void {
    if (this.startedAt.has(r.id)) return;
    this.startedAt.set(r.id, now);
    this.o.observer?.started(r, now);
  }

  /**
   * Copies this run's files from the pod into the store, each tried `copyAttempts` times; returns the keys
   * that are in the store. A file the pod refuses or the store will not take is named in slot.copyFailures
   * (the ending says so); an unreachable pod throws (its prompts follow the lost-pod path).
   */
  private async copyFiles(w: Worker, pid: string, refs: FileRef[], slot: Slot): Promise<Set<string>> {
    const owner = this.ledger.open.get(pid)?.owner ?? "default";
    const ok = new Set<string>();
    const attempts = this.o.copyAttempts ?? 3;
    for (const ref of refs) {
      const key = storeKey(pid, ref);
      if (slot.copied?.has(key)) {
        ok.add(key);
        continue;
      }
      if (slot.copyFailures?.some((f) => f.startsWith(`${ref.filename}:`))) continue;
      let last = "";
      let unreachable = false;
      for (let i = 0; i < attempts; i++) {
        try {
          const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type });
          let res: Awaited<ReturnType<typeof w.client.request>>;
          try {
            res = await w.client.request("GET", `/view?${q}`, undefined, 120_000);
            unreachable = false;
          } catch (err: unknown) {
            unreachable = true;
            throw err;
          }
          if (res.status !== 200) throw new Error(`pod /view answered ${res.status}`);
          const target = ref.type === "temp" ? this.o.files.temp : this.o.files.output;
          await target.put(`${ownerPrefix(owner)}/${key.split("/").slice(1).join("/")}`, res.body);
          (slot.copied ??= new Set()).add(key);
          ok.add(key);
          last = "";
          break;
        } catch (err: unknown) {
          last = (err as Error).message;
          if (i + 1 < attempts) await sleep(250 * 2 ** i);
        }
      }
      // A pod that does not answer at all is gone or restarting, not refusing one file: the run is judged
      // like any lost pod's (reconcile; taken back and run again if the pod never comes back with it).
      if (last && unreachable) throw new Error(`pod ${w.key} unreachable while copying ${ref.filename}: ${last}`);
      if (last) {
        this.o.log.warn({ promptId: pid, pod: w.key, file: ref.filename, err: last }, "output not copied from the pod");
        (slot.copyFailures ??= []).push(`${ref.filename}: ${last}`);
      }
    }
    return ok;
  }

  /** Completion: the pod's history entry (outputs copied first), written once, then told. */
  private async completeFromPod(w: Worker, slot: Slot): Promise<void> {
    const pid = slot.id;
    const r = this.ledger.open.get(pid);
    if (!r) return;
    let entry: Record<string, unknown> | undefined;
    for (let i = 0; i < 5 && !entry; i++) {
      const h = await w.client.json<Record<string, Record<string, unknown>>>("GET", `/history/${encodeURIComponent(pid)}`);
      entry = h.json?.[pid];
      if (!entry) await sleep(100);
    }
    if (!entry) throw new Error(`pod ${w.key} reported ${pid} finished but has no history for it`);
    const outputs = (entry.outputs ?? {}) as Record<string, unknown>;
    for (const o of Object.values(outputs)) await this.copyFiles(w, pid, fileRefs(o), slot);
    let status = (entry.status ?? { status_str: "success", completed: true, messages: [] }) as HistoryEntry["status"];
    if (slot.copyFailures?.length) {
      // The run succeeded on the pod but files are not kept: the history says which, once, as an error.
      const reason = `outputs not saved: ${slot.copyFailures.join("; ")}`;
      const err = { prompt_id: pid, node_id: null, node_type: null, executed: [], exception_message: reason, exception_type: "GatewayError", traceback: [], current_inputs: {}, current_outputs: {}, timestamp: this.now() };
      status = { status_str: "error", completed: false, messages: [...status.messages.filter(([t]) => !TERMINAL.has(t)), ["execution_error", err]] };
    }
    const kept = (f: FileRef) => slot.copied?.has(storeKey(pid, f)) ?? false;
    const history: HistoryEntry = { prompt: [], outputs: rewriteOutputs(pid, outputs, kept), status, meta: (entry.meta ?? {}) as Record<string, unknown> };
    w.release(pid);
    this.o.onPodLoad?.(w.key, w.load);
    await this.end(r, slot.attempt, history);
  }

  /** Writes the ending (conditional), then tells the client — its terminal event as written, then `executing null`. */
  private async end(r: PromptMeta, attempt: number, history: HistoryEntry): Promise<void> {
    const res = await this.ledger.complete(r.id, attempt, history);
    if (!res.ok) {
      this.o.log.info({ promptId: r.id, attempt }, "completion refused by the store (already completed or moved on)");
      this.kick();
      return;
    }
    const startedAt = this.startedAt.get(r.id);
    this.startedAt.delete(r.id);
    this.orphanSince.delete(r.id);
    this.o.observer?.finished(r, history, startedAt, this.now());
    const terminal = [...history.status.messages].reverse().find(([t]) => TERMINAL.has(t));
    const told = terminal ?? (history.status.status_str === "success" ? ["execution_success", { prompt_id: r.id, timestamp: this.now() }] : undefined);
    if (told) this.o.sink.toClient(to(r), j(told[0] as string, told[1]), { broadcastIfNoClient: told[0] === "execution_interrupted" });
    this.o.sink.queueChanged(this.ledger.open.size);
    this.o.sink.toClient(to(r), j("executing", { node: null, prompt_id: r.id }));
    this.kick();
  }

  /** After a (re)connect or as the periodic fallback: what does the pod say about our prompts? */
  private async reconcile(w: Worker): Promise<void> {
    // Only prompts the pod had accepted before /queue is asked: one still being submitted is not "lost".
    const judged = [...w.slots.values()].filter((s) => s.submitted);
    if (judged.length === 0) return;
    let q: { queue_running: unknown[][]; queue_pending: unknown[][] };
    try {
      q = (await w.client.json<typeof q>("GET", "/queue")).json;
    } catch {
      return;
    }
    const running = new Set(q.queue_running.map((i) => i[1] as string));
    const onPod = new Set([...running, ...q.queue_pending.map((i) => i[1] as string)]);
    for (const s of judged) {
      if (w.slots.get(s.id) !== s) continue;
      if (onPod.has(s.id)) {
        s.adopted = false;
        if (running.has(s.id) && !s.started) {
          s.started = true;
          w.runningId = s.id;
          const r = this.ledger.open.get(s.id);
          if (r) this.runStarted(r, this.now());
        }
        continue;
      }
      const h = await w.client.json<Record<string, unknown>>("GET", `/history/${encodeURIComponent(s.id)}`).catch(() => undefined);
      if (h?.json && (h.json as Record<string, unknown>)[s.id]) await this.completeFromPod(w, s);
      else await this.takeBack(w, s, `pod ${w.key} lost the prompt`, true);
    }
  }

  /**
   * A pod holding prompts that shows no sign of progress for the stall time is hung (its socket may still
   * be open): both its prompts are taken back — the running one interrupted and counted, the buffered one
   * off its queue, not counted — and it gets no work until a probe finds it idle.
   */
  private async hung(w: Worker): Promise<void> {
    if (w.suspect || w.slots.size === 0 || this.now() - w.lastSignAt <= this.o.stallMs) return;
    const reason = `no progress from pod ${w.key} for ${Math.round(this.o.stallMs / 1000)} s`;
    w.suspect = reason;
    this.o.log.warn({ pod: w.key, prompts: [...w.slots.keys()] }, "pod hung: its prompts run elsewhere, it gets no work until it answers again");
    for (const s of [...w.slots.values()]) {
      if (s.finishing) continue; // the pod finished it: its ending is read by the reconcile, not run again
      w.takenBack.add(s.id);
      // The buffered one counts no attempt only when the pod's queue shows it never started.
      const unstarted = !s.started && s.submitted && (await this.removeFromPod(w, s));
      if (!unstarted) void w.client.request("POST", "/interrupt", { prompt_id: s.id }, 3000).catch(() => undefined);
      w.takenBack.add(s.id);
      await this.takeBack(w, s, reason, !unstarted);
    }
  }

  /** A suspect pod is back when it runs nothing we did not give it: an idle queue. */
  private async probe(w: Worker): Promise<void> {
    if (!w.suspect) return;
    try {
      const q = (await w.client.json<{ queue_running: unknown[][]; queue_pending: unknown[][] }>("GET", "/queue")).json;
      if (q.queue_running.length === 0 && q.queue_pending.length === 0) {
        this.o.log.info({ pod: w.key }, "pod answers again: back in rotation");
        w.suspect = undefined;
        w.lastSignAt = this.now();
        this.kick();
      }
    } catch {
      /* still away */
    }
  }

  // ---- periodic checks ----------------------------------------------------------------------------------

  private observe(now: number): void {
    if (!this.o.observer) return;
    let oldest: number | undefined;
    for (const r of this.ledger.open.values()) if (r.state === "queued" && (oldest === undefined || r.createdAt < oldest)) oldest = r.createdAt;
    this.o.observer.queueState({ anyReady: [...this.workers.values()].some((w) => w.ready), oldestQueuedAt: oldest, open: this.ledger.open.size }, now);
  }

  /** A prompt left on a pod that is gone (not listed) runs again elsewhere after `orphanMs` (counts an attempt). */
  private async reclaimOrphans(now: number): Promise<void> {
    for (const r of [...this.ledger.open.values()]) {
      if (r.state !== "dispatched" || this.workerOf(r.id) || this.claiming.has(r.id)) {
        this.orphanSince.delete(r.id);
        continue;
      }
      const since = this.orphanSince.get(r.id);
      if (since === undefined) {
        this.orphanSince.set(r.id, now);
        continue;
      }
      if (now - since < this.o.orphanMs) continue;
      this.orphanSince.delete(r.id);
      const reason = `pod ${r.pod ?? "?"} is gone`;
      if (r.attempt >= this.o.maxAttempts) {
        await this.end(r, r.attempt, this.ledger.errorEntry(r.id, `prompt failed after ${r.attempt} attempts; last: ${reason}`));
        continue;
      }
      if ((await this.ledger.requeue(r.id, r.attempt, reason, true)).ok) this.o.log.info({ promptId: r.id, reason }, "orphaned prompt queued again");
      this.kick();
    }
  }

  private lastInventoryAt = 0;

  /** Dispatch by model: the inputs that name models, each queued prompt's needs, the nodes' inventories, hold renewals. */
  private async modelUpkeep(now: number): Promise<void> {
    const router = this.o.models?.router;
    if (!router) return;
    await router.refreshInputs().catch(() => undefined);
    router.prune(new Set(this.ledger.open.keys()), new Set(this.workers.keys()));
    // Prompts loaded at take-over or from a sweep have no body in memory: read those (batched) to know their needs.
    const unknown: string[] = [];
    for (const r of this.ledger.open.values()) {
      if (r.state !== "queued" || router.needsOf(r.id)) continue;
      const body = this.ledger.bodies.get(r.id);
      if (body) router.learn(r.id, body.prompt);
      else if (unknown.length < 100) unknown.push(r.id);
    }
    if (unknown.length) for (const [id, b] of await this.ledger.bodiesOf(unknown).catch(() => new Map<string, PromptBody>())) router.learn(id, b.prompt);
    if (now - this.lastInventoryAt >= 2000) {
      this.lastInventoryAt = now;
      router.pollInventories(this.workers.values(), now);
    }
    this.prefetch(now);
    for (const w of this.workers.values()) {
      for (const s of w.slots.values()) {
        if (!w.agent || !s.held || now - s.held.at < HOLD_RENEW_MS) continue;
        s.held.at = now;
        void w.agent.hold(s.id, s.held.files, HOLD_TTL_SECONDS).catch(() => undefined);
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.ticking || !this.leading) return;
    this.ticking = true;
    try {
      const now = this.now();
      for (const w of this.workers.values()) {
        // One periodic check per pod at a time: a pod slower than the tick never grows a backlog of them.
        if (!w.connected || this.checking.has(w)) continue;
        const check = w.suspect ? () => this.probe(w) : w.slots.size > 0 && now - w.lastSignAt > this.o.stallMs ? () => this.hung(w) : w.slots.size > 0 ? () => this.reconcile(w) : undefined;
        if (!check) continue;
        this.checking.add(w);
        // Fallback for missed events: a pod with prompts is asked every tick.
        this.serial(w, () => check().finally(() => this.checking.delete(w)));
      }
      await this.reclaimOrphans(now);
      if (now - this.lastSweepAt >= (this.o.sweepMs ?? 5000)) {
        this.lastSweepAt = now;
        // Prompts other replicas accepted whose notification was lost; a minute of overlap covers clock skew.
        const fresh = await this.ledger.sweep(this.sweepFrom).catch(() => []);
        this.sweepFrom = Math.max(this.sweepFrom, now - 60_000);
        if (fresh.length) {
          this.o.sink.queueChanged(this.ledger.open.size);
          this.kick();
        }
      }
      const owners = new Set([...this.ledger.open.values()].map((r) => r.owner));
      const keys = new Set([...this.ledger.open.values()].map(clientKey));
      for (const c of [...this.lastServed.users.keys()]) if (!owners.has(c)) this.lastServed.users.delete(c);
      for (const c of [...this.lastServed.clients.keys()]) if (!keys.has(c)) this.lastServed.clients.delete(c);
      this.observe(now);
      await this.modelUpkeep(now);
      if (![...this.workers.values()].some((w) => w.ready)) {
        for (const r of [...this.ledger.open.values()]) {
          if (r.state === "queued" && now - r.createdAt > this.o.startupDeadlineMs && this.lastPodReadyAt < r.createdAt) {
            await this.end(r, r.attempt, this.ledger.errorEntry(r.id, `no ComfyUI pod became ready within ${Math.round(this.o.startupDeadlineMs / 1000)} s`));
          }
        }
      }
      this.kick();
    } catch (err: unknown) {
      this.o.log.error({ err }, "dispatcher tick failed");
    } finally {
      this.ticking = false;
    }
  }
}

/**
 * ComfyUI's text frame on a node (server.py `send_progress_text` @ a125cd84: BinaryEventTypes.TEXT = 3, then the
 * node id's length as a big-endian u32, the node id and the UTF-8 text): the frontend shows it on that node.
 */
export function progressText(nodeId: string, text: string): Buffer {
  const node = Buffer.from(nodeId, "utf8");
  const head = Buffer.alloc(8);
  head.writeUInt32BE(3, 0);
  head.writeUInt32BE(node.length, 4);
  return Buffer.concat([head, node, Buffer.from(text, "utf8")]);
}

function formatBytes(b: number): string {
  if (b >= 1e9) return `${(b / 1e9).toFixed(1)} GB`;
  if (b >= 1e6) return `${(b / 1e6).toFixed(1)} MB`;
  return `${b} bytes`;
}

/** Tells whoever asked to delete a prompt while it was being placed how that ended (once). */
function settleCancel(slot: Slot, cancelled: boolean): void {
  const waiters = slot.cancelWaiters ?? [];
  slot.cancelWaiters = undefined;
  for (const w of waiters) w(cancelled);
}

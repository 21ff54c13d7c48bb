import type { Logger } from "pino";
import type WebSocket from "ws";
import type { HistoryEntry, PromptRecord, Store } from "../store/types";
import type { ObjectStore } from "../store/objects";
import { fileRefs, rewriteOutput, rewriteOutputs, storeKey } from "../protocol/outputs";
import { Worker, type Slot, type WorkerEvents } from "./worker";
import { pickNext } from "./scheduler";

/** Where client-facing events go (the WebSocket hub). */
export interface EventSink {
  toClient(clientId: string | null, message: string | Buffer, opts?: { broadcastIfNoClient?: boolean }): void;
  queueChanged(remaining: number): void;
  runningFor(clientId: string): { nodeId: string } | undefined;
}

export interface PodInfo { key: string; url: string; ready: boolean; terminating: boolean }

/** What the leader's telemetry hears from the dispatcher (metrics and cold starts); every call is fire-and-forget. */
export interface DispatchObserver {
  /** Each second and on every new prompt: is any pod ready, since when does the oldest prompt wait, how many are open. */
  queueState(s: { anyReady: boolean; oldestQueuedAt: number | undefined; open: number }, now: number): void;
  /** A prompt's run began on a pod (execution_start, or found running there). */
  started(r: PromptRecord, now: number): void;
  /** A prompt's completion was written; `startedAt` is the start of the run that ended it, when it ran. */
  finished(r: PromptRecord, history: HistoryEntry, startedAt: number | undefined, now: number): void;
}

export interface DispatcherOptions {
  store: Store;
  /** outputs, temp previews and inputs, by their type names. */
  files: { output: ObjectStore; temp: ObjectStore; input: ObjectStore };
  sink: EventSink;
  log: Logger;
  maxAttempts: number;
  startupDeadlineMs: number;
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
  now?: () => number;
}

const j = (type: string, data: unknown) => JSON.stringify({ type, data });

/**
 * The leader's engine: mirrors the open prompts of the store, places them on ready pods (one running +
 * one buffered each, fair across clients), relays each pod's events to the submitting client, copies
 * outputs into the store and completes each prompt exactly once (conditional write on its attempt).
 */
export class Dispatcher implements WorkerEvents {
  readonly open = new Map<string, PromptRecord>();
  readonly workers = new Map<string, Worker>();
  private readonly chains = new Map<Worker, Promise<void>>();
  private readonly lastServed = new Map<string, number>();
  /** Dispatched prompts no worker holds (their pod is not among the pods), since when. */
  private readonly orphanSince = new Map<string, number>();
  private readonly o: DispatcherOptions;
  private timer: NodeJS.Timeout | undefined;
  private kicking = false;
  private kickAgain = false;
  private stopped = false;
  private lastPodReadyAt = 0;
  /** When the current run of each open prompt began (for its run time). */
  private readonly startedAt = new Map<string, number>();
  private readonly now: () => number;

  constructor(opts: DispatcherOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  async start(): Promise<void> {
    for (const r of await this.o.store.listOpen()) this.open.set(r.id, r);
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
    return this.open.size;
  }

  /** The pod set from the pod source (EndpointSlices or --comfyui URLs). */
  setPods(pods: PodInfo[]): void {
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
        w = new Worker(p.key, p.url, this, this.o.log);
        this.workers.set(p.key, w);
        this.adopt(w);
        w.start();
      }
      if (p.terminating && !w.terminating) {
        w.terminating = true;
        void this.unbuffer(w);
      }
    }
    for (const w of [...this.workers.values()]) if (!seen.has(w.key)) this.removeWorker(w, "pod removed");
  }

  /**
   * Prompts the store says run on this pod but no worker of this process placed (a gateway restart or
   * hand-over): the pod's socket, with the same per-pod client id, and the reconcile on connect take them over.
   */
  private adopt(w: Worker): void {
    for (const r of this.open.values()) {
      if (r.state !== "dispatched" || r.pod !== w.key || this.workerOf(r.id)) continue;
      w.slots.set(r.id, { id: r.id, attempt: r.attempt, started: false, lastEventAt: this.now(), submitted: true });
      this.orphanSince.delete(r.id);
    }
    if (w.slots.size) this.o.onPodLoad?.(w.key, w.slots.size);
  }

  private removeWorker(w: Worker, reason: string): void {
    this.workers.delete(w.key);
    void w.close();
    for (const s of [...w.slots.values()]) void this.takeBack(w, s, reason, true);
  }

  /** A new prompt was stored: place it. */
  submitted(r: PromptRecord): void {
    this.open.set(r.id, r);
    this.o.sink.queueChanged(this.open.size);
    this.observe(this.now());
    this.kick();
  }

  private observe(now: number): void {
    if (!this.o.observer) return;
    let oldest: number | undefined;
    for (const r of this.open.values()) if (r.state === "queued" && (oldest === undefined || r.createdAt < oldest)) oldest = r.createdAt;
    this.o.observer.queueState({ anyReady: [...this.workers.values()].some((w) => w.ready), oldestQueuedAt: oldest, open: this.open.size }, now);
  }

  private runStarted(r: PromptRecord, now: number): void {
    if (this.startedAt.has(r.id)) return;
    this.startedAt.set(r.id, now);
    this.o.observer?.started(r, now);
  }

  deleted(ids: string[]): void {
    for (const id of ids) {
      this.open.delete(id);
      this.startedAt.delete(id);
    }
    if (ids.length) this.o.sink.queueChanged(this.open.size);
  }

  workerOf(promptId: string): Worker | undefined {
    for (const w of this.workers.values()) if (w.slots.has(promptId)) return w;
    return undefined;
  }

  // ---- placement ---------------------------------------------------------------------------------

  kick(): void {
    if (this.stopped) return;
    if (this.kicking) {
      this.kickAgain = true;
      return;
    }
    this.kicking = true;
    void this.place().finally(() => {
      this.kicking = false;
      if (this.kickAgain) {
        this.kickAgain = false;
        this.kick();
      }
    });
  }

  private async place(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      // Prefer an empty pod so a batch spreads over every GPU before any pod gets a buffered prompt.
      const candidates = [...this.workers.values()].filter((w) => w.free > 0).sort((a, b) => a.slots.size - b.slots.size);
      const w = candidates[0];
      if (!w) return;
      const queued = [...this.open.values()].filter((r) => r.state === "queued");
      const running = new Map<string, number>();
      for (const r of this.open.values()) if (r.state === "dispatched") running.set(r.clientId ?? "", (running.get(r.clientId ?? "") ?? 0) + 1);
      const next = pickNext(queued, running, this.lastServed);
      if (!next) return;
      await this.dispatch(w, next);
    }
  }

  private async dispatch(w: Worker, r: PromptRecord): Promise<void> {
    const now = this.now();
    let claimed = false;
    try {
      claimed = await this.o.store.claim(r.id, r.attempt, w.key, now);
    } catch (err: unknown) {
      this.o.log.error({ err, promptId: r.id }, "store claim failed");
      await new Promise((res) => setTimeout(res, 200));
      return;
    }
    if (!claimed) {
      // Another process moved it (hand-over): take the store's word.
      const fresh = await this.o.store.get(r.id).catch(() => undefined);
      if (!fresh || fresh.state === "done") this.open.delete(r.id);
      else this.open.set(r.id, fresh);
      return;
    }
    Object.assign(r, { state: "dispatched", attempt: r.attempt + 1, pod: w.key, dispatchedAt: now });
    this.lastServed.set(r.clientId ?? "", now);
    const slot: Slot = { id: r.id, attempt: r.attempt, started: false, lastEventAt: now, submitted: false };
    w.slots.set(r.id, slot);
    this.o.onPodLoad?.(w.key, w.slots.size);
    const log = this.o.log.child({ promptId: r.id, pod: w.key, attempt: r.attempt });
    try {
      if (this.o.pushInputs) await this.pushInputs(w, r);
      const extra: Record<string, unknown> = { ...r.extraData, client_id: w.clientId };
      const body: Record<string, unknown> = { prompt: r.prompt, client_id: w.clientId, prompt_id: r.id, extra_data: extra };
      if (r.extraData.__partial_execution_targets) body.partial_execution_targets = r.extraData.__partial_execution_targets;
      delete extra.__partial_execution_targets;
      const res = await w.client.json<Record<string, unknown>>("POST", "/prompt", body);
      if (res.status !== 200) {
        log.info({ status: res.status }, "pod refused the prompt");
        w.slots.delete(r.id);
        await this.finish(r, slot.attempt, this.errorEntry(r, `ComfyUI pod refused the prompt: ${JSON.stringify(res.json)}`), undefined);
        return;
      }
      slot.submitted = true;
      log.debug("dispatched");
    } catch (err: unknown) {
      log.warn({ err: (err as Error).message }, "dispatch failed; prompt goes back to the queue");
      await this.takeBack(w, slot, `dispatch to ${w.key} failed: ${(err as Error).message}`, false);
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
  private async takeBack(w: Worker, slot: { id: string; attempt: number }, reason: string, countAttempt: boolean): Promise<void> {
    w.slots.delete(slot.id);
    if (w.runningId === slot.id) w.runningId = undefined;
    this.o.onPodLoad?.(w.key, w.slots.size);
    const r = this.open.get(slot.id);
    if (!r || r.attempt !== slot.attempt || r.state !== "dispatched") return;
    if (countAttempt && r.attempt >= this.o.maxAttempts) {
      await this.finish(r, slot.attempt, this.errorEntry(r, `prompt failed after ${r.attempt} attempts; last: ${reason}`), undefined);
      return;
    }
    const ok = await this.o.store.requeue(r.id, slot.attempt, reason, countAttempt).catch((err: unknown) => {
      this.o.log.error({ err, promptId: r.id }, "requeue failed");
      return false;
    });
    if (ok) {
      Object.assign(r, { state: "queued", lastError: reason, attempt: countAttempt ? r.attempt : r.attempt - 1 });
      delete r.pod;
      this.startedAt.delete(r.id);
      this.o.log.info({ promptId: r.id, pod: w.key, reason }, "prompt queued again");
    } else await this.resync(r.id);
    this.kick();
  }

  /**
   * A conditional write was refused (or failed): this process's copy of the prompt is not the
   * store's. Take the store's word, as dispatch does, so a prompt can never sit "dispatched" here
   * while nothing holds it: done leaves the mirror, anything else replaces it (a queued one is placed).
   */
  private async resync(id: string): Promise<void> {
    const fresh = await this.o.store.get(id).catch(() => undefined);
    if (!fresh) return; // unreachable store: the orphan check tries again
    this.startedAt.delete(id);
    if (fresh.state === "done") this.open.delete(id);
    else if (this.open.has(id)) this.open.set(id, fresh);
    this.o.log.info({ promptId: id, state: fresh.state, attempt: fresh.attempt }, "prompt re-read from the store after a refused write");
  }

  /** Terminating pod: its buffered prompt goes back to the queue; the running one may finish. */
  private async unbuffer(w: Worker): Promise<void> {
    for (const s of [...w.slots.values()]) {
      if (s.started) continue;
      w.takenBack.add(s.id);
      try {
        await w.client.request("POST", "/queue", { delete: [s.id] }, 3000);
        const q = await w.client.json<{ queue_running: unknown[][] }>("GET", "/queue");
        if (q.json.queue_running.some((i) => i[1] === s.id)) {
          w.takenBack.delete(s.id);
          continue;
        }
      } catch {
        // unreachable: the pod is going anyway
      }
      await this.takeBack(w, s, `pod ${w.key} is terminating`, false);
    }
  }

  /** Explicit drain (POST /gateway/drain): stop dispatching, take the buffered prompt back. */
  async drain(podKey: string): Promise<string[]> {
    const w = this.workers.get(podKey);
    if (!w) return [];
    w.terminating = true;
    await this.unbuffer(w);
    return [...w.slots.keys()];
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

  /** Per-pod event order is kept by running each pod's handlers one after the other. */
  private serial(w: Worker, fn: () => Promise<void>): void {
    const prev = this.chains.get(w) ?? Promise.resolve();
    const next = prev.then(fn).catch((err: unknown) => this.o.log.error({ err, pod: w.key }, "pod event handling failed"));
    this.chains.set(w, next);
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
      // Only types clients understand (protocol §3.2); type 4 needs negotiation, so it goes out as-is only to
      // the prompt's client (the hub drops it for sockets that did not negotiate).
      if (pid && (type === 1 || type === 3 || type === 4)) this.o.sink.toClient(this.open.get(pid)?.clientId ?? null, buf, { broadcastIfNoClient: true });
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
    const r = this.open.get(pid);
    if (!slot || !r || r.attempt !== slot.attempt) return;
    slot.lastEventAt = this.now();
    if (type === "execution_start") {
      slot.started = true;
      w.runningId = pid;
      this.startedAt.delete(pid); // a new run (attempt) of this prompt
      this.runStarted(r, this.now());
    }
    if (w.takenBack.has(pid) && type === "execution_interrupted") return;
    if (type === "executed") {
      await this.copyFiles(w, pid, fileRefs(data.output), slot);
      const out = { ...data, output: rewriteOutput(pid, data.output) };
      this.o.sink.toClient(r.clientId, j(type, out));
      return;
    }
    if (type === "executing" && data.node === null) {
      await this.completeFromPod(w, slot);
      return;
    }
    const broadcast = type === "progress" || type === "progress_state" || type === "execution_interrupted";
    this.o.sink.toClient(r.clientId, j(type, data), { broadcastIfNoClient: broadcast });
  }

  private async copyFiles(w: Worker, pid: string, refs: { filename: string; subfolder: string; type: string }[], slot: Slot): Promise<void> {
    for (const ref of refs) {
      const key = storeKey(pid, ref);
      if (slot.copied?.has(key)) continue;
      const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder ?? "", type: ref.type });
      const res = await w.client.request("GET", `/view?${q}`, undefined, 30000);
      if (res.status !== 200) throw new Error(`pod /view ${ref.filename} answered ${res.status}`);
      const target = ref.type === "temp" ? this.o.files.temp : this.o.files.output;
      await target.put(key.split("/").slice(1).join("/"), res.body);
      (slot.copied ??= new Set()).add(key);
    }
  }

  /** Completion: the pod's history entry (outputs copied first), written once, then `executing null`. */
  private async completeFromPod(w: Worker, slot: Slot): Promise<void> {
    const pid = slot.id;
    const r = this.open.get(pid);
    if (!r) return;
    let entry: Record<string, unknown> | undefined;
    for (let i = 0; i < 5 && !entry; i++) {
      const h = await w.client.json<Record<string, Record<string, unknown>>>("GET", `/history/${encodeURIComponent(pid)}`);
      entry = h.json?.[pid];
      if (!entry) await new Promise((res) => setTimeout(res, 100));
    }
    if (!entry) throw new Error(`pod ${w.key} reported ${pid} finished but has no history for it`);
    const outputs = (entry.outputs ?? {}) as Record<string, unknown>;
    for (const o of Object.values(outputs)) await this.copyFiles(w, pid, fileRefs(o), slot);
    const status = (entry.status ?? { status_str: "success", completed: true, messages: [] }) as HistoryEntry["status"];
    const history: HistoryEntry = {
      prompt: [r.number, r.id, r.prompt, r.extraData, r.outputs],
      outputs: rewriteOutputs(pid, outputs),
      status,
      meta: (entry.meta ?? {}) as Record<string, unknown>,
    };
    w.slots.delete(pid);
    if (w.runningId === pid) w.runningId = undefined;
    this.o.onPodLoad?.(w.key, w.slots.size);
    await this.finish(r, slot.attempt, history, undefined);
  }

  private errorEntry(r: PromptRecord, reason: string): HistoryEntry {
    const ts = this.now();
    const err = { prompt_id: r.id, node_id: null, node_type: null, executed: [], exception_message: reason, exception_type: "GatewayError", traceback: [], current_inputs: {}, current_outputs: {}, timestamp: ts };
    return { prompt: [r.number, r.id, r.prompt, r.extraData, r.outputs], outputs: {}, status: { status_str: "error", completed: false, messages: [["execution_error", err]] }, meta: {} };
  }

  /** Writes the completion (conditional), then tells the client, then frees the queue slot. */
  private async finish(r: PromptRecord, attempt: number, history: HistoryEntry, _w: Worker | undefined): Promise<void> {
    const ok = await this.o.store.complete(r.id, attempt, history, this.now(), this.o.historyTtlSeconds);
    if (!ok) {
      this.o.log.info({ promptId: r.id, attempt }, "completion refused by the store (already completed or moved on)");
      const fresh = await this.o.store.get(r.id).catch(() => undefined);
      if (!fresh || fresh.state === "done") this.open.delete(r.id);
      return;
    }
    this.open.delete(r.id);
    const startedAt = this.startedAt.get(r.id);
    this.startedAt.delete(r.id);
    this.o.observer?.finished(r, history, startedAt, this.now());
    if (history.status.status_str === "error" && history.status.messages.some(([t, d]) => t === "execution_error" && (d as { exception_type?: string }).exception_type === "GatewayError")) {
      const [, d] = history.status.messages.find(([t]) => t === "execution_error")!;
      this.o.sink.toClient(r.clientId, j("execution_error", d));
    }
    this.o.sink.queueChanged(this.open.size);
    this.o.sink.toClient(r.clientId, j("executing", { node: null, prompt_id: r.id }));
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
    const onPod = new Set([...q.queue_running, ...q.queue_pending].map((i) => i[1] as string));
    for (const s of judged) {
      if (w.slots.get(s.id) !== s) continue;
      if (onPod.has(s.id)) {
        if (q.queue_running.some((i) => i[1] === s.id)) {
          s.started = true;
          w.runningId = s.id;
          const r = this.open.get(s.id);
          if (r) this.runStarted(r, this.now());
        }
        continue;
      }
      const h = await w.client.json<Record<string, unknown>>("GET", `/history/${encodeURIComponent(s.id)}`).catch(() => undefined);
      if (h?.json && (h.json as Record<string, unknown>)[s.id]) await this.completeFromPod(w, s);
      else await this.takeBack(w, s, `pod ${w.key} lost the prompt`, true);
    }
  }

  // ---- periodic checks ----------------------------------------------------------------------------------

  /** A prompt left on a pod that is gone (not listed) runs again elsewhere after `orphanMs` (counts an attempt). */
  private async reclaimOrphans(now: number): Promise<void> {
    for (const r of [...this.open.values()]) {
      if (r.state !== "dispatched" || this.workerOf(r.id)) {
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
        await this.finish(r, r.attempt, this.errorEntry(r, `prompt failed after ${r.attempt} attempts; last: ${reason}`), undefined).catch((err: unknown) =>
          this.o.log.error({ err, promptId: r.id }, "failing an orphaned prompt failed"));
        continue;
      }
      const ok = await this.o.store.requeue(r.id, r.attempt, reason, true).catch(() => false);
      if (ok) {
        Object.assign(r, { state: "queued", lastError: reason });
        delete r.pod;
        this.startedAt.delete(r.id);
        this.o.log.info({ promptId: r.id, reason }, "orphaned prompt queued again");
      } else await this.resync(r.id);
      this.kick();
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const now = this.now();
    for (const w of this.workers.values()) {
      if (!w.connected) continue;
      for (const s of w.slots.values()) {
        if (s.started && now - s.lastEventAt > this.o.stallMs) {
          w.takenBack.add(s.id);
          void w.client.request("POST", "/interrupt", { prompt_id: s.id }, 3000).catch(() => undefined);
          this.serial(w, () => this.takeBack(w, s, `no progress from pod ${w.key} for ${Math.round(this.o.stallMs / 1000)} s`, true));
        }
      }
      // Fallback for missed events: a pod with prompts is asked every tick.
      if (w.slots.size > 0) this.serial(w, () => this.reconcile(w));
    }
    await this.reclaimOrphans(now);
    this.observe(now);
    const anyReady = [...this.workers.values()].some((w) => w.ready);
    if (!anyReady) {
      for (const r of [...this.open.values()]) {
        if (r.state === "queued" && now - r.createdAt > this.o.startupDeadlineMs && this.lastPodReadyAt < r.createdAt) {
          await this.finish(r, r.attempt, this.errorEntry(r, `no ComfyUI pod became ready within ${Math.round(this.o.startupDeadlineMs / 1000)} s`), undefined).catch((err: unknown) =>
            this.o.log.error({ err, promptId: r.id }, "failing a prompt past the startup deadline failed"));
        }
      }
    }
  }
}
